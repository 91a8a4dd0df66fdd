// Package render turns fetched Key Vault objects into file contents: secret
// values (decoded per encoding), certificates (private key and chain as PEM, or
// PKCS#12), public keys as PEM, and templates over all of them.
//
// Errors never include a secret value or any part of one: decoders' own
// errors, which may quote the offending input, are not wrapped.
package render

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/agent/keyvault"
	"github.com/kvinject/kvinject/agent/snapshot"
)

// DefaultMode is the mode of a file whose config gives none (0): readable by
// the owner and the group the app containers share, as the design specifies.
const DefaultMode = 0o440

// Object and JWK are what package keyvault fetched for one object.
type (
	Object = keyvault.Object
	JWK    = keyvault.JWK
)

// rendered is one object file and the parts templates can refer to.
type rendered struct {
	file config.File
	data []byte
	cert *Cert // KindCert
	// notAfter is the expiry of the leaf certificate the file holds: a
	// cert file, or a secret file read from a certificate's backing secret.
	notAfter time.Time
}

// Files renders every file of files within limits. objects holds the fetched
// object of each object file, by file name. The result is in the order of
// files, with the NotAfter of the leaf certificate of each object file that
// holds one (by file name): every cert file, and every secret file whose
// secret is a certificate's backing secret (its content type says PEM or
// PKCS#12, as Key Vault sets it).
func Files(files []config.File, objects map[string]Object, limits Limits) ([]snapshot.File, map[string]time.Time, error) {
	byName := make(map[string]*rendered, len(files))
	for _, f := range files {
		if f.Object == nil {
			continue
		}
		obj, ok := objects[f.Name]
		if !ok {
			return nil, nil, fmt.Errorf("file %s: %s %s was not fetched", f.Name, f.Object.Kind, f.Object.Name)
		}
		r, err := renderObject(f, obj)
		if err != nil {
			return nil, nil, fmt.Errorf("file %s: %s %s: %w", f.Name, f.Object.Kind, f.Object.Name, err)
		}
		byName[f.Name] = r
	}
	notAfter := map[string]time.Time{}
	for name, r := range byName {
		if !r.notAfter.IsZero() {
			notAfter[name] = r.notAfter
		}
	}
	out := make([]snapshot.File, 0, len(files))
	b, total := newBudget(limits), 0
	for _, f := range files {
		data := []byte(nil)
		if f.Object != nil {
			data = byName[f.Name].data
		} else {
			var err error
			if data, err = execTemplate(f, byName, b, limits.File); err != nil {
				return nil, nil, err
			}
		}
		if total += len(data); total > limits.Total {
			return nil, nil, fmt.Errorf("file %s: the files come to more than %d bytes, the limit of one snapshot (half the volume, so that the old and the new snapshot both fit)", f.Name, limits.Total)
		}
		mode := f.Mode
		if mode == 0 {
			mode = DefaultMode
		}
		out = append(out, snapshot.File{Name: f.Name, Mode: os.FileMode(mode), Data: data})
	}
	return out, notAfter, nil
}

func renderObject(f config.File, obj Object) (*rendered, error) {
	switch f.Object.Kind {
	case config.KindSecret:
		if f.Format == config.FormatPEM && f.Encoding == config.EncodingNone && strings.EqualFold(strings.TrimSpace(obj.ContentType), ContentTypePFX) {
			// A certificate's backing secret: PEM, as the CSI provider writes it.
			c, err := ParseCert(obj.Value, obj.ContentType)
			if err != nil {
				return nil, err
			}
			return &rendered{file: f, data: c.PEM()}, nil
		}
		data, err := decodeSecret(obj.Value, f.Encoding)
		if err != nil {
			return nil, err
		}
		r := &rendered{file: f, data: data}
		if ct := strings.ToLower(strings.TrimSpace(obj.ContentType)); ct == ContentTypePEM || ct == ContentTypePFX {
			// The file is written as the secret holds it either way; one
			// that does not parse as its content type says has no expiry.
			if c, err := ParseCert(obj.Value, obj.ContentType); err == nil {
				r.notAfter = c.Chain[0].NotAfter
			}
		}
		return r, nil
	case config.KindCert:
		c, err := ParseCert(obj.Value, obj.ContentType)
		if err != nil {
			return nil, err
		}
		var data []byte
		switch f.Format {
		case config.FormatPEM, "":
			data = c.PEM()
		case config.FormatPFX:
			if data, err = c.PFX(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown format %q: use %q or %q", f.Format, config.FormatPEM, config.FormatPFX)
		}
		return &rendered{file: f, data: data, cert: c, notAfter: c.Chain[0].NotAfter}, nil
	case config.KindPublicCert:
		if len(obj.Cer) == 0 {
			return nil, errors.New("no certificate in the response")
		}
		return &rendered{file: f, data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: obj.Cer})}, nil
	case config.KindKey:
		if obj.Key == nil {
			return nil, errors.New("no key material in the response")
		}
		data, err := PublicKeyPEM(obj.Key)
		if err != nil {
			return nil, err
		}
		return &rendered{file: f, data: data}, nil
	}
	return nil, fmt.Errorf("unknown kind %q", f.Object.Kind)
}

func decodeSecret(value, encoding string) ([]byte, error) {
	switch encoding {
	case config.EncodingNone:
		return []byte(value), nil
	case config.EncodingBase64:
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			// The decoder's error may point into the value: do not wrap it.
			return nil, errors.New("value is not valid standard base64 (objectEncoding base64)")
		}
		return b, nil
	case config.EncodingHex:
		b, err := hex.DecodeString(strings.TrimSpace(value))
		if err != nil {
			// hex quotes the offending character: do not wrap it.
			return nil, errors.New("value is not valid hex (objectEncoding hex)")
		}
		return b, nil
	}
	return nil, fmt.Errorf("unknown encoding %q: use %q, %q or none", encoding, config.EncodingBase64, config.EncodingHex)
}
