package render

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"software.sslmate.com/src/go-pkcs12"
)

// Content types of a certificate's backing secret.
const (
	ContentTypePFX = "application/x-pkcs12"
	ContentTypePEM = "application/x-pem-file"
)

// Cert is a certificate read from its backing secret.
type Cert struct {
	// Key is the private key; nil when the certificate's key is not exportable.
	Key crypto.PrivateKey
	// Chain is the leaf first, then each issuer up to the root as far as the
	// secret holds them, then any certificate that is not on that path.
	Chain []*x509.Certificate
	// pfx holds the PKCS#12 bytes when the secret was stored as PKCS#12.
	pfx []byte
}

// ParseCert decodes a certificate's backing secret: base64 PKCS#12 without a
// password, or PEM, as the secret's content type says.
func ParseCert(value, contentType string) (*Cert, error) {
	switch strings.ToLower(strings.TrimSpace(contentType)) {
	case ContentTypePFX:
		pfx, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			return nil, errors.New("backing secret is not valid base64 PKCS#12")
		}
		key, first, cas, err := pkcs12.DecodeChain(pfx, "")
		if err != nil {
			return nil, fmt.Errorf("decode PKCS#12: %w", err)
		}
		c := &Cert{Key: key, pfx: pfx}
		c.Chain = orderChain(key, append([]*x509.Certificate{first}, cas...))
		return c, nil
	case ContentTypePEM:
		return parsePEM(value)
	case "":
		return nil, fmt.Errorf("backing secret has no content type: not a certificate's secret? (want %s or %s)", ContentTypePFX, ContentTypePEM)
	}
	return nil, fmt.Errorf("backing secret has content type %q: not a certificate (want %s or %s)", contentType, ContentTypePFX, ContentTypePEM)
}

func parsePEM(value string) (*Cert, error) {
	var (
		key   crypto.PrivateKey
		certs []*x509.Certificate
	)
	rest := []byte(value)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		var err error
		switch b.Type {
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				certs = append(certs, c)
			}
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			err = errors.New("encrypted private keys are not supported")
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %s: %w", b.Type, err)
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("backing secret holds no PEM certificate")
	}
	return &Cert{Key: key, Chain: orderChain(key, certs)}, nil
}

// orderChain puts the certificate of key first (or, without a key, the one
// that issued no other), then its issuers in order, then the rest as found.
func orderChain(key crypto.PrivateKey, certs []*x509.Certificate) []*x509.Certificate {
	var uniq []*x509.Certificate
	for _, c := range certs {
		if !slices.ContainsFunc(uniq, c.Equal) {
			uniq = append(uniq, c)
		}
	}
	certs = uniq
	leaf := -1
	if k, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		leaf = slices.IndexFunc(certs, func(c *x509.Certificate) bool {
			p, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
			return ok && p.Equal(k.Public())
		})
	}
	if leaf < 0 {
		leaf = slices.IndexFunc(certs, func(c *x509.Certificate) bool {
			return !slices.ContainsFunc(certs, func(o *x509.Certificate) bool {
				return o != c && bytes.Equal(o.RawIssuer, c.RawSubject)
			})
		})
	}
	if leaf < 0 {
		leaf = 0
	}
	chain := []*x509.Certificate{certs[leaf]}
	rest := slices.Delete(slices.Clone(certs), leaf, leaf+1)
	for cur := certs[leaf]; !bytes.Equal(cur.RawIssuer, cur.RawSubject); {
		i := slices.IndexFunc(rest, func(c *x509.Certificate) bool { return bytes.Equal(c.RawSubject, cur.RawIssuer) })
		if i < 0 {
			break
		}
		cur = rest[i]
		chain = append(chain, cur)
		rest = slices.Delete(rest, i, i+1)
	}
	return append(chain, rest...)
}

// PEM is the private key (PKCS#8), if any, followed by the chain.
func (c *Cert) PEM() []byte {
	var buf bytes.Buffer
	buf.Write(c.PrivateKeyPEM())
	buf.Write(c.ChainPEM())
	return buf.Bytes()
}

// PrivateKeyPEM is the private key as a PKCS#8 PEM block, or nil.
func (c *Cert) PrivateKeyPEM() []byte {
	if c.Key == nil {
		return nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		// Only keys that parsed from the secret get here; all of them marshal.
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// LeafPEM is the leaf certificate as PEM.
func (c *Cert) LeafPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Chain[0].Raw})
}

// ChainPEM is every certificate, leaf first, as PEM.
func (c *Cert) ChainPEM() []byte {
	var buf bytes.Buffer
	for _, x := range c.Chain {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})
	}
	return buf.Bytes()
}

// PFX returns the PKCS#12 bytes with an empty password, as Key Vault stores
// them: the stored bytes when the secret is PKCS#12; otherwise an encoding
// with the widely readable LegacyDES algorithms (with an empty password the
// encryption protects nothing either way; the tmpfs file mode does).
func (c *Cert) PFX() ([]byte, error) {
	if c.pfx != nil {
		return c.pfx, nil
	}
	if c.Key == nil {
		return nil, errors.New("format pfx needs the private key, and the backing secret has none (is the key exportable?)")
	}
	b, err := pkcs12.LegacyDES.Encode(c.Key, c.Chain[0], c.Chain[1:], "")
	if err != nil {
		return nil, fmt.Errorf("encode PKCS#12: %w", err)
	}
	return b, nil
}
