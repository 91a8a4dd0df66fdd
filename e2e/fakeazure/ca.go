package fakeazure

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CA is a throw-away certificate authority that signs the serving certificates
// of every emulator listener (Entra ID, vaults, test issuers). Share one CA
// between a Server and an Issuer so a single trust bundle covers both.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pem     []byte
	once    sync.Once
	serving *tls.Certificate
	err     error
}

// NewCA generates a new ECDSA P-256 root valid for 10 years.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "fakeazure test CA", Organization: []string{"kvinject e2e"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{
		cert: cert,
		key:  key,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// PEM returns the CA certificate in PEM form.
func (c *CA) PEM() []byte { return append([]byte(nil), c.pem...) }

// Certificate returns the CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Pool returns a cert pool that holds only this CA.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// WriteFile writes the CA certificate as PEM to path (mode 0644), for
// SSL_CERT_FILE or a kubeconfig-style CA file.
func (c *CA) WriteFile(path string) error {
	if err := os.WriteFile(path, c.pem, 0o644); err != nil {
		return fmt.Errorf("write CA file: %w", err)
	}
	return nil
}

// Client returns a new HTTP client that trusts only this CA. It is suitable
// as the Transport of azcore ClientOptions (an *http.Client is a
// policy.Transporter).
func (c *CA) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		TLSClientConfig:     &tls.Config{RootCAs: c.Pool(), MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}}
}

// servingTLS returns the TLS config for a loopback listener. All listeners
// share one leaf for 127.0.0.1, ::1 and localhost, and offer HTTP/2.
func (c *CA) servingTLS() (*tls.Config, error) {
	c.once.Do(func() { c.serving, c.err = c.leaf() })
	if c.err != nil {
		return nil, c.err
	}
	return tlsConfig(*c.serving), nil
}

// leafTLS is servingTLS with a leaf that also names extra addresses.
func (c *CA) leafTLS(extra ...net.IP) (*tls.Config, error) {
	l, err := c.leaf(extra...)
	if err != nil {
		return nil, err
	}
	return tlsConfig(*l), nil
}

// leaf issues a serving certificate for 127.0.0.1, ::1, localhost and extra.
func (c *CA) leaf(extra ...net.IP) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, extra...),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func tlsConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Key Vault and Entra ID negotiate HTTP/2, so concurrent requests
		// of one client share a connection, as they do against Azure.
		NextProtos: []string{"h2", "http/1.1"},
	}
}

// WriteServingCert writes the loopback serving certificate (127.0.0.1, ::1,
// localhost), signed by this CA, as tls.crt and tls.key into dir: the layout
// of a webhook's --cert-dir. Trust it with PEM (a caBundle).
func (c *CA) WriteServingCert(dir string) error {
	if _, err := c.servingTLS(); err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.serving.PrivateKey)
	if err != nil {
		return fmt.Errorf("encode serving key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, block := range map[string]*pem.Block{
		"tls.crt": {Type: "CERTIFICATE", Bytes: c.serving.Certificate[0]},
		"tls.key": {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return fmt.Errorf("write serving certificate: %w", err)
		}
	}
	return nil
}

// NewServingCertDir writes a serving certificate for loopback into dir, as
// WriteServingCert does, signed by a new throw-away CA, and returns that CA as
// PEM: what a test or the demo needs to run a webhook that the API server trusts.
func NewServingCertDir(dir string) (caPEM []byte, err error) {
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	if err := ca.WriteServingCert(dir); err != nil {
		return nil, err
	}
	return ca.PEM(), nil
}

// serving returns ca, or a new CA when it is nil, with its loopback serving config.
func serving(ca *CA, host net.IP) (*CA, *tls.Config, error) {
	if ca == nil {
		var err error
		if ca, err = NewCA(); err != nil {
			return nil, nil, fmt.Errorf("fakeazure: %w", err)
		}
	}
	cfg, err := ca.servingTLS()
	if err != nil {
		return nil, nil, fmt.Errorf("fakeazure: %w", err)
	}
	if host != nil && !host.IsLoopback() {
		// A leaf of its own that names host too; the shared one stays as is.
		if cfg, err = ca.leafTLS(host); err != nil {
			return nil, nil, fmt.Errorf("fakeazure: %w", err)
		}
	}
	return ca, cfg, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

// signWith creates a certificate from tmpl signed by parent/parentKey.
func signWith(tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
