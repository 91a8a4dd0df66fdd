package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/injector"
)

// On the oldest supported release (1.33.13, hack/controlplane.sh 1.33.13),
// through its real API server: the webhook, with the RBAC of manifests/,
// reads the server's version and denies a pod with an environment variable
// and one with on-change: restart, each with kvinject's reason and fix, not
// the API server's own validation error (nor a silently dropped restart
// rule); a pod with files only is injected as on any release.
func TestServerFeaturesOldestRelease(t *testing.T) {
	t.Parallel()
	dir, err := cluster.OldestAssets()
	if err != nil {
		if cluster.Required() {
			t.Fatalf("e2e required (%s=1): %v", cluster.RequireEnv, err)
		}
		t.Skip(err)
	}
	testCluster(t) // the package's control plane started: the machine can run one
	s := ownStack(t, cluster.Options{ControllerManager: true, Assets: dir})
	if !strings.HasPrefix(s.c.Version.String(), "1.33.") {
		t.Fatalf("%s=%s runs %s, want 1.33", cluster.OldestAssetsEnv, dir, s.c.Version)
	}
	checkServerDenials(t, s,
		"kvinject.io/env-DB_PASSWORD: the API server is v1.33.13, and before Kubernetes 1.35 (feature gate EnvFiles) it drops env[].valueFrom.fileKeyRef",
		"kvinject.io/on-change: restart: the API server is v1.33.13, and before Kubernetes 1.35 (feature gate ContainerRestartRules) it drops the agent's restartPolicyRules")
}

// On the newest release with the gates off on kube-apiserver: the webhook
// reads them from the server's kubernetes_feature_enabled gauge (the
// /metrics rule of manifests/ at work) and denies with the gate's name.
func TestServerFeaturesGatesOff(t *testing.T) {
	t.Parallel()
	testCluster(t)
	s := ownStack(t, cluster.Options{ControllerManager: true,
		APIServerFeatureGates: "EnvFiles=false,RestartAllContainersOnContainerExits=false"})
	checkServerDenials(t, s,
		fmt.Sprintf("kvinject.io/env-DB_PASSWORD: the API server (v%s) runs with the feature gate EnvFiles off, and drops env[].valueFrom.fileKeyRef", s.c.Version),
		fmt.Sprintf("kvinject.io/on-change: restart: the API server (v%s) runs with the feature gate RestartAllContainersOnContainerExits off", s.c.Version))
}

// ownStack starts a control plane with opts and the product stack on it,
// both stopped when the test ends.
func ownStack(t *testing.T, opts cluster.Options) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	s, err := newStack(ctx, c)
	t.Cleanup(func() {
		stopStack(s)
		if err := c.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("set up emulator and webhook: %v", err)
	}
	return s
}

// checkServerDenials creates, through s's API server, a pod with an
// environment variable and one with on-change: restart, and wants each
// denied by kvinject with envWant and restartWant and the fix; a pod with
// files only is injected.
func checkServerDenials(t *testing.T, s *stack, envWant, restartWant string) {
	t.Helper()
	ctx := t.Context()
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000f0e1")
	for _, tc := range []struct {
		name, want, fix string
		ann             map[string]string
	}{
		{"env", envWant, "Fix: upgrade the cluster to Kubernetes 1.35 or later with EnvFiles on, or remove the annotation and read the file /mnt/secrets/db-password instead",
			map[string]string{"kvinject.io/env-DB_PASSWORD": "db-password"}},
		{"restart", restartWant, "Fix: upgrade the cluster to Kubernetes 1.36 or later with ContainerRestartRules and RestartAllContainersOnContainerExits on, or use a hook",
			map[string]string{"kvinject.io/refresh": "1m", "kvinject.io/on-change": "restart"}},
	} {
		tc.ann["kvinject.io/secret-db-password"] = "db-password"
		_, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod(tc.name, "web", tc.ann), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.fix) {
			t.Errorf("server %s, pod %s: %v\nwant kvinject's denial %q ... %q", s.c.Version, tc.name, err, tc.want, tc.fix)
		} else {
			t.Logf("server %s, pod %s: %v", s.c.Version, tc.name, err)
		}
	}
	got, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod("files", "web", map[string]string{"kvinject.io/secret-db-password": "db-password"}), metav1.CreateOptions{})
	if err != nil || got.Annotations[injector.AnnotationStatus] != injector.StatusInjected {
		t.Errorf("server %s: a pod with files only: %v", s.c.Version, err)
	}
}

// A kubelet without EnvFiles (1.37.2 with the gate off) would start the app
// with the variable set to "": the env-check init container fails the pod
// first, with the cause and the fix in its termination message, and the
// app never starts. A kubelet without RestartAllContainersOnContainerExits
// would ignore the agent's restart rule: the scheduler does not place such a
// pod there (the node does not declare the feature). Not parallel: it
// switches the one node's kubelet (see cluster.RestartKubelet) and back,
// with nothing else on the node meanwhile.
func TestNodeKubeletWithoutFeatures(t *testing.T) {
	s := testNode(t)
	ctx := t.Context()
	if err := s.c.RestartKubelet(ctx, map[string]bool{"EnvFiles": false, "RestartAllContainersOnContainerExits": false}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.c.RestartKubelet(context.Background(), nil); err != nil {
			t.Errorf("restore the kubelet: %v", err)
			fmt.Fprintln(os.Stderr, s.c.NodeLog("kubelet"))
		}
	})
	const clientID = "00000000-0000-0000-0000-00000000e106"
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-env-nogate", "nogate-value")
	tmpl := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-token": "node-env-nogate",
		"kvinject.io/env-TOKEN":    "token",
	}, "-env", "TOKEN")
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"pod": "web"}, Annotations: tmpl.Annotations}, Spec: tmpl.Spec}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, s, ns, "pod=web", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if a := initStatus(got, injector.AgentContainer); a == nil || a.State.Terminated == nil || a.State.Terminated.ExitCode != 0 {
		t.Errorf("the agent did not fetch and exit 0: %+v", a)
	}
	check := initStatus(got, injector.EnvCheckContainer)
	if check == nil || check.State.Terminated == nil || check.State.Terminated.ExitCode == 0 {
		t.Fatalf("the pod failed, but not in %s: %+v", injector.EnvCheckContainer, got.Status)
	}
	msg := check.State.Terminated.Message
	for _, w := range []string{"this node's kubelet did not set environment variables from the agent's env file",
		"the EnvFiles feature gate off", "would have started the app with empty variables", "Fix: run the pod on nodes whose kubelet is 1.35 or later with EnvFiles on"} {
		if !strings.Contains(msg, w) {
			t.Errorf("termination message lacks %q:\n%s", w, msg)
		}
	}
	if app := initStatus(got, "app"); app == nil || app.State.Running != nil || app.State.Terminated != nil || app.Started != nil && *app.Started {
		t.Errorf("the app started: %+v", app)
	}

	// The node no longer declares the restart feature; a pod whose agent
	// has the restart rule is not scheduled there.
	restart := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-token": "node-env-nogate",
		"kvinject.io/refresh":      "1m",
		"kvinject.io/on-change":    "restart",
	})
	rpod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "restart", Labels: map[string]string{"pod": "restart"}, Annotations: restart.Annotations}, Spec: restart.Spec}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, rpod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, s, ns, "pod=restart", func(p *corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "didn't match Pod's required features") {
				return true
			}
		}
		return false
	})
}
