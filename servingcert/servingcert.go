// Package servingcert lets the webhook keep its own serving certificate and
// the caBundle of its MutatingWebhookConfiguration, without cert-manager, and
// safely with several replicas. Invariants, in the order Reconcile keeps them:
//
//  1. One Secret (Namespace/SecretName) is the only state: ca.crt (PEM of every
//     CA the API server must trust, the signing CA first), ca.key (the signing
//     CA's key), tls.crt and tls.key. No replica keeps a CA of its own, so all
//     replicas serve certificates of the same CA.
//  2. A replica that finds no Secret generates a CA and a serving certificate
//     and Creates the Secret; AlreadyExists means another replica won the race,
//     and it reads the winner's Secret instead.
//  3. Every change of the Secret is an Update carrying the resourceVersion it
//     read; a Conflict re-reads and starts over, so of racing renewals one wins
//     and the others adopt it.
//  4. CA renewal: when the signing CA expires within RenewBefore, a new CA goes
//     first in ca.crt and the old one stays after it while it is valid;
//     tls.crt stays signed by the old CA for now. Expired CAs leave ca.crt.
//  5. caBundle: every webhook of the configuration WebhookName gets ca.crt
//     followed by whatever still-valid CA its caBundle held besides, in one
//     optimistic-locked patch (a Conflict retries); an equal caBundle is not
//     written. Keeping what is there means a replica with a stale read of
//     the Secret never takes a newer CA out of the bundle; only expiry does.
//  6. Serving switch: tls.crt is reissued from the signing CA only in a pass
//     that found that CA already in every webhook's caBundle, so
//     the API server trusts a serving certificate before any replica serves
//     it. It is also reissued when it expires within RenewBefore or does not
//     cover DNSNames.
//  7. Files: tls.key then tls.crt of the Secret are written into Dir (each
//     through a rename) when they differ from what is there; the server's
//     certificate watcher reloads them (a half-written pair fails to load and
//     the watcher keeps the old one until the second file lands).
//  8. Run reconciles once before it returns (so the server starts with files)
//     and then every Interval until its context is done.
package servingcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of the Secret.
const (
	KeyCABundle = "ca.crt"
	KeyCAKey    = "ca.key"
	KeyCert     = corev1.TLSCertKey
	KeyKey      = corev1.TLSPrivateKeyKey
)

// Manager keeps one webhook's serving certificate. Client needs get, create
// and update of the Secret and get and patch of the configuration.
type Manager struct {
	Client      client.Client
	Namespace   string
	SecretName  string
	WebhookName string
	// DNSNames the serving certificate covers, the Service's first.
	DNSNames []string
	// Dir receives tls.crt and tls.key.
	Dir string

	CAValidity   time.Duration // default 10 years
	CertValidity time.Duration // default 90 days
	RenewBefore  time.Duration // default 30 days
	Interval     time.Duration // default 1 minute
	Now          func() time.Time
	Logger       *slog.Logger
}

func (m *Manager) defaults() {
	if m.CAValidity == 0 {
		m.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if m.CertValidity == 0 {
		m.CertValidity = 90 * 24 * time.Hour
	}
	if m.RenewBefore == 0 {
		m.RenewBefore = 30 * 24 * time.Hour
	}
	if m.Interval == 0 {
		m.Interval = time.Minute
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	if m.Logger == nil {
		m.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run reconciles until the first success (step 8) and returns; a goroutine
// then reconciles every Interval until ctx is done, logging failures.
func (m *Manager) Run(ctx context.Context) error {
	m.defaults()
	for {
		err := m.Reconcile(ctx)
		if err == nil {
			break
		}
		m.Logger.Error("serving certificate", "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("servingcert: %w (last: %w)", ctx.Err(), err)
		case <-time.After(2 * time.Second):
		}
	}
	go func() {
		t := time.NewTicker(m.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := m.Reconcile(ctx); err != nil {
					m.Logger.Error("serving certificate", "error", err)
				}
			}
		}
	}()
	return nil
}

// Reconcile makes one pass over steps 2 to 7.
func (m *Manager) Reconcile(ctx context.Context) error {
	m.defaults()
	for attempt := 0; ; attempt++ {
		err := m.reconcile(ctx)
		if err == nil || !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) || attempt == 5 {
			return err
		}
	}
}

func (m *Manager) reconcile(ctx context.Context) error {
	key := types.NamespacedName{Namespace: m.Namespace, Name: m.SecretName}
	var s corev1.Secret
	err := m.Client.Get(ctx, key, &s)
	if apierrors.IsNotFound(err) {
		s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.SecretName}, Type: corev1.SecretTypeOpaque}
		if s.Data, err = m.fresh(); err != nil {
			return err
		}
		if err := m.Client.Create(ctx, &s); err != nil {
			return fmt.Errorf("servingcert: create Secret %s: %w", key, err) // AlreadyExists: retried, reads the winner's
		}
		m.Logger.Info("serving certificate created", "secret", key.String())
	} else if err != nil {
		return fmt.Errorf("servingcert: get Secret %s: %w", key, err)
	}

	st, err := parse(s.Data)
	if err != nil {
		// Unreadable state (edited by hand): start over with a new CA.
		m.Logger.Error("serving certificate Secret unreadable; replacing it", "secret", key.String(), "error", err)
		if s.Data, err = m.fresh(); err != nil {
			return err
		}
		return m.update(ctx, &s, "replaced")
	}
	now := m.Now()
	changed := false
	// Step 4.
	if now.Add(m.RenewBefore).After(st.cas[0].NotAfter) {
		ca, caKey, err := m.newCA(now)
		if err != nil {
			return err
		}
		st.cas = append([]*x509.Certificate{ca}, st.cas...)
		st.caKey = caKey
		changed = true
	}
	live := st.cas[:0:0]
	for _, c := range st.cas {
		if c == st.cas[0] || now.Before(c.NotAfter) {
			live = append(live, c)
		}
	}
	if len(live) != len(st.cas) {
		st.cas, changed = live, true
	}
	bundle := encodeCerts(st.cas)

	// Step 5, before step 6 so the switch waits for a later pass.
	trusted, err := m.patchBundle(ctx, st.cas, now)
	if err != nil {
		return err
	}

	// Step 6.
	signer := st.cas[0]
	if !changed && trusted && m.needsCert(st.cert, signer, now) {
		certPEM, keyPEM, err := m.newCert(now, signer, st.caKey)
		if err != nil {
			return err
		}
		s.Data[KeyCert], s.Data[KeyKey] = certPEM, keyPEM
		changed = true
	}
	if changed {
		s.Data[KeyCABundle] = bundle
		keyDER, err := x509.MarshalECPrivateKey(st.caKey)
		if err != nil {
			return fmt.Errorf("servingcert: marshal CA key: %w", err)
		}
		s.Data[KeyCAKey] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		return m.update(ctx, &s, "renewed")
	}
	return m.writeFiles(s.Data[KeyKey], s.Data[KeyCert])
}

func (m *Manager) update(ctx context.Context, s *corev1.Secret, what string) error {
	if err := m.Client.Update(ctx, s); err != nil {
		return fmt.Errorf("servingcert: update Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	m.Logger.Info("serving certificate "+what, "secret", s.Namespace+"/"+s.Name)
	// Files follow in the next pass, from what the Secret now holds; a
	// renewal waiting on step 6 needs that pass anyway.
	return m.reconcile(ctx)
}

// patchBundle is step 5. It reports whether every webhook trusted signer
// already before this call.
func (m *Manager) patchBundle(ctx context.Context, cas []*x509.Certificate, now time.Time) (bool, error) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := m.Client.Get(ctx, types.NamespacedName{Name: m.WebhookName}, &mwc); err != nil {
		return false, fmt.Errorf("servingcert: get MutatingWebhookConfiguration %s: %w", m.WebhookName, err)
	}
	orig := mwc.DeepCopy()
	trusted, differs := true, false
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		current := decodeCerts(cc.CABundle)
		if !slices.ContainsFunc(current, cas[0].Equal) {
			trusted = false
		}
		// A replica that read the Secret before another renewed it must not
		// take the new CA back out: what is in the bundle and still valid stays.
		want := slices.Clone(cas)
		for _, c := range current {
			if now.Before(c.NotAfter) && !slices.ContainsFunc(want, c.Equal) {
				want = append(want, c)
			}
		}
		if b := encodeCerts(want); !bytes.Equal(cc.CABundle, b) {
			cc.CABundle, differs = b, true
		}
	}
	if !differs {
		return trusted, nil
	}
	if err := m.Client.Patch(ctx, &mwc, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return false, fmt.Errorf("servingcert: patch caBundle of MutatingWebhookConfiguration %s: %w", m.WebhookName, err)
	}
	m.Logger.Info("caBundle updated", "mutatingWebhookConfiguration", m.WebhookName)
	return trusted, nil
}

// decodeCerts is every certificate of a PEM bundle, skipping what does not
// parse.
func decodeCerts(bundle []byte) []*x509.Certificate {
	var cs []*x509.Certificate
	for {
		var b *pem.Block
		b, bundle = pem.Decode(bundle)
		if b == nil {
			return cs
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && b.Type == "CERTIFICATE" {
			cs = append(cs, c)
		}
	}
}

func (m *Manager) needsCert(cert *x509.Certificate, signer *x509.Certificate, now time.Time) bool {
	if cert.CheckSignatureFrom(signer) != nil || now.Add(m.RenewBefore).After(cert.NotAfter) {
		return true
	}
	for _, n := range m.DNSNames {
		if !slices.Contains(cert.DNSNames, n) {
			return true
		}
	}
	return false
}

// fresh is a new CA and a serving certificate it signed.
func (m *Manager) fresh() (map[string][]byte, error) {
	now := m.Now()
	ca, caKey, err := m.newCA(now)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := m.newCert(now, ca, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, fmt.Errorf("servingcert: marshal CA key: %w", err)
	}
	return map[string][]byte{
		KeyCABundle: encodeCerts([]*x509.Certificate{ca}),
		KeyCAKey:    pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		KeyCert:     certPEM,
		KeyKey:      keyPEM,
	}, nil
}

func (m *Manager) newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("servingcert: CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: m.WebhookName + "-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(m.CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("servingcert: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

func (m *Manager) newCert(now time.Time, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("servingcert: serving key: %w", err)
	}
	notAfter := now.Add(m.CertValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: m.DNSNames[0]},
		DNSNames:     m.DNSNames,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("servingcert: serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("servingcert: marshal serving key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

type state struct {
	cas   []*x509.Certificate
	caKey *ecdsa.PrivateKey
	cert  *x509.Certificate
}

func parse(data map[string][]byte) (state, error) {
	var st state
	rest := data[KeyCABundle]
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return st, fmt.Errorf("%s: %w", KeyCABundle, err)
		}
		st.cas = append(st.cas, c)
	}
	if len(st.cas) == 0 {
		return st, fmt.Errorf("%s holds no certificate", KeyCABundle)
	}
	b, _ := pem.Decode(data[KeyCAKey])
	if b == nil {
		return st, fmt.Errorf("%s holds no PEM key", KeyCAKey)
	}
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return st, fmt.Errorf("%s: %w", KeyCAKey, err)
	}
	if !k.PublicKey.Equal(st.cas[0].PublicKey) {
		return st, fmt.Errorf("%s is not the key of the first certificate of %s", KeyCAKey, KeyCABundle)
	}
	st.caKey = k
	b, _ = pem.Decode(data[KeyCert])
	if b == nil {
		return st, fmt.Errorf("%s holds no PEM certificate", KeyCert)
	}
	if st.cert, err = x509.ParseCertificate(b.Bytes); err != nil {
		return st, fmt.Errorf("%s: %w", KeyCert, err)
	}
	if _, err := tlsPair(data[KeyCert], data[KeyKey]); err != nil {
		return st, fmt.Errorf("%s and %s: %w", KeyCert, KeyKey, err)
	}
	return st, nil
}

func encodeCerts(cs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range cs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// writeFiles is step 7.
func (m *Manager) writeFiles(keyPEM, certPEM []byte) error {
	for _, f := range []struct {
		name string
		data []byte
	}{{KeyKey, keyPEM}, {KeyCert, certPEM}} {
		path := filepath.Join(m.Dir, f.name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.data) {
			continue
		}
		tmp, err := os.CreateTemp(m.Dir, "."+f.name+"-*")
		if err != nil {
			return fmt.Errorf("servingcert: write %s: %w", path, err)
		}
		_, werr := tmp.Write(f.data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o600)); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("servingcert: write %s: %w", path, err)
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("servingcert: write %s: %w", path, err)
		}
	}
	return nil
}

func tlsPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	return tls.X509KeyPair(certPEM, keyPEM)
}
