package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/webhook"
)

// Every value of kvinject.io/inject but "true" and "false" reaches the
// webhook (its matchCondition) and is denied with the fix, instead of
// running the pod without its secrets.
func TestWebhookDeniesInjectValuesButTrueAndFalse(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0b1")
	for i, v := range []string{"True", "yes", " true", ""} {
		pod := appPod("web-"+string(rune('a'+i)), "web", map[string]string{"kvinject.io/secret-db-password": "db-password"})
		pod.Annotations["kvinject.io/inject"] = v
		_, err := s.c.Kube.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
		want := `kvinject.io/inject: "` + v + `" is not "true" or "false"; set "true" to inject`
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `admission webhook "pods.kvinject.io" denied the request`) ||
			!strings.Contains(err.Error(), want) {
			t.Errorf("kvinject.io/inject=%q: error %v, want forbidden: %s", v, err, want)
		}
	}
	pod := appPod("web-false", "web", map[string]string{"kvinject.io/secret-db-password": "db-password"})
	pod.Annotations["kvinject.io/inject"] = "false"
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Errorf("kvinject.io/inject=false: %v, want admitted untouched", err)
	}
}

// olderFields are fields the API server knows and a build of the webhook
// might not (a newer API server's): the older webhook below never sees them.
// One in every list and object the injector touches or passes by.
var olderFields = []struct {
	path  []string // "*" is every element of a list
	field string
}{
	{[]string{"metadata"}, "finalizers"},
	{[]string{"spec"}, "dnsConfig"},
	{[]string{"spec", "initContainers", "*"}, "workingDir"},
	{[]string{"spec", "initContainers", "*", "volumeMounts", "*"}, "subPath"},
	{[]string{"spec", "containers", "*"}, "workingDir"},
	{[]string{"spec", "containers", "*", "env", "*"}, "value"},
	{[]string{"spec", "containers", "*", "volumeMounts", "*"}, "subPath"},
	{[]string{"spec", "volumes", "*", "emptyDir"}, "medium"},
	{[]string{"spec", "securityContext"}, "supplementalGroupsPolicy"},
}

// visit calls f on every object at path in v.
func visit(v any, path []string, f func(map[string]any)) {
	if len(path) == 0 {
		if m, ok := v.(map[string]any); ok {
			f(m)
		}
		return
	}
	switch v := v.(type) {
	case map[string]any:
		visit(v[path[0]], path[1:], f)
	case []any:
		if path[0] == "*" {
			for _, e := range v {
				visit(e, path[1:], f)
			}
		}
	}
}

// TestWebhookKeepsFieldsItDoesNotKnow runs the injector behind a webhook
// that strips olderFields from the reviews it gets, as a build that predates
// them would decode them, and checks on the real API server that the
// injected pod keeps every one of them, byte for byte, with the agent
// inserted in front of an existing init container.
func TestWebhookKeepsFieldsItDoesNotKnow(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ctx := t.Context()
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0b2")

	h := &webhook.Handler{Defaults: s.defaults, ServiceAccounts: liveServiceAccounts{s}, Log: slog.New(slog.DiscardHandler)}
	older := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var review map[string]any
		if err := json.Unmarshal(body, &review); err != nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		obj := review["request"].(map[string]any)["object"]
		for _, f := range olderFields {
			visit(obj, f.path, func(m map[string]any) { delete(m, f.field) })
		}
		stripped, _ := json.Marshal(review)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(stripped)), int64(len(stripped))
		h.ServeHTTP(w, r)
	}))
	older.StartTLS()
	t.Cleanup(older.Close)
	// Before kvinject's own configuration in name order: the older build
	// injects, and kvinject's then finds the pod injected.
	name := "a-e2e-older-kvinject-" + ns
	_, err := s.c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "older.e2e.kvinject.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(older.URL + webhook.Path), CABundle: pemCert(older.Certificate().Raw)},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	})

	pod := appPod("web", "web", map[string]string{"kvinject.io/secret-db-password": "db-password"})
	pod.Finalizers = []string{"e2e.kvinject.io/keep"}
	pod.Spec.DNSConfig = &corev1.PodDNSConfig{Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}}}
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroupsPolicy: ptr.To(corev1.SupplementalGroupsPolicyMerge)}
	pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}}
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "registry.invalid/migrate:1", WorkingDir: "/migrate",
		VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch", SubPath: "migrate"}}}}
	pod.Spec.Containers[0].WorkingDir = "/app"
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "MODE", Value: "prod"}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch", SubPath: "app"}}

	// Wait until the API server calls the older webhook; a dry run creates nothing.
	var got *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err = s.c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && len(got.Spec.InitContainers) == 2 && len(got.Spec.Containers[0].VolumeMounts) > 0, nil
	})
	if err != nil {
		t.Fatalf("the older webhook is not called: %v", err)
	}
	created, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The finalizer keeps the pod until it is dropped.
		p, err := s.c.Kube.CoreV1().Pods(ns).Get(context.Background(), "web", metav1.GetOptions{})
		if err == nil {
			p.Finalizers = nil
			_, _ = s.c.Kube.CoreV1().Pods(ns).Update(context.Background(), p, metav1.UpdateOptions{})
		}
	})
	if names := containerNames(created.Spec.InitContainers); len(names) != 2 || names[0] != "kvinject-agent" || names[1] != "migrate" {
		t.Fatalf("init containers %v, want [kvinject-agent migrate]", names)
	}
	var sent, stored any
	sentJSON, _ := json.Marshal(pod)
	storedJSON, _ := json.Marshal(created)
	_ = json.Unmarshal(sentJSON, &sent)
	_ = json.Unmarshal(storedJSON, &stored)
	// The agent is no element of the sent pod: line up the stored init
	// containers with the sent ones.
	storedSpec := stored.(map[string]any)["spec"].(map[string]any)
	storedSpec["initContainers"] = storedSpec["initContainers"].([]any)[1:]
	for _, f := range olderFields {
		var want, have []string
		visit(sent, f.path, func(m map[string]any) { b, _ := json.Marshal(m[f.field]); want = append(want, string(b)) })
		visit(stored, f.path, func(m map[string]any) { b, _ := json.Marshal(m[f.field]); have = append(have, string(b)) })
		if len(want) == 0 || len(have) < len(want) {
			t.Errorf("%s.%s: sent %v, stored %v", strings.Join(f.path, "."), f.field, want, have)
			continue
		}
		for i := range want {
			if want[i] != have[i] {
				t.Errorf("%s.%s[%d]: stored %s, sent %s", strings.Join(f.path, "."), f.field, i, have[i], want[i])
			}
		}
	}
}

// liveServiceAccounts reads ServiceAccounts from the API server.
type liveServiceAccounts struct{ s *stack }

func (l liveServiceAccounts) ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	return l.s.c.Kube.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
}
