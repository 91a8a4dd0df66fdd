package injector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/agent/config"
)

// csiObject is one object in the Secrets Store CSI driver Azure provider's
// `objects` parameter, plus a per-object vault.
type csiObject struct {
	ObjectName           string `json:"objectName"`
	ObjectType           string `json:"objectType"`
	ObjectVersion        string `json:"objectVersion"`
	ObjectAlias          string `json:"objectAlias"`
	ObjectFormat         string `json:"objectFormat"`
	ObjectEncoding       string `json:"objectEncoding"`
	FilePermission       string `json:"filePermission"`
	ObjectVersionHistory int32  `json:"objectVersionHistory"`
	Vault                string `json:"vault"`
}

// parseObjects reads the objects annotation: a YAML list of objects, or the
// CSI provider's own shape, a map whose `array` holds one YAML string per object.
func (p *parser) parseObjects(v string, cloud config.Cloud) []config.File {
	var raw any
	if err := yaml.Unmarshal([]byte(v), &raw); err != nil {
		p.problems.add(AnnotationObjects, "not YAML: %v", err)
		return nil
	}
	var items []any
	switch r := raw.(type) {
	case []any:
		items = r
	case map[string]any:
		arr, ok := r["array"].([]any)
		if !ok || len(r) != 1 {
			p.problems.add(AnnotationObjects, "a map must have exactly one key, array, as in a SecretProviderClass; or write a plain YAML list of objects")
			return nil
		}
		items = arr
	case nil:
		p.problems.add(AnnotationObjects, "is empty; list objects like - {objectName: db-password, objectType: secret}")
		return nil
	default:
		p.problems.add(AnnotationObjects, "must be a YAML list of objects like - {objectName: db-password, objectType: secret}")
		return nil
	}
	var files []config.File
	for i, item := range items {
		field := fmt.Sprintf("%s[%d]", AnnotationObjects, i)
		var o csiObject
		err := decodeObject(item, &o)
		// The provider trims every string field.
		for _, s := range []*string{&o.ObjectName, &o.ObjectType, &o.ObjectVersion, &o.ObjectAlias, &o.ObjectFormat, &o.ObjectEncoding, &o.FilePermission, &o.Vault} {
			*s = strings.TrimSpace(*s)
		}
		if err != nil {
			p.problems.add(field, "%s; fields are objectName, objectType, objectVersion, objectAlias, objectFormat, objectEncoding, filePermission, vault", cleanYAMLError(err))
			continue
		}
		if f, ok := p.csiFile(field, o, cloud); ok {
			files = append(files, f)
		}
	}
	return files
}

// csiFile maps one CSI object to a file, keeping the CSI provider's meaning
// where kvinject has one and saying so where it differs.
func (p *parser) csiFile(field string, o csiObject, cloud config.Cloud) (config.File, bool) {
	if o.ObjectName != "" {
		field = fmt.Sprintf("%s (%s)", field, o.ObjectName)
	}
	before := len(p.problems)
	if !isObjectName(o.ObjectName) {
		p.problems.add(field, "objectName %q is not a valid object name (1-127 letters, digits and '-')", o.ObjectName)
	}
	// The provider matches objectType exactly; formats and encodings
	// case-insensitively (validateObjectFormat, validateObjectEncoding).
	var kind config.Kind
	switch o.ObjectType {
	case "secret":
		kind = config.KindSecret
	case "cert":
		// The provider writes the public certificate (GetCertificate's cer).
		kind = config.KindPublicCert
	case "key":
		kind = config.KindKey
	default:
		p.problems.add(field, "objectType %q is not secret, cert or key (lower case, as the CSI provider requires)", o.ObjectType)
	}
	version := o.ObjectVersion
	if version == "latest" {
		version = ""
	}
	if version != "" && !isVersion(version) {
		p.problems.add(field, "objectVersion %q is not a valid version (letters and digits)", version)
	}
	if o.ObjectVersionHistory > 1 {
		p.problems.add(field, "objectVersionHistory %d is not supported; remove it (kvinject writes one version, pinned with objectVersion or the latest)", o.ObjectVersionHistory)
	}
	f := config.File{Name: o.ObjectAlias, Mode: config.FileMode(p.fileMode)}
	if f.Name == "" {
		f.Name = o.ObjectName
	}
	format := strings.ToLower(o.ObjectFormat)
	switch format {
	case "", config.FormatPEM:
		if kind == config.KindSecret {
			// A certificate's backing secret (PKCS#12) becomes PEM: the
			// private key, then the chain leaf first; any other secret is
			// written as it is.
			f.Format = config.FormatPEM
		}
	case config.FormatPFX:
		if kind != config.KindSecret {
			p.problems.add(field, "objectFormat pfx needs objectType secret (the certificate's backing secret, base64 PKCS#12); add objectEncoding: base64 for a binary .pfx")
		}
	default:
		p.problems.add(field, "objectFormat %q is not pem or pfx", o.ObjectFormat)
	}
	switch enc := strings.ToLower(o.ObjectEncoding); enc {
	case "":
	case "utf-8", config.EncodingBase64, config.EncodingHex:
		if kind != config.KindSecret {
			p.problems.add(field, "objectEncoding %s applies to objectType secret only; remove it", o.ObjectEncoding)
		}
		if enc != "utf-8" {
			f.Encoding = enc
		}
	default:
		p.problems.add(field, "objectEncoding %q is not utf-8, base64 or hex", o.ObjectEncoding)
	}
	if o.FilePermission != "" {
		m, err := parseMode(o.FilePermission)
		if err != nil {
			p.problems.add(field, "filePermission: %v", err)
		} else {
			p.checkMode(field, m)
			f.Mode = config.FileMode(m)
		}
	}
	vault := p.vault
	if o.Vault != "" {
		u, err := vaultURL(o.Vault, cloud)
		if err != nil {
			p.problems.add(field, "%v", err)
		}
		vault = u
	} else if vault == "" {
		p.problems.add(field, "no vault for %q; set vault on the object, %s, or the webhook's default vault", o.ObjectName, AnnotationVault)
	}
	if err := checkFileName(f.Name); err != nil {
		p.problems.add(field, "objectAlias: %v", err)
	}
	if len(p.problems) > before || !p.claim(f.Name, field) {
		return config.File{}, false
	}
	f.Object = &config.Object{Vault: vault, Kind: kind, Name: o.ObjectName, Version: version}
	return f, true
}

// decodeObject decodes one item, a YAML string (the CSI shape) or an already
// parsed map, rejecting unknown fields.
func decodeObject(item any, o *csiObject) error {
	if s, ok := item.(string); ok {
		return yaml.UnmarshalStrict([]byte(s), o)
	}
	b, err := json.Marshal(item)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(o)
}

// cleanYAMLError drops the decoder's plumbing from an error message.
func cleanYAMLError(err error) string {
	s := err.Error()
	for _, prefix := range []string{"error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
		s = strings.TrimPrefix(s, prefix)
	}
	return s
}
