package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/injector"
)

// On the real node (e2e/cluster, inside namespaces of the run's own): how
// long from creating a pod to its app container running, plain and with an
// init agent, and the memory of the agent containers as `kubectl top` sees it
// (the kubelet's /metrics/resource: the cgroup's working set) with ten refreshing
// sidecars on the node. The images are built on the machine before the run
// enters the namespaces (prepareNode); pods are injected by the injector the
// webhook runs, then created (admission by the webhook is measured above).

const (
	nodeImagesEnv = "KVINJECT_BENCH_NODE_IMAGES"
	benchAgentRef = "ghcr.io/kvinject/kvinject:bench"
	benchAppRef   = "kvinject.local/testapp:1"
	nodeStarts    = 10
	nodeSidecars  = 10
)

type nodeResults struct {
	K8sVersion string `json:"k8sVersion"`
	// PlainStartMs and InjectedStartMs: pod create → app container
	// Running, seen through a watch, sequential runs.
	PlainStartMs    []float64 `json:"plainStartMs"`
	InjectedStartMs []float64 `json:"injectedStartMs"`
	// AgentFetchMs is the init agent's own fetch of its one object (its
	// audit line's duration: sign-in and GET), per injected run.
	AgentFetchMs []float64 `json:"agentFetchMs"`
	// SidecarWorkingSetMiB is each agent container's working set with
	// nodeSidecars sidecar pods running, from the kubelet's /metrics/resource.
	SidecarWorkingSetMiB []float64 `json:"sidecarWorkingSetMiB"`
}

// prepareNode builds the agent and app images on the machine, where the
// module proxy is reachable, and tells the run inside where they are.
func prepareNode(ctx context.Context, out string) error {
	dir := filepath.Join(out, "node-images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	agent, err := cluster.BuildAgentImage(ctx, ".", dir, benchAgentRef)
	if err != nil {
		return err
	}
	if err := os.Rename(agent, filepath.Join(dir, "agent.tar")); err != nil {
		return err
	}
	if _, err := cluster.BuildImage(ctx, dir, benchAppRef, "github.com/kvinject/kvinject/e2e/testapp", 1000); err != nil {
		return err
	}
	return os.Setenv(nodeImagesEnv, dir)
}

func benchNode(ctx context.Context, log *slog.Logger) (*nodeResults, error) {
	if !cluster.InNode() {
		_, err := cluster.NodeAssets()
		return nil, fmt.Errorf("no node here (run as root with %s=$(hack/node.sh); -skip-node skips this part): %v", cluster.NodeAssetsEnv, err)
	}
	log.Info("node: starting a cluster with a node")
	c, err := cluster.Start(ctx, cluster.Options{ControllerManager: true, Node: true, NodeUntainted: true})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	for _, tar := range []string{"agent.tar", "testapp.tar"} {
		if err := c.ImportImage(ctx, filepath.Join(os.Getenv(nodeImagesEnv), tar)); err != nil {
			return nil, err
		}
	}
	caFile := filepath.Join(c.Dir, "azure-ca.pem")
	srv, err := fakeazure.Start(ctx, fakeazure.Options{IssuerClient: c.IssuerHTTPClient, CAFile: caFile, Host: net.ParseIP(cluster.BridgeIP)})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	vault, err := srv.AddVault("bench-kv")
	if err != nil {
		return nil, err
	}
	const clientID = "00000000-0000-0000-0000-0000000be0c1"
	if _, err := srv.SetSecret("bench-kv", "db-password", "bench", ""); err != nil {
		return nil, err
	}
	if err := srv.Grant("bench-kv", clientID, fakeazure.RoleSecretsUser, "db-password"); err != nil {
		return nil, err
	}
	const ns = "bench"
	if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if err := srv.AddFederatedCredential(clientID, c.Issuer, "system:serviceaccount:"+ns+":app"); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	if _, err := c.Kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "azure-ca"},
		Data: map[string]string{"ca.pem": string(ca)}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns, Annotations: map[string]string{
		injector.WorkloadIdentityClientID: clientID, injector.WorkloadIdentityTenantID: srv.TenantID()}}}
	if _, err := c.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	d := injector.Defaults{Image: benchAgentRef, ImagePullPolicy: corev1.PullNever, Vault: vault, CAConfigMap: "azure-ca",
		Cloud: config.Cloud{Name: config.CustomCloud, AuthorityHost: srv.AuthorityHost(), VaultSuffix: "vault.kvinject.test",
			DisableInstanceDiscovery: true, DisableChallengeResourceVerification: true}}

	r := &nodeResults{K8sVersion: c.Version.String()}
	pod := func(name string, annotations map[string]string) (*corev1.Pod, error) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
			Spec: corev1.PodSpec{
				ServiceAccountName:            "app",
				TerminationGracePeriodSeconds: ptr(int64(1)),
				SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr(true),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
				Containers: []corev1.Container{{Name: "app", Image: benchAppRef, ImagePullPolicy: corev1.PullNever,
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(false),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
			},
		}
		if annotations == nil {
			return p, nil
		}
		out, _, err := injector.Inject(p, sa, d)
		return out, err
	}
	startOne := func(name string, annotations map[string]string) (float64, error) {
		p, err := pod(name, annotations)
		if err != nil {
			return 0, err
		}
		ms, err := createUntilRunning(ctx, c, p)
		if err != nil {
			return 0, err
		}
		if annotations != nil {
			logs, err := c.Kube.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: injector.AgentContainer}).DoRaw(ctx)
			if err != nil {
				return 0, err
			}
			r.AgentFetchMs = append(r.AgentFetchMs, fetchDurations(string(logs))...)
		}
		return ms, c.Kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	}
	inject := map[string]string{injector.AnnotationInject: "true", injector.Prefix + "secret-db-password": "db-password"}
	// One of each first: the node's first pod pays for cold caches.
	for i := 0; i <= benchStarts(); i++ {
		plain, err := startOne(fmt.Sprintf("plain-%d", i), nil)
		if err != nil {
			return nil, fmt.Errorf("plain pod: %w", err)
		}
		name := fmt.Sprintf("injected-%d", i)
		injected, err := startOne(name, inject)
		if err != nil {
			return nil, fmt.Errorf("injected pod: %w", err)
		}
		if i == 0 {
			r.AgentFetchMs = nil
			continue
		}
		r.PlainStartMs = append(r.PlainStartMs, plain)
		r.InjectedStartMs = append(r.InjectedStartMs, injected)
		log.Info("node: pod start", "run", i, "plainMs", plain, "injectedMs", injected)
	}

	// Ten refreshing sidecars, then their working sets.
	sidecar := map[string]string{injector.AnnotationInject: "true", injector.Prefix + "secret-db-password": "db-password", injector.AnnotationRefresh: "1m"}
	for i := range nodeSidecars {
		p, err := pod(fmt.Sprintf("sidecar-%d", i), sidecar)
		if err != nil {
			return nil, err
		}
		if _, err := createUntilRunning(ctx, c, p); err != nil {
			return nil, fmt.Errorf("sidecar pod: %w", err)
		}
	}
	log.Info("node: ten sidecars running; waiting for the kubelet's metrics of every agent")
	if err := poll(ctx, "the kubelet's working set of every agent", time.Minute, func() error {
		ws, err := agentWorkingSets(ctx, c, ns)
		if err != nil {
			return err
		}
		if len(ws) < nodeSidecars {
			return fmt.Errorf("%d of %d agents in the summary", len(ws), nodeSidecars)
		}
		r.SidecarWorkingSetMiB = ws
		return nil
	}); err != nil {
		return nil, err
	}
	return r, nil
}

// createUntilRunning creates p and returns the milliseconds until a watch
// shows its app container running.
func createUntilRunning(ctx context.Context, c *cluster.Cluster, p *corev1.Pod) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	w, err := c.Kube.CoreV1().Pods(p.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", p.Name).String()})
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	start := time.Now()
	if _, err := c.Kube.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	for ev := range w.ResultChan() {
		got, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted {
			continue
		}
		for _, s := range got.Status.ContainerStatuses {
			if s.Name == "app" && s.State.Running != nil {
				return ms(time.Since(start)), nil
			}
		}
		if got.Status.Phase == corev1.PodFailed {
			return 0, fmt.Errorf("pod %s failed: %+v", p.Name, got.Status)
		}
	}
	return 0, fmt.Errorf("pod %s: not running within 2 minutes", p.Name)
}

// agentWorkingSets reads the kubelet's resource metrics (what
// metrics-server scrapes, and so what kubectl top shows) and returns the working set of every kvinject-agent container in
// namespace ns, in MiB.
func agentWorkingSets(ctx context.Context, c *cluster.Cluster, ns string) ([]float64, error) {
	raw, err := c.KubeletGet(ctx, "/metrics/resource")
	if err != nil {
		return nil, err
	}
	var ws []float64
	for _, line := range strings.Split(string(raw), "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok || name != "container_memory_working_set_bytes" {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !strings.Contains(labels, `container="`+injector.AgentContainer+`"`) || !strings.Contains(labels, `namespace="`+ns+`"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(strings.Fields(value)[0], &v); err == nil {
			ws = append(ws, v/(1<<20))
		}
	}
	sort.Float64s(ws)
	return ws, nil
}

// fetchDurations returns the "duration" of every audit line ("fetch") of
// an agent's log.
func fetchDurations(logs string) []float64 {
	var out []float64
	for _, line := range strings.Split(logs, "\n") {
		var a struct{ Msg, Duration string }
		if json.Unmarshal([]byte(line), &a) != nil || a.Msg != "fetch" {
			continue
		}
		if d, err := time.ParseDuration(a.Duration); err == nil {
			out = append(out, ms(d))
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// benchStarts is nodeStarts, or KVINJECT_BENCH_NODE_STARTS (to try the
// node part quickly).
func benchStarts() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("KVINJECT_BENCH_NODE_STARTS"), &n); err == nil && n > 0 {
		return n
	}
	return nodeStarts
}
