package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/injector"
)

const (
	// chartRelease is the chart's release name and namespace on the node.
	// Its webhook configuration (named so) sorts before localConfigName, so
	// the API server calls the chart's webhook first and the in-process one
	// then finds the pod injected.
	chartRelease = "kvinject-chart"
	// chartSelectorLabel marks the only namespace the chart's webhook serves,
	// so the other node tests, running in parallel, never meet it.
	chartSelectorLabel = "kvinject-e2e/chart"
)

// The Helm chart installed on the real node: rendered by Helm's engine
// (kvinject-helm, hack/tools.sh) with the image `make image` builds and
// tls.mode selfManaged, applied with kubectl; its webhook Deployment becomes
// Available on the kubelet, and a pod in a restricted namespace is injected
// by that webhook (its audit line; the in-process webhook only sees it
// injected) and its app reads the secret.
//
// Only two values are test plumbing: webhook.extraEnv points the in-cluster
// config at the API server's bridge address (no kube-proxy routes the
// kubernetes Service), and the namespaceSelector keeps the webhook to this
// test's namespace. The API server reaches the webhook Service through its
// endpoints (e2e/cluster: --enable-aggregator-routing).
func TestNodeChartInstall(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	helm, err := exec.LookPath("kvinject-helm")
	if err != nil {
		t.Fatalf("kvinject-helm is needed (built by hack/tools.sh; `make e2e` puts it on PATH): %v", err)
	}
	repo, tag, _ := strings.Cut(agentImage, ":")
	host, port := s.c.APIServerBridgeAddr()
	values := map[string]any{
		"image":               map[string]any{"repository": repo, "tag": tag, "pullPolicy": "Never"},
		"replicaCount":        1,
		"priorityClass":       map[string]any{"create": false},
		"podDisruptionBudget": map[string]any{"enabled": false},
		"tolerations":         []corev1.Toleration{cluster.NodeToleration},
		"tls":                 map[string]any{"mode": "selfManaged"},
		"webhook": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]string{chartSelectorLabel: "true"}},
			"extraEnv": []corev1.EnvVar{
				{Name: "KUBERNETES_SERVICE_HOST", Value: host},
				{Name: "KUBERNETES_SERVICE_PORT", Value: port},
			},
		},
		"agentDefaults": map[string]any{
			"vault": s.vaultURL, "tenantId": s.srv.TenantID(), "cloud": "Custom",
			"authorityHost": s.srv.AuthorityHost(), "vaultSuffix": "vault.kvinject.test",
			"disableInstanceDiscovery": true, "disableChallengeResourceVerification": true,
			"imagePullPolicy": "Never", "caConfigMap": caConfigMap,
		},
	}
	b, err := json.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	stream, err := exec.CommandContext(ctx, helm, "template", "-name", chartRelease, "-namespace", chartRelease, "-f", valuesFile, "../charts/kvinject").Output()
	if err != nil {
		t.Fatalf("kvinject-helm template: %v", err)
	}
	if _, stderr, err := kubectl(ctx, s.c, stream, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply the chart: %v\n%s", err, stderr)
	}

	deploy := chartRelease + "-webhook"
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := s.c.Kube.AppsV1().Deployments(chartRelease).Get(ctx, deploy, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		pods, _ := s.c.Kube.CoreV1().Pods(chartRelease).List(ctx, metav1.ListOptions{})
		var st []string
		for _, p := range pods.Items {
			j, _ := json.Marshal(p.Status)
			logs, _, _ := kubectl(context.Background(), s.c, nil, "logs", "-n", chartRelease, p.Name)
			st = append(st, fmt.Sprintf("%s: %s\n%s", p.Name, j, logs))
		}
		t.Fatalf("Deployment %s/%s not Available: %v\n%s\nkubelet (tail):\n%s", chartRelease, deploy, err, strings.Join(st, "\n"), s.c.NodeLog("kubelet"))
	}

	const clientID = "00000000-0000-0000-0000-00000000e0c1"
	ns := nodeNamespaceLabeled(t, s, "chart-app", clientID, map[string]string{chartSelectorLabel: "true"})
	s.secretFor(t, clientID, "node-chart-db", "chart secret value")
	tmpl := nodePodSpec("chart-app", map[string]string{"kvinject.io/secret-db-password": "node-chart-db"})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "chart-app", Labels: map[string]string{"pod": "chart-app"}, Annotations: tmpl.Annotations}, Spec: tmpl.Spec}

	// The webhook is Ready once it serves, but the API server may still
	// hold the configuration without the caBundle the webhook patched in:
	// wait until a dry run is injected.
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && got.Annotations[injector.AnnotationStatus] == injector.StatusInjected, nil
	})
	if err != nil {
		t.Fatalf("the chart's webhook does not inject a dry run: %v", err)
	}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, s, ns, "pod=chart-app", running)
	r := waitReport(t, s, ns, got.Name, time.Minute, func(appReport) bool { return true })
	if f := r.Files["db-password"]; f.Content != "chart secret value" {
		t.Errorf("the app read db-password %q, want the vault's value (read errors %v)", f.Content, r.ReadErrors)
	}

	// Injected by the chart's webhook: its audit line says patched; the
	// in-process webhook never patched this pod.
	for _, d := range s.hook.audit.decisions(ns, "chart-app") {
		if d == "patched" {
			t.Errorf("the in-process webhook patched %s/chart-app: the chart's webhook did not inject it first", ns)
		}
	}
	logs, _, err := kubectl(ctx, s.c, nil, "logs", "-n", chartRelease, "deployment/"+deploy)
	if err != nil {
		t.Fatal(err)
	}
	var patched bool
	for _, line := range strings.Split(string(logs), "\n") {
		if strings.Contains(line, "admission review") && strings.Contains(line, ns) && strings.Contains(line, "chart-app") && strings.Contains(line, "patched") {
			patched = true
		}
	}
	if !patched {
		t.Errorf("no audit line of the chart's webhook patched %s/chart-app; its log:\n%s", ns, logs)
	}
}
