package fakeazure

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// Key is a Key Vault key version, as added by AddKey or AddCertificate.
type Key struct {
	Name, Version string
	// ID is the versioned key id (kid), e.g. https://127.0.0.1:1234/keys/k/<v>.
	ID     string
	Public crypto.PublicKey
}

// Certificate is a Key Vault certificate version with the chain that signed
// it. Its key and secret have the same name and version.
type Certificate struct {
	Name, Version string
	ContentType   string
	// ID, KeyID and SecretID are the versioned object ids.
	ID, KeyID, SecretID string
	Leaf                *x509.Certificate
	Intermediate        *x509.Certificate
	Root                *x509.Certificate
	Key                 crypto.Signer
}

// Roots returns a pool holding the root, for chain verification.
func (c *Certificate) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// Intermediates returns a pool holding the intermediate.
func (c *Certificate) Intermediates() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Intermediate)
	return p
}

// CertificateOptions tune AddCertificateWith.
type CertificateOptions struct {
	// ContentType of the backing secret: ContentTypePFX (default) or
	// ContentTypePEM.
	ContentType string
	// KeyType "RSA" (default, 2048 bits, as Key Vault's default policy) or "EC"
	// (P-256).
	KeyType string
	// DNSNames of the leaf. Default "<name>.kvinject.test".
	DNSNames []string
	// Validity of the leaf. Default 365 days from an hour ago.
	Validity time.Duration
}

// pki is the root → intermediate chain that issues certificates stored in
// vaults (distinct from the CA that serves TLS).
type pki struct {
	root, inter *x509.Certificate
	interKey    crypto.Signer
}

func newPKI() (*pki, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "fakeazure Test Root CA", Organization: []string{"kvinject e2e"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	root, err := signWith(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	interTmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "fakeazure Test Issuing CA 01", Organization: []string{"kvinject e2e"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	inter, err := signWith(interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("intermediate: %w", err)
	}
	return &pki{root: root, inter: inter, interKey: interKey}, nil
}

func (s *Server) getPKI() (*pki, error) {
	s.mu.Lock()
	p := s.pki
	s.mu.Unlock()
	if p != nil {
		return p, nil
	}
	p, err := newPKI()
	if err != nil {
		return nil, fmt.Errorf("fakeazure: certificate chain: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pki == nil {
		s.pki = p
	}
	return s.pki, nil
}

func generateKey(kty string) (crypto.Signer, error) {
	switch kty {
	case "", "RSA", "RSA-HSM":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "EC", "EC-HSM":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("key type %q: use \"RSA\" or \"EC\"", kty)
}

func keyJWK(pub crypto.PublicKey, kty string) jwk {
	k := publicJWK("", pub)
	k.Use, k.Alg = "", ""
	if strings.HasSuffix(kty, "-HSM") {
		k.Kty = kty
	}
	if k.Kty == "RSA" || k.Kty == "RSA-HSM" {
		k.KeyOps = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	} else {
		k.KeyOps = []string{"sign", "verify"}
	}
	return k
}

// AddKey creates a new version of key name ("RSA" 2048 bits or "EC" P-256;
// "-HSM" variants are reported as such) and returns it.
func (s *Server) AddKey(vaultName, name, kty string) (*Key, error) {
	if !objectRE.MatchString(name) {
		return nil, fmt.Errorf("fakeazure: key name %q: use 1-127 letters, digits and hyphens", name)
	}
	priv, err := generateKey(kty)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vault(vaultName)
	if err != nil {
		return nil, err
	}
	kv := s.addKeyLocked(v, name, keyJWK(priv.Public(), kty), false, randomHex(16))
	return &Key{Name: kv.name, Version: kv.version, ID: objectID(v.url, "keys", kv.name, kv.version), Public: priv.Public()}, nil
}

func (s *Server) addKeyLocked(v *vault, name string, k jwk, managed bool, version string) *keyVersion {
	key := strings.ToLower(name)
	if first, ok := latest(v.keys[key]); ok {
		name = first.name
	}
	attrs := newAttributes()
	f := false
	attrs.Exportable = &f
	kv := &keyVersion{name: name, version: version, key: k, attrs: attrs, managed: managed}
	v.keys[key] = append(v.keys[key], kv)
	return kv
}

// AddCertificate creates a new version of certificate name, issued by a
// test root → intermediate chain, with its key and its backing secret in
// contentType (ContentTypePFX or ContentTypePEM).
func (s *Server) AddCertificate(vaultName, name, contentType string) (*Certificate, error) {
	return s.AddCertificateWith(vaultName, name, CertificateOptions{ContentType: contentType})
}

// AddCertificateWith is AddCertificate with options.
func (s *Server) AddCertificateWith(vaultName, name string, o CertificateOptions) (*Certificate, error) {
	if !objectRE.MatchString(name) {
		return nil, fmt.Errorf("fakeazure: certificate name %q: use 1-127 letters, digits and hyphens", name)
	}
	if o.ContentType == "" {
		o.ContentType = ContentTypePFX
	}
	if o.ContentType != ContentTypePFX && o.ContentType != ContentTypePEM {
		return nil, fmt.Errorf("fakeazure: certificate content type %q: use %q or %q", o.ContentType, ContentTypePFX, ContentTypePEM)
	}
	if len(o.DNSNames) == 0 {
		o.DNSNames = []string{strings.ToLower(name) + ".kvinject.test"}
	}
	if o.Validity <= 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	p, err := s.getPKI()
	if err != nil {
		return nil, err
	}
	key, err := generateKey(o.KeyType)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: %w", err)
	}
	now := time.Now().Truncate(time.Second)
	leafTmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: o.DNSNames[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(-time.Hour + o.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    o.DNSNames,
	}
	leaf, err := signWith(leafTmpl, p.inter, key.Public(), p.interKey)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: leaf certificate: %w", err)
	}

	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: encode key: %w", err)
	}
	var pemBundle strings.Builder
	_ = pem.Encode(&pemBundle, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for _, c := range []*x509.Certificate{leaf, p.inter, p.root} {
		_ = pem.Encode(&pemBundle, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	value := pemBundle.String()
	if o.ContentType == ContentTypePFX {
		// Legacy DES so that golang.org/x/crypto/pkcs12 can read it too;
		// Key Vault exports with an empty password.
		pfx, err := pkcs12.LegacyDES.Encode(key, leaf, []*x509.Certificate{p.inter, p.root}, "")
		if err != nil {
			return nil, fmt.Errorf("fakeazure: encode PFX: %w", err)
		}
		value = base64.StdEncoding.EncodeToString(pfx)
	}

	kty := "RSA"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		kty = "EC"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vault(vaultName)
	if err != nil {
		return nil, err
	}
	attrs := newAttributes()
	nbf, exp := leaf.NotBefore.Unix(), leaf.NotAfter.Unix()
	attrs.NotBefore, attrs.Expires = &nbf, &exp
	sv := s.addSecretLocked(v, name, value, o.ContentType, attrs, nil, true)
	sv.pem = pemBundle.String()
	kv := s.addKeyLocked(v, sv.name, keyJWK(key.Public(), kty), true, sv.version)
	kv.attrs.NotBefore, kv.attrs.Expires = &nbf, &exp
	c := &Certificate{
		Name: sv.name, Version: sv.version, ContentType: o.ContentType,
		ID:       objectID(v.url, "certificates", sv.name, sv.version),
		KeyID:    objectID(v.url, "keys", sv.name, sv.version),
		SecretID: objectID(v.url, "secrets", sv.name, sv.version),
		Leaf:     leaf, Intermediate: p.inter, Root: p.root, Key: key,
	}
	lk := strings.ToLower(name)
	v.certs[lk] = append(v.certs[lk], &certVersion{name: sv.name, version: sv.version, cert: c, attrs: attrs})
	return c, nil
}

func (s *Server) getCertificate(v *vault, w http.ResponseWriter, name, version string) {
	s.mu.Lock()
	cv, ok := findVersion(v.certs[strings.ToLower(name)], version, func(x *certVersion) string { return x.version })
	s.mu.Unlock()
	if !ok {
		id := name
		if version != "" {
			id += "/" + version
		}
		writeKVError(w, http.StatusNotFound, "CertificateNotFound", notFoundMessage("certificate", id), "")
		return
	}
	c := cv.cert
	thumb := sha1.Sum(c.Leaf.Raw)
	kty, keySize, crv := "RSA", 0, ""
	switch k := c.Leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		keySize = k.N.BitLen()
	case *ecdsa.PublicKey:
		kty, crv = "EC", k.Curve.Params().Name
	}
	keyProps := map[string]any{"exportable": true, "kty": kty, "reuse_key": false}
	if keySize > 0 {
		keyProps["key_size"] = keySize
	} else {
		keyProps["crv"] = crv
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":          c.ID,
		"kid":         c.KeyID,
		"sid":         c.SecretID,
		"x5t":         base64.RawURLEncoding.EncodeToString(thumb[:]),
		"cer":         base64.StdEncoding.EncodeToString(c.Leaf.Raw),
		"attributes":  cv.attrs,
		"tags":        map[string]string{},
		"contentType": c.ContentType,
		"policy": map[string]any{
			"id":           objectID(v.url, "certificates", c.Name, "") + "/policy",
			"key_props":    keyProps,
			"secret_props": map[string]any{"contentType": c.ContentType},
			"x509_props": map[string]any{
				"subject":         "CN=" + c.Leaf.Subject.CommonName,
				"sans":            map[string]any{"dns_names": c.Leaf.DNSNames},
				"ekus":            []string{"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"},
				"key_usage":       []string{"digitalSignature", "keyEncipherment"},
				"validity_months": 12,
			},
			"lifetime_actions": []any{},
			"issuer":           map[string]any{"name": "Unknown"},
			"attributes":       map[string]any{"enabled": true, "created": cv.attrs.Created, "updated": cv.attrs.Updated},
		},
	})
}
