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

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/agent/snapshot"
)

// DefaultMode is the mode of a file whose config gives none (0): readable by
// the owner and the group the app containers share, as the design specifies.
const DefaultMode = 0o440

// Object is what the agent fetched for one Key Vault object.
type Object struct {
	// Value and ContentType of a secret, or of a certificate's backing secret.
	Value       string
	ContentType string
	// Key is the JSON web key of a KindKey object.
	Key *JWK
	// Cer is the DER certificate of a KindPublicCert object.
	Cer []byte
}

// JWK is the public part of a Key Vault JSON web key.
type JWK struct {
	Kty, Crv   string
	N, E, X, Y []byte
}

// rendered is one object file and the parts templates can refer to.
type rendered struct {
	file config.File
	data []byte
	cert *Cert // KindCert
}

// Files renders every file of files. objects holds the fetched object of each
// object file, by file name. The result is in the order of files.
func Files(files []config.File, objects map[string]Object) ([]snapshot.File, error) {
	byName := make(map[string]*rendered, len(files))
	for _, f := range files {
		if f.Object == nil {
			continue
		}
		obj, ok := objects[f.Name]
		if !ok {
			return nil, fmt.Errorf("file %s: %s %s was not fetched", f.Name, f.Object.Kind, f.Object.Name)
		}
		r, err := renderObject(f, obj)
		if err != nil {
			return nil, fmt.Errorf("file %s: %s %s: %w", f.Name, f.Object.Kind, f.Object.Name, err)
		}
		byName[f.Name] = r
	}
	out := make([]snapshot.File, 0, len(files))
	for _, f := range files {
		data := []byte(nil)
		if f.Object != nil {
			data = byName[f.Name].data
		} else {
			var err error
			if data, err = execTemplate(f, byName); err != nil {
				return nil, err
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = DefaultMode
		}
		out = append(out, snapshot.File{Name: f.Name, Mode: os.FileMode(mode), Data: data})
	}
	return out, nil
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
		return &rendered{file: f, data: data}, nil
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
		return &rendered{file: f, data: data, cert: c}, nil
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
