package cluster_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kvinject/kvinject/e2e/cluster"
)

func TestMain(m *testing.M) {
	if code, done := cluster.Isolate(); done {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// A plain pod runs on the node, as a restricted namespace admits it, and
// its log comes back through the kubelet.
func TestNodeRunsARestrictedPod(t *testing.T) {
	if !cluster.InNode() {
		if cluster.Required() {
			_, err := cluster.NodeAssets()
			t.Fatalf("e2e required but no node can run here (root, KVINJECT_NODE_ASSETS): %v", err)
		}
		t.Skip("no node here: run as root with KVINJECT_NODE_ASSETS=$(hack/node.sh)")
	}
	c := cluster.StartT(t, cluster.Options{ControllerManager: true, Node: true})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// The kubelet is of the control plane's release (K8S_VERSION).
	no, err := c.Kube.CoreV1().Nodes().Get(ctx, cluster.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v := no.Status.NodeInfo.KubeletVersion; v != "v"+c.Version.String() {
		t.Errorf("kubelet %s, control plane v%s", v, c.Version)
	}
	img, err := cluster.BuildImage(ctx, t.TempDir(), "kvinject.local/testapp:1", "github.com/kvinject/kvinject/e2e/testapp", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ImportImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	ns, err := c.CreateNamespace(ctx, "node", map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	if err != nil {
		t.Fatal(err)
	}
	f := false
	tr := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec: corev1.PodSpec{
			Tolerations:     []corev1.Toleration{cluster.NodeToleration},
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &tr, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "app", Image: "kvinject.local/testapp:1", ImagePullPolicy: corev1.PullNever,
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &f, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		},
	}
	if _, err := c.Kube.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var logs string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		b, err := c.Kube.CoreV1().Pods(ns.Name).GetLogs("plain", &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx)
		logs = string(b)
		return err == nil && strings.Contains(logs, "KVINJECT-APP "), nil
	})
	if err != nil {
		p, _ := c.Kube.CoreV1().Pods(ns.Name).Get(ctx, "plain", metav1.GetOptions{})
		t.Fatalf("no report from the app: %v\npod status: %+v\nlogs: %s\nkubelet:\n%s", err, p.Status, logs, c.NodeLog("kubelet"))
	}
	if !strings.Contains(logs, `"Seccomp":"2"`) || !strings.Contains(logs, `"Uid":"1000 1000 1000 1000"`) {
		t.Errorf("the app does not run confined as uid 1000: %s", logs)
	}
}
