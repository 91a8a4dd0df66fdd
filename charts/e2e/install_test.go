// Package e2e installs the Helm chart's rendering on a real kube-apiserver
// (e2e/cluster, with kube-controller-manager and cert-manager's CRDs). The
// chart is rendered by Helm's engine (kvinject-helm, hack/tools.sh) and
// applied with kubectl server-side apply: Helm's own install client is not
// built here. Run by `make e2e`.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kvinject/kvinject/e2e/cluster"
)

const chart = "../kvinject"

func render(t *testing.T, args ...string) []byte {
	t.Helper()
	helm, err := exec.LookPath("kvinject-helm")
	if err != nil {
		t.Fatalf("kvinject-helm is needed (built by hack/tools.sh; `make e2e` puts it on PATH): %v", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(helm, append(append([]string{"template"}, args...), chart)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kvinject-helm template %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// apply runs kubectl apply --server-side with the stream on stdin and fails
// on any warning (deprecations, Pod Security): a user would see it.
func apply(ctx context.Context, t *testing.T, c *cluster.Cluster, stream []byte, extra ...string) []string {
	t.Helper()
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, cluster.Kubectl(), append([]string{"--kubeconfig=" + c.Kubeconfig, "apply", "--server-side", "-f", "-"}, extra...)...)
	cmd.Stdin = bytes.NewReader(stream)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl apply %v: %v\n%s", extra, err, stderr.String())
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if line != "" && !strings.Contains(line, "version difference between client") {
			t.Errorf("kubectl apply warned: %s", line)
		}
	}
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

// The default rendering installs for real: every object is accepted, and
// the ReplicaSet controller's webhook pods pass the namespace's enforced
// restricted Pod Security Standard (there are no nodes, so they stay
// Pending; the webhook's own behaviour is the e2e suite's business).
func TestChartInstalls(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{ControllerManager: true, CertManagerCRDs: true})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	applied := apply(ctx, t, c, render(t))
	if len(applied) != 13 {
		t.Errorf("applied %d objects, want the 13 of manifests/: %v", len(applied), applied)
	}
	ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, "kvinject-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace labels %v", ns.Labels)
	}
	var pods []corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.Kube.CoreV1().Pods("kvinject-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kvinject,app.kubernetes.io/component=webhook"})
		if err != nil {
			return false, err
		}
		pods = l.Items
		return len(pods) == 2, nil
	})
	if err != nil {
		events, _ := c.Kube.CoreV1().Events("kvinject-system").List(ctx, metav1.ListOptions{})
		var msgs []string
		for _, e := range events.Items {
			msgs = append(msgs, fmt.Sprintf("%s %s: %s", e.InvolvedObject.Kind, e.Reason, e.Message))
		}
		t.Fatalf("webhook pods: %d after waiting (%v); events:\n%s", len(pods), err, strings.Join(msgs, "\n"))
	}
	for _, p := range pods {
		if p.Spec.PriorityClassName != "kvinject-webhook" || p.Spec.Priority == nil || *p.Spec.Priority != 1000000 {
			t.Errorf("pod %s priority %q %v: the PriorityClass did not resolve", p.Name, p.Spec.PriorityClassName, p.Spec.Priority)
		}
		if p.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
			t.Errorf("pod %s nodeSelector %v", p.Name, p.Spec.NodeSelector)
		}
	}
}

// Every other value (testdata/all-values.yaml: a Secret you provide, custom
// selectors, scheduling, agent defaults) passes the API server's validation
// in a server-side dry run. The monitoring objects are left out: their CRDs
// belong to the Prometheus operator, which this control plane has not.
func TestChartAllValuesDryRun(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{CertManagerCRDs: true})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ns, err := c.CreateNamespace(ctx, "chart", map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	if err != nil {
		t.Fatal(err)
	}
	stream := render(t, "-namespace", ns.Name, "-f", "../testdata/all-values.yaml",
		"-set", "monitoring.serviceMonitor.enabled=false", "-set", "monitoring.podMonitor.enabled=false",
		"-set", "monitoring.prometheusRule.enabled=false")
	applied := apply(ctx, t, c, stream, "--dry-run=server")
	for _, line := range applied {
		if !strings.HasSuffix(line, "serverside-applied (server dry run)") {
			t.Errorf("kubectl apply: %q", line)
		}
	}
	// Deployment, Service, ServiceAccount, ClusterRole, ClusterRoleBinding,
	// MutatingWebhookConfiguration, the dashboard ConfigMap: the Namespace,
	// PriorityClass, PDB and cert-manager objects are turned off.
	if len(applied) != 7 {
		t.Errorf("dry run applied %d objects, want 7: %v", len(applied), applied)
	}
}

// tls.mode=selfManaged installs without cert-manager (this API server has no
// cert-manager CRDs, so a cert-manager object would fail the apply), and the
// webhook's ServiceAccount may do exactly what servingcert needs, as the API
// server's authorizer answers it.
func TestChartSelfManagedTLSInstalls(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	apply(ctx, t, c, render(t, "--set", "tls.mode=selfManaged"))

	sa := "system:serviceaccount:kvinject-system:kvinject-webhook"
	for _, tc := range []struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{authorizationv1.ResourceAttributes{Namespace: "kvinject-system", Resource: "secrets", Verb: "create"}, true},
		{authorizationv1.ResourceAttributes{Namespace: "kvinject-system", Resource: "secrets", Verb: "get", Name: "kvinject-webhook-tls"}, true},
		{authorizationv1.ResourceAttributes{Namespace: "kvinject-system", Resource: "secrets", Verb: "update", Name: "kvinject-webhook-tls"}, true},
		{authorizationv1.ResourceAttributes{Namespace: "kvinject-system", Resource: "secrets", Verb: "get", Name: "other"}, false},
		{authorizationv1.ResourceAttributes{Namespace: "kvinject-system", Resource: "secrets", Verb: "list"}, false},
		{authorizationv1.ResourceAttributes{Namespace: "default", Resource: "secrets", Verb: "create"}, false},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Verb: "patch", Name: "kvinject"}, true},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Verb: "get", Name: "kvinject"}, true},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Verb: "patch", Name: "other"}, false},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Resource: "validatingwebhookconfigurations", Verb: "patch", Name: "kvinject"}, false},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kvinject-system", "system:authenticated"},
			ResourceAttributes: &tc.attrs,
		}}
		got, err := c.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != tc.want {
			t.Errorf("%s %s %s/%s: allowed %v, want %v", tc.attrs.Verb, tc.attrs.Resource, tc.attrs.Namespace, tc.attrs.Name, got.Status.Allowed, tc.want)
		}
	}
}
