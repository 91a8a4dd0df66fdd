package render

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/agent/config"
)

type chain struct {
	leafKey           crypto.Signer
	leaf, inter, root *x509.Certificate
}

func newChain(t *testing.T) chain {
	t.Helper()
	mk := func(cn string, pub crypto.PublicKey, parent *x509.Certificate, signer crypto.Signer, ca bool) *x509.Certificate {
		// The leaf expires first, so an expiry taken from the wrong
		// certificate shows.
		notAfter := time.Now().Add(time.Hour).Truncate(time.Second)
		if ca {
			notAfter = notAfter.Add(48 * time.Hour)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(time.Now().UnixNano()),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              notAfter,
			IsCA:                  ca,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := mk("root", rootKey.Public(), nil, rootKey, true)
	inter := mk("intermediate", interKey.Public(), root, rootKey, true)
	leaf := mk("leaf", leafKey.Public(), inter, interKey, false)
	return chain{leafKey: leafKey, leaf: leaf, inter: inter, root: root}
}

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func pemKey(t *testing.T, k crypto.Signer) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// wantPEM is what a cert file holds: the key, then leaf → root.
func (c chain) wantPEM(t *testing.T) string {
	return pemKey(t, c.leafKey) + pemCert(c.leaf) + pemCert(c.inter) + pemCert(c.root)
}

func certFile(name, format string) config.File {
	return config.File{Name: name, Mode: 0o440, Format: format,
		Object: &config.Object{Vault: "https://v.vault.azure.net/", Kind: config.KindCert, Name: "c"}}
}

func secretFile(name, encoding string) config.File {
	return config.File{Name: name, Mode: 0o400, Encoding: encoding,
		Object: &config.Object{Vault: "https://v.vault.azure.net/", Kind: config.KindSecret, Name: name}}
}

func keyFile(name string) config.File {
	return config.File{Name: name, Mode: 0o444,
		Object: &config.Object{Vault: "https://v.vault.azure.net/", Kind: config.KindKey, Name: name}}
}

func renderOne(t *testing.T, f config.File, obj Object) ([]byte, error) {
	t.Helper()
	out, _, err := Files([]config.File{f}, map[string]Object{f.Name: obj}, DefaultLimits)
	if err != nil {
		return nil, err
	}
	if len(out) != 1 || out[0].Name != f.Name || uint32(out[0].Mode) != uint32(f.Mode) {
		t.Fatalf("Files() = %+v", out)
	}
	return out[0].Data, nil
}

func TestSecretEncodings(t *testing.T) {
	raw := []byte{0, 1, 2, 0xff, 'x'}
	for _, tc := range []struct {
		encoding, value string
		want            []byte
	}{
		{"", "plain text\n", []byte("plain text\n")},
		{"base64", base64.StdEncoding.EncodeToString(raw), raw},
		{"base64", base64.StdEncoding.EncodeToString(raw) + "\n", raw},
		{"hex", hex.EncodeToString(raw), raw},
	} {
		got, err := renderOne(t, secretFile("s", tc.encoding), Object{Value: tc.value})
		if err != nil {
			t.Fatalf("%s: %v", tc.encoding, err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.encoding, got, tc.want)
		}
	}
}

func TestSecretDecodeErrorsDoNotQuoteTheValue(t *testing.T) {
	for _, enc := range []string{"base64", "hex"} {
		_, err := renderOne(t, secretFile("s", enc), Object{Value: "zz!SECRETVALUE"})
		if err == nil {
			t.Fatalf("%s: no error", enc)
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "zz") {
			t.Errorf("%s: error quotes the value: %v", enc, err)
		}
		if !strings.Contains(err.Error(), "file s") || !strings.Contains(err.Error(), enc) {
			t.Errorf("%s: error does not name the file and encoding: %v", enc, err)
		}
	}
}

func TestCertFromPFXAndPEM(t *testing.T) {
	c := newChain(t)
	// Key Vault's order is not guaranteed: put the root first.
	pfx, err := pkcs12.LegacyRC2.Encode(c.leafKey, c.root, []*x509.Certificate{c.leaf, c.inter}, "")
	if err != nil {
		t.Fatal(err)
	}
	pfxValue := base64.StdEncoding.EncodeToString(pfx)
	pemValue := pemCert(c.inter) + pemCert(c.root) + pemKey(t, c.leafKey) + pemCert(c.leaf)
	sec1, _ := x509.MarshalECPrivateKey(c.leafKey.(*ecdsa.PrivateKey))
	sec1Value := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})) + pemCert(c.leaf) + pemCert(c.root) + pemCert(c.inter)

	for name, obj := range map[string]Object{
		"pfx":      {Value: pfxValue, ContentType: ContentTypePFX},
		"pem":      {Value: pemValue, ContentType: ContentTypePEM},
		"pem-sec1": {Value: sec1Value, ContentType: ContentTypePEM},
	} {
		got, err := renderOne(t, certFile("tls.pem", ""), obj)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(got) != c.wantPEM(t) {
			t.Errorf("%s: cert PEM not key + leaf → root:\n%s", name, got)
		}

		got, err = renderOne(t, certFile("tls.pfx", config.FormatPFX), obj)
		if err != nil {
			t.Fatalf("%s pfx: %v", name, err)
		}
		if name == "pfx" && !bytes.Equal(got, pfx) {
			t.Errorf("pfx: the stored PKCS#12 bytes were not written as they are")
		}
		key, leaf, cas, err := pkcs12.DecodeChain(got, "")
		if err != nil {
			t.Fatalf("%s: written PKCS#12 does not decode: %v", name, err)
		}
		all := append([]*x509.Certificate{leaf}, cas...)
		if !key.(*ecdsa.PrivateKey).Equal(c.leafKey) || len(all) != 3 ||
			!slices.ContainsFunc(all, c.leaf.Equal) || !slices.ContainsFunc(all, c.inter.Equal) || !slices.ContainsFunc(all, c.root.Equal) {
			t.Errorf("%s: written PKCS#12 lost the key or part of the chain", name)
		}
	}
}

func TestCertWithoutKey(t *testing.T) {
	c := newChain(t)
	got, err := renderOne(t, certFile("ca.pem", ""), Object{Value: pemCert(c.root) + pemCert(c.leaf) + pemCert(c.inter), ContentType: ContentTypePEM})
	if err != nil {
		t.Fatal(err)
	}
	if want := pemCert(c.leaf) + pemCert(c.inter) + pemCert(c.root); string(got) != want {
		t.Errorf("chain without key not ordered leaf → root:\n%s", got)
	}
	_, err = renderOne(t, certFile("ca.pfx", config.FormatPFX), Object{Value: pemCert(c.leaf), ContentType: ContentTypePEM})
	if err == nil || !strings.Contains(err.Error(), "private key") {
		t.Errorf("pfx without key: err = %v", err)
	}
}

func TestCertBadInput(t *testing.T) {
	for name, obj := range map[string]Object{
		"no content type":  {Value: "x"},
		"wrong type":       {Value: "x", ContentType: "text/plain"},
		"bad base64":       {Value: "!!!", ContentType: ContentTypePFX},
		"not pkcs12":       {Value: base64.StdEncoding.EncodeToString([]byte("hello")), ContentType: ContentTypePFX},
		"pem without cert": {Value: "hello", ContentType: ContentTypePEM},
	} {
		if _, err := renderOne(t, certFile("c", ""), obj); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), "file c") {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
}

func TestPublicKeyPEM(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	// A coordinate with a leading zero byte arrives shortened; it must still work.
	var shortKey *ecdsa.PrivateKey
	for shortKey == nil {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if b, _ := k.PublicKey.Bytes(); b[1] == 0 {
			shortKey = k
		}
	}
	point := func(k *ecdsa.PrivateKey) (x, y []byte) {
		b, _ := k.PublicKey.Bytes()
		n := (len(b) - 1) / 2
		return new(big.Int).SetBytes(b[1 : 1+n]).Bytes(), new(big.Int).SetBytes(b[1+n:]).Bytes()
	}
	ex, ey := point(ecKey)
	sx, sy := point(shortKey)
	for name, tc := range map[string]struct {
		jwk  JWK
		want crypto.PublicKey
	}{
		"rsa":     {JWK{Kty: "RSA", N: rsaKey.N.Bytes(), E: big.NewInt(int64(rsaKey.E)).Bytes()}, &rsaKey.PublicKey},
		"rsahsm":  {JWK{Kty: "RSA-HSM", N: rsaKey.N.Bytes(), E: big.NewInt(int64(rsaKey.E)).Bytes()}, &rsaKey.PublicKey},
		"ec384":   {JWK{Kty: "EC", Crv: "P-384", X: ex, Y: ey}, &ecKey.PublicKey},
		"ecshort": {JWK{Kty: "EC-HSM", Crv: "P-256", X: sx, Y: sy}, &shortKey.PublicKey},
	} {
		got, err := renderOne(t, keyFile("k"), Object{Key: &tc.jwk})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := pem.Decode(got)
		if b == nil || b.Type != "PUBLIC KEY" {
			t.Fatalf("%s: not a PUBLIC KEY PEM: %q", name, got)
		}
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want) {
			t.Errorf("%s: public key differs", name)
		}
	}
	for name, jwk := range map[string]JWK{
		"oct":       {Kty: "oct"},
		"secp256k1": {Kty: "EC", Crv: "P-256K", X: []byte{1}, Y: []byte{1}},
		"off curve": {Kty: "EC", Crv: "P-256", X: []byte{1}, Y: []byte{2}},
	} {
		if _, err := renderOne(t, keyFile("k"), Object{Key: &jwk}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestZeroModeMeansDefault(t *testing.T) {
	f := secretFile("s", "")
	f.Mode = 0
	out, _, err := Files([]config.File{f}, map[string]Object{"s": {Value: "v"}}, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Mode != 0o440 {
		t.Errorf("mode %v, want 0440", out[0].Mode)
	}
}

// TestCertificateExpiry: every file that holds a certificate reports its
// leaf's NotAfter, whether it was read as a cert (PEM or PFX output) or as
// the certificate's backing secret (objectType secret); other files, and a
// "certificate" secret that does not parse, report none.
func TestCertificateExpiry(t *testing.T) {
	c := newChain(t)
	pfx, err := pkcs12.LegacyRC2.Encode(c.leafKey, c.leaf, []*x509.Certificate{c.inter, c.root}, "")
	if err != nil {
		t.Fatal(err)
	}
	pemValue := pemCert(c.root) + pemCert(c.leaf) + pemKey(t, c.leafKey) + pemCert(c.inter)
	files := []config.File{certFile("tls.pem", ""), certFile("tls.pfx", config.FormatPFX),
		secretFile("backing.pem", ""), secretFile("backing.pfx", config.EncodingBase64),
		secretFile("password", ""), secretFile("broken", "")}
	_, notAfter, err := Files(files, map[string]Object{
		"tls.pem":     {Value: pemValue, ContentType: ContentTypePEM},
		"tls.pfx":     {Value: base64.StdEncoding.EncodeToString(pfx), ContentType: ContentTypePFX},
		"backing.pem": {Value: pemValue, ContentType: ContentTypePEM},
		"backing.pfx": {Value: base64.StdEncoding.EncodeToString(pfx), ContentType: ContentTypePFX},
		"password":    {Value: "hunter2"},
		"broken":      {Value: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", ContentType: ContentTypePEM},
	}, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{}
	for _, f := range []string{"tls.pem", "tls.pfx", "backing.pem", "backing.pfx"} {
		want[f] = c.leaf.NotAfter
	}
	if len(notAfter) != len(want) {
		t.Errorf("expiries for %v, want %v", notAfter, want)
	}
	for f, w := range want {
		if got := notAfter[f]; !got.Equal(w) {
			t.Errorf("%s: NotAfter %v, want the leaf's %v (root %v)", f, got, w, c.root.NotAfter)
		}
	}
}

// A secret file with FormatPEM (the CSI provider's objectType secret) writes a
// certificate's PKCS#12 backing secret as PEM, key then leaf → root; a PEM
// backing secret and any other secret are written as they are.
func TestSecretOfACertificateAsPEM(t *testing.T) {
	c := newChain(t)
	pfx, err := pkcs12.LegacyRC2.Encode(c.leafKey, c.root, []*x509.Certificate{c.leaf, c.inter}, "")
	if err != nil {
		t.Fatal(err)
	}
	pfxValue := base64.StdEncoding.EncodeToString(pfx)
	pemValue := pemCert(c.inter) + pemKey(t, c.leafKey) + pemCert(c.leaf)
	f := secretFile("tls", "")
	f.Format = config.FormatPEM
	for name, tc := range map[string]struct {
		obj  Object
		want string
	}{
		"pfx":   {Object{Value: pfxValue, ContentType: ContentTypePFX}, c.wantPEM(t)},
		"pem":   {Object{Value: pemValue, ContentType: ContentTypePEM}, pemValue},
		"plain": {Object{Value: "s3cret"}, "s3cret"},
	} {
		got, err := renderOne(t, f, tc.obj)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(got) != tc.want {
			t.Errorf("%s: wrote %q, want %q", name, got, tc.want)
		}
	}
	// Without the format (objectFormat pfx), the base64 PKCS#12 text as stored.
	got, err := renderOne(t, secretFile("tls", ""), Object{Value: pfxValue, ContentType: ContentTypePFX})
	if err != nil || string(got) != pfxValue {
		t.Errorf("pfx as stored: %v %q", err, got)
	}
}

// A public-cert file is the certificate API's cer as one PEM block.
func TestPublicCertPEM(t *testing.T) {
	c := newChain(t)
	f := config.File{Name: "ca.pem", Mode: 0o444, Object: &config.Object{Vault: "https://v.vault.azure.net/", Kind: config.KindPublicCert, Name: "ca"}}
	got, err := renderOne(t, f, Object{Cer: c.leaf.Raw})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != pemCert(c.leaf) {
		t.Errorf("wrote %q, want the leaf's PEM", got)
	}
	if _, err := renderOne(t, f, Object{}); err == nil {
		t.Error("an empty certificate was written")
	}
}
