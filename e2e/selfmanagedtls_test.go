package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kvinject/kvinject/servingcert"
	"github.com/kvinject/kvinject/webhook"
)

// Self-managed TLS on the real API server: two webhook replicas start at
// once with no certificate, race to create the one Secret, and the API server
// then calls both through the caBundle they keep, with RBAC limited to what
// the chart grants in tls.mode=selfManaged (charts/chart_test.go checks the
// same rules).
func TestSelfManagedTLSReplicasRace(t *testing.T) {
	s := testStack(t)
	c := s.c
	ctx := t.Context()
	secretName := "selfmanaged-e2e-tls"
	configName := "kvinject-e2e-selfmanaged"
	sa := "system:serviceaccount:" + installNamespace + ":" + webhookSA

	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: installNamespace, Name: "selfmanaged-e2e"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secretName}, Verbs: []string{"get", "update"}},
		},
	}
	cr := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "selfmanaged-e2e"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
			ResourceNames: []string{configName}, Verbs: []string{"get", "patch"}}},
	}
	subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: webhookSA, Namespace: installNamespace}}
	rb := &rbacv1.RoleBinding{ObjectMeta: role.ObjectMeta, Subjects: subjects, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name}}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: cr.ObjectMeta, Subjects: subjects, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: cr.Name}}

	// Each replica listens on its own port; one configuration with a webhook
	// for each, so an admission succeeds only if both handshakes verify.
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	ns := testNamespace(t, c, nil)
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: configName}}
	for i, p := range ports {
		mwc.Webhooks = append(mwc.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name:                    fmt.Sprintf("replica%d.selfmanaged.kvinject.io", i),
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(fmt.Sprintf("https://localhost:%d/mutate-pods", p))},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
		})
	}
	for _, o := range []client.Object{role, cr, rb, crb, mwc} {
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
		t.Cleanup(func() { _ = c.Client.Delete(context.Background(), o) })
	}
	t.Cleanup(func() {
		_ = c.Client.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: installNamespace, Name: secretName}})
	})

	probe := func(ctx context.Context) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		_, err := c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	if err := probe(ctx); err == nil {
		t.Fatal("a pod was admitted before any replica served: the webhooks are not called")
	}

	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: sa}
	runCtx, cancel := context.WithCancel(context.Background())
	dirs := [2]string{t.TempDir(), t.TempDir()}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := servingcert.NewClient(cfg)
			if err != nil {
				errs[i] = err
				return
			}
			m := &servingcert.Manager{Client: cl, Namespace: installNamespace, SecretName: secretName, WebhookName: configName,
				DNSNames: []string{"localhost"}, Dir: dirs[i], Interval: time.Second}
			if errs[i] = m.Run(runCtx); errs[i] != nil {
				return
			}
			done, err := webhook.Start(runCtx, webhook.Options{Defaults: s.defaults, Host: "127.0.0.1", Port: ports[i], CertDir: dirs[i],
				GracefulShutdownTimeout: 5 * time.Second, Config: cfg, Logger: slog.New(slog.DiscardHandler)})
			if errs[i] = err; err == nil {
				t.Cleanup(func() { <-done })
			}
		}()
	}
	wg.Wait()
	t.Cleanup(cancel) // runs before the waits on done above
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	var crt [2][]byte
	for i, d := range dirs {
		var err error
		if crt[i], err = os.ReadFile(filepath.Join(d, "tls.crt")); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(crt[0], crt[1]) {
		t.Error("the replicas serve different certificates")
	}

	// The API server picks up the caBundle asynchronously.
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		last = probe(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("the API server never admitted through both replicas: %v", last)
	}
}
