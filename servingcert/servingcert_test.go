package servingcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

const dns = "kvinject-webhook.kvinject-system.svc"

func newClient(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "kvinject"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.kvinject.io"}, {Name: "b.kvinject.io"}},
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(mwc).Build()
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newManager(t *testing.T, c client.Client, clk *clock) *Manager {
	return &Manager{
		Client: c, Namespace: "kvinject-system", SecretName: "kvinject-webhook-tls", WebhookName: "kvinject",
		DNSNames: []string{dns}, Dir: t.TempDir(), Now: clk.now,
	}
}

// served is what a replica serves, checked the way the API server does:
// against each webhook's caBundle, for the Service's DNS name.
func served(t *testing.T, c client.Client, m *Manager) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(m.Dir, "tls.crt"), filepath.Join(m.Dir, "tls.key"))
	if err != nil {
		t.Fatalf("replica's files: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(context.Background(), types.NamespacedName{Name: "kvinject"}, &mwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
			t.Fatalf("webhook %s: caBundle holds no certificate", w.Name)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: dns, Roots: pool, CurrentTime: m.Now()}); err != nil {
			t.Errorf("webhook %s: caBundle does not verify the served certificate: %v", w.Name, err)
		}
	}
	return leaf
}

func secret(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "kvinject-system", Name: "kvinject-webhook-tls"}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func versions(t *testing.T, c client.Client) (string, string) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(context.Background(), types.NamespacedName{Name: "kvinject"}, &mwc); err != nil {
		t.Fatal(err)
	}
	return secret(t, c).ResourceVersion, mwc.ResourceVersion
}

func TestReplicasRaceToOneCA(t *testing.T) {
	c := newClient(t)
	clk := &clock{t: time.Now()}
	ms := make([]*Manager, 4)
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i := range ms {
		ms[i] = newManager(t, c, clk)
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = ms[i].Reconcile(context.Background()) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	first := served(t, c, ms[0])
	for i, m := range ms[1:] {
		if got := served(t, c, m); !got.Equal(first) {
			t.Errorf("replica %d serves a different certificate than replica 0", i+1)
		}
	}
	if fi, err := os.Stat(filepath.Join(ms[0].Dir, "tls.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tls.key: %v, mode %v; want 0600", err, fi.Mode())
	}
}

func TestReconcileIsIdempotent(t *testing.T) {
	c := newClient(t)
	m := newManager(t, c, &clock{t: time.Now()})
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	s1, w1 := versions(t, c)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s2, w2 := versions(t, c); s1 != s2 || w1 != w2 {
		t.Errorf("a pass with nothing to do wrote: Secret %s→%s, configuration %s→%s", s1, s2, w1, w2)
	}
}

func TestServingCertRenewsFromSameCA(t *testing.T) {
	c := newClient(t)
	clk := &clock{t: time.Now()}
	m := newManager(t, c, clk)
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	old := served(t, c, m)
	_, w1 := versions(t, c)
	clk.add(61 * 24 * time.Hour) // 90-day certificate, renewed 30 days before expiry
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := served(t, c, m)
	if now.Equal(old) {
		t.Fatal("serving certificate not renewed 29 days before expiry")
	}
	if _, w2 := versions(t, c); w1 != w2 {
		t.Errorf("renewing the serving certificate from the same CA rewrote the caBundle")
	}
}

func TestCARotationOverlaps(t *testing.T) {
	c := newClient(t)
	clk := &clock{t: time.Now()}
	m := newManager(t, c, clk)
	m.CAValidity = 100 * 24 * time.Hour
	m.CertValidity = 20 * 24 * time.Hour
	m.RenewBefore = 10 * 24 * time.Hour
	other := newManager(t, c, clk)
	other.CAValidity, other.CertValidity, other.RenewBefore = m.CAValidity, m.CertValidity, m.RenewBefore
	ctx := context.Background()
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	oldCA := secret(t, c).Data[KeyCABundle]
	// Keep the serving certificate fresh up to the CA's renewal.
	for range 9 {
		clk.add(10 * 24 * time.Hour)
		if err := m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		served(t, c, m)
	}
	before := served(t, c, m)
	clk.add(time.Hour) // the CA now expires within RenewBefore
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := parse(secret(t, c).Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.cas) != 2 {
		t.Fatalf("ca.crt holds %d CAs after renewal; want new and old", len(st.cas))
	}
	if after := served(t, c, m); !after.Equal(before) {
		t.Fatal("serving certificate switched in the same pass that added the new CA to caBundle")
	}
	if err := other.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	switched := served(t, c, other)
	if switched.CheckSignatureFrom(st.cas[0]) != nil {
		t.Fatal("serving certificate not reissued from the new CA in the pass after caBundle trusted it")
	}
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !served(t, c, m).Equal(switched) {
		t.Error("replicas serve different certificates after the switch")
	}
	clk.add(11 * 24 * time.Hour) // old CA expired
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := secret(t, c).Data[KeyCABundle]; string(got) == string(oldCA) || len(got) >= 2*len(oldCA) {
		t.Errorf("expired CA still in ca.crt")
	}
	served(t, c, m)
}

func TestUnreadableSecretIsReplaced(t *testing.T) {
	c := newClient(t)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kvinject-system", Name: "kvinject-webhook-tls"},
		Data:       map[string][]byte{KeyCABundle: []byte("not pem"), KeyCert: []byte("x")},
	}
	if err := c.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, c, &clock{t: time.Now()})
	if err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	served(t, c, m)
}

func TestMissingConfigurationNamesIt(t *testing.T) {
	c := newClient(t)
	m := newManager(t, c, &clock{t: time.Now()})
	m.WebhookName = "absent"
	err := m.Reconcile(context.Background())
	if err == nil || !strings.Contains(err.Error(), "MutatingWebhookConfiguration absent") {
		t.Fatalf("err = %v; want it to name the configuration", err)
	}
}

// A replica that read the Secret before another renewed the CA must not take
// the new CA out of the caBundle (step 5): what is there and valid stays.
func TestStaleReplicaKeepsNewerCA(t *testing.T) {
	c := newClient(t)
	clk := &clock{t: time.Now()}
	m := newManager(t, c, clk)
	ctx := context.Background()
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	newer, _, err := m.newCA(clk.now())
	if err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, types.NamespacedName{Name: "kvinject"}, &mwc); err != nil {
		t.Fatal(err)
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = encodeCerts([]*x509.Certificate{newer})
	}
	if err := c.Update(ctx, &mwc); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, types.NamespacedName{Name: "kvinject"}, &mwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		got := decodeCerts(w.ClientConfig.CABundle)
		if len(got) != 2 || !got[1].Equal(newer) {
			t.Errorf("webhook %s: caBundle holds %d CAs; want the Secret's and the newer one kept", w.Name, len(got))
		}
	}
	served(t, c, m)
}
