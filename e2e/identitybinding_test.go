package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/injector"
)

// AKS identity bindings on the real node: a pod with
// kvinject.io/identity-binding gets the webhook's token proxy settings on
// its agent only and a token for the proxy's audience; the kubelet projects
// the token and the proxy's CA, and the agent signs in through the emulated
// proxy (its own certificate, for its SNI name only) with no federated
// credential anywhere. The proxy's counter shows the sign-in went there and
// Entra ID's token endpoint never heard of the client. A ServiceAccount the
// binding does not cover fails with the fix for identity bindings.
func TestNodeIdentityBinding(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-0000000b1d01"
	ns := ibNamespace(t, s, "fleet", clientID)
	createServiceAccount(t, s, ns, "intruder", clientID)
	s.secretFor(t, clientID, "ib-db-password", "bound, not federated")
	ann := map[string]string{
		injector.AnnotationIdentityBinding: "true",
		"kvinject.io/secret-db-password":   "ib-db-password",
	}

	pod := runPod(t, s, ns, "fleet", nodePodSpec("fleet", ann))
	r := waitReport(t, s, ns, pod.Name, time.Minute, func(appReport) bool { return true })
	if f := r.Files["db-password"]; f.Content != "bound, not federated" {
		t.Errorf("db-password: %q (read error %q), want the vault's value", f.Content, r.ReadErrors["db-password"])
	}
	if n := s.srv.Count(fakeazure.EndpointProxyToken, clientID); n < 1 {
		t.Errorf("the token proxy answered %d token request(s) of %s, want at least 1", n, clientID)
	}
	if n := s.srv.Count(fakeazure.EndpointToken, clientID); n != 0 {
		t.Errorf("Entra ID's token endpoint saw %d request(s) of %s, want none", n, clientID)
	}

	// What the webhook gave the pod: the platform's settings, on the agent only.
	got, err := s.c.Kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agent := injectedAgent(t, got)
	env := map[string]string{}
	for _, e := range agent.Env {
		env[e.Name] = e.Value
	}
	for k, v := range map[string]string{
		"AZURE_KUBERNETES_TOKEN_PROXY": s.proxy.URL(),
		"AZURE_KUBERNETES_SNI_NAME":    ibSNIName,
		"AZURE_KUBERNETES_CA_FILE":     injector.TokenDir + "/" + injector.IdentityBindingCAPath,
	} {
		if env[k] != v {
			t.Errorf("agent env %s = %q, want %q", k, env[k], v)
		}
	}
	for _, c := range got.Spec.Containers {
		if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return strings.HasPrefix(e.Name, "AZURE_") }) {
			t.Errorf("app container %s got AZURE_* variables", c.Name)
		}
	}
	for _, v := range got.Spec.Volumes {
		if v.Name != injector.TokenVolume {
			continue
		}
		src := v.Projected.Sources
		if len(src) != 2 || src[0].ServiceAccountToken == nil || src[0].ServiceAccountToken.Audience != fakeazure.IdentityBindingAudience ||
			src[1].ConfigMap == nil || src[1].ConfigMap.Name != ibCAConfigMap {
			t.Errorf("token volume %+v, want a token for %s and ConfigMap %s", src, fakeazure.IdentityBindingAudience, ibCAConfigMap)
		}
	}
	for where, aud := range r.Tokens {
		if strings.Contains(aud, fakeazure.IdentityBindingAudience) {
			t.Errorf("the app holds the proxy's token at %s", where)
		}
	}

	tmpl := nodePodSpec("intruder", ann)
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	intruder := failedPod(t, s, ns, "intruder", tmpl)
	checkLines(t, intruder.State.Terminated.Message, []string{
		"kvinject agent: could not fetch 1 object(s) as client " + clientID,
		"- secret ib-db-password: sign-in failed: HTTP 403 unauthorized_client: …",
		"  Fix: the identity-binding token proxy refused system:serviceaccount:" + ns + ":intruder: create an identity binding of managed identity " + clientID +
			" to this cluster (az aks identity-binding create) and a ClusterRole with verb use-managed-identity on resource " + clientID +
			" of API group cid.wi.aks.azure.com, bound to ServiceAccount " + ns + "/intruder",
	})
}

// ibNamespace is nodeNamespace for identity bindings: a restricted
// namespace with the emulator's CA (for the vault) and the proxy's CA (for
// the webhook's --identity-binding-ca-configmap), and ServiceAccount sa of
// clientID, which an identity binding, not a federated credential, lets
// sign in.
func ibNamespace(t *testing.T, s *stack, sa, clientID string) string {
	t.Helper()
	ns := testNamespace(t, s.c, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	for name, data := range map[string]map[string]string{
		caConfigMap:   {"emulator-ca.pem": string(s.srv.CAPEM())},
		ibCAConfigMap: {injector.IdentityBindingCAKey: string(s.proxy.CAPEM())},
	} {
		if _, err := s.c.Kube.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data,
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createServiceAccount(t, s, ns, sa, clientID)
	if err := s.srv.AddIdentityBinding(fakeazure.IdentityBinding{ClientID: clientID, Issuer: s.c.Issuer,
		Subject: "system:serviceaccount:" + ns + ":" + sa}); err != nil {
		t.Fatal(err)
	}
	return ns
}
