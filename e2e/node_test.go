package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/injector"
)

// On the real node (e2e/cluster: kubelet, containerd, runc, a bridge CNI):
// pods are created through the API server, injected by the webhook, and run
// exactly as admitted, in namespaces that enforce Pod Security "restricted".
// The agent runs from the image `make image` builds; the app is e2e/testapp,
// which logs what it sees as JSON lines. Pods reach the emulator on the pod
// bridge's address, inside the run's own network namespace, and trust its CA
// through kvinject.io/ca-configmap.

const (
	testAppImage = "kvinject.local/testapp:1"
	// appUID is the app's user and group: non-root, not the agent's 65532.
	appUID = 1000
	// caConfigMap holds the emulator's CA in every node test namespace.
	caConfigMap = "azure-ca"
)

var (
	nodeOnce    sync.Once
	nodeCluster *cluster.Cluster
	nodeStack   *stack
	nodeErr     error
)

// testNode returns the stack on the node's cluster, starting it (and
// importing the images) on first use, or skips the test when no node can run
// here (fails it with KVINJECT_REQUIRE_E2E=1).
func testNode(t *testing.T) *stack {
	t.Helper()
	if !cluster.InNode() {
		_, err := cluster.NodeAssets()
		if cluster.Required() {
			t.Fatalf("e2e required (%s=1) but there is no node: run as root with %s=$(hack/node.sh) (%v)", cluster.RequireEnv, cluster.NodeAssetsEnv, err)
		}
		t.Skipf("no node: run as root with %s=$(hack/node.sh) (%v)", cluster.NodeAssetsEnv, err)
	}
	testCluster(t) // the control plane's binaries are there
	nodeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if nodeCluster, nodeErr = cluster.Start(ctx, cluster.Options{ControllerManager: true, Node: true}); nodeErr != nil {
			return
		}
		if nodeErr = importNodeImages(ctx, nodeCluster); nodeErr != nil {
			return
		}
		nodeStack, nodeErr = newStack(ctx, nodeCluster)
	})
	if nodeErr != nil {
		t.Fatalf("start the node's cluster: %v", nodeErr)
	}
	return nodeStack
}

// stopNode stops the node's stack and cluster, if they started.
func stopNode() {
	stopStack(nodeStack)
	if nodeCluster != nil {
		if err := nodeCluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop the node's cluster: %v\n", err)
		}
	}
}

// importNodeImages builds the agent image with `make image` (this platform
// only, tagged agentImage) and the test app's, and imports both.
func importNodeImages(ctx context.Context, c *cluster.Cluster) error {
	dir, err := os.MkdirTemp("", "kvinject-e2e-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	agent, err := cluster.BuildAgentImage(ctx, "..", dir, agentImage)
	if err != nil {
		return err
	}
	app, err := cluster.BuildImage(ctx, dir, testAppImage, "github.com/kvinject/kvinject/e2e/testapp", appUID)
	if err != nil {
		return err
	}
	for _, tar := range []string{agent, app} {
		if err := c.ImportImage(ctx, tar); err != nil {
			return err
		}
	}
	return nil
}

// nodeNamespace creates a restricted namespace holding the emulator's CA as
// a ConfigMap, and a ServiceAccount sa that the emulated tenant trusts as
// clientID.
func nodeNamespace(t *testing.T, s *stack, sa, clientID string) string {
	t.Helper()
	return nodeNamespaceLabeled(t, s, sa, clientID, nil)
}

// nodeNamespaceLabeled is nodeNamespace with extra namespace labels.
func nodeNamespaceLabeled(t *testing.T, s *stack, sa, clientID string, labels map[string]string) string {
	t.Helper()
	all := map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	for k, v := range labels {
		all[k] = v
	}
	ns := testNamespace(t, s.c, all)
	ca, err := os.ReadFile(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Kube.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: caConfigMap}, Data: map[string]string{"emulator-ca.pem": string(ca)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.trust(t, ns, sa, clientID)
	return ns
}

// nodePodSpec is a pod template that "restricted" admits: the test app as
// appUID, tolerating the node's taint, annotated with kvinject.io/inject,
// the CA ConfigMap and annotations.
func nodePodSpec(sa string, annotations map[string]string, args ...string) corev1.PodTemplateSpec {
	ann := map[string]string{injector.AnnotationInject: "true", injector.AnnotationCAConfigMap: caConfigMap}
	for k, v := range annotations {
		ann[k] = v
	}
	uid := int64(appUID)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: ann},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Tolerations:        []corev1.Toleration{cluster.NodeToleration},
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: &uid, RunAsGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			TerminationGracePeriodSeconds: ptr.To(int64(2)),
			Containers: []corev1.Container{{
				Name: "app", Image: testAppImage, ImagePullPolicy: corev1.PullNever, Args: args,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

// appReport is one line of e2e/testapp's log.
type appReport struct {
	Files map[string]struct {
		Content string `json:"content"`
		Mode    string `json:"mode"`
		GID     uint32 `json:"gid"`
	} `json:"files"`
	ReadErrors map[string]string   `json:"readErrors"`
	WriteError string              `json:"writeError"`
	Status     map[string]string   `json:"status"`
	Mount      string              `json:"mount"`
	Tokens     map[string]string   `json:"tokens"`
	Agents     []map[string]string `json:"agents"`
	Env        map[string]string   `json:"env"`
	HookCalls  int                 `json:"hookCalls"`
	HookSaw    map[string]string   `json:"hookSaw"`
}

// appReports reads the app container's log through the kubelet.
func appReports(ctx context.Context, s *stack, ns, pod string) ([]appReport, error) {
	b, err := s.c.Kube.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	var rs []appReport
	for _, line := range strings.Split(string(b), "\n") {
		if j, ok := strings.CutPrefix(line, "KVINJECT-APP "); ok {
			var r appReport
			if err := json.Unmarshal([]byte(j), &r); err != nil {
				return nil, fmt.Errorf("app log line %q: %w", line, err)
			}
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// waitPod waits until a pod matching selector in ns satisfies ok and
// returns it; on timeout it fails with the pod's status and the kubelet's log.
func waitPod(t *testing.T, s *stack, ns, selector string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := s.c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		last = &pods.Items[0]
		return ok(last), nil
	})
	if err != nil {
		status := "no pod"
		if last != nil {
			b, _ := json.MarshalIndent(last.Status, "", "  ")
			status = string(b)
		}
		t.Fatalf("pod %s in %s: %v\nstatus: %s\nkubelet (tail):\n%s", selector, ns, err, status, s.c.NodeLog("kubelet"))
	}
	return last
}

// runPod creates a pod from tmpl and waits until its app container runs.
func runPod(t *testing.T, s *stack, ns, name string, tmpl corev1.PodTemplateSpec) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod": name}, Annotations: tmpl.Annotations}, Spec: tmpl.Spec}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitPod(t, s, ns, "pod="+name, running)
}

// failedPod creates a pod from tmpl (restartPolicy Never) and waits until it
// failed; it returns the agent's status, which must have failed, and checks
// that the app never started.
func failedPod(t *testing.T, s *stack, ns, name string, tmpl corev1.PodTemplateSpec) *corev1.ContainerStatus {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod": name}, Annotations: tmpl.Annotations}, Spec: tmpl.Spec}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, s, ns, "pod="+name, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	agent := initStatus(got, injector.AgentContainer)
	if agent == nil || agent.State.Terminated == nil || agent.State.Terminated.ExitCode == 0 {
		t.Fatalf("pod %s failed, but not by its agent: %+v", name, got.Status)
	}
	if app := initStatus(got, "app"); app == nil || app.State.Running != nil || app.State.Terminated != nil || app.Started != nil && *app.Started {
		t.Errorf("the app of %s started: %+v", name, app)
	}
	return agent
}

func running(p *corev1.Pod) bool {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "app" && c.State.Running != nil {
			return true
		}
	}
	return false
}

// waitReport waits for a report from the app for which ok holds.
func waitReport(t *testing.T, s *stack, ns, pod string, within time.Duration, ok func(appReport) bool) appReport {
	t.Helper()
	var rs []appReport
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, within, true, func(ctx context.Context) (bool, error) {
		got, err := appReports(ctx, s, ns, pod)
		if err != nil {
			return false, nil
		}
		rs = got
		return len(rs) > 0 && ok(rs[len(rs)-1]), nil
	})
	if err != nil {
		agent, _, _ := kubectl(context.Background(), s.c, nil, "logs", "-n", ns, pod, "-c", injector.AgentContainer)
		t.Fatalf("app of %s/%s: no report as expected within %v: %v\nreports: %+v\nagent log:\n%s", ns, pod, within, err, rs, agent)
	}
	return rs[len(rs)-1]
}

func deployment(name string, tmpl corev1.PodTemplateSpec) *appsv1.Deployment {
	tmpl.Labels = map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: tmpl,
		},
	}
}

// Init mode, from a Deployment: the app starts only once every file is
// there, reads each through its group with the right content and mode, cannot
// write the volume (a tmpfs of the configured size), and holds no federated
// token in its file system or environment.
func TestNodeInitMode(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e001"
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-init-db", "correct horse battery staple")
	s.secretFor(t, clientID, "node-init-api", "api-key-1")

	d := deployment("web", nodePodSpec("web", map[string]string{
		"kvinject.io/secret-db-password": "node-init-db",
		"kvinject.io/secret-api-key":     "node-init-api",
		"kvinject.io/template-app.env":   `DB_PASSWORD={{ secret "db-password" | envQuote }}`,
		"kvinject.io/objects":            "- {objectName: node-init-api, objectType: secret, objectAlias: api-key.0400, filePermission: \"0400\"}",
	}))
	if _, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, s, ns, "app=web", running)
	agent := initStatus(pod, injector.AgentContainer)
	if agent == nil || agent.State.Terminated == nil || agent.State.Terminated.ExitCode != 0 {
		t.Fatalf("the init agent did not complete: %+v", agent)
	}
	first := waitReport(t, s, ns, pod.Name, time.Minute, func(appReport) bool { return true })

	want := map[string]struct{ content, mode string }{
		"db-password":  {"correct horse battery staple", "0440"},
		"api-key":      {"api-key-1", "0440"},
		"app.env":      {"DB_PASSWORD='correct horse battery staple'", "0440"},
		"api-key.0400": {"", "0400"}, // owner-only: the app may not read it
	}
	for name, w := range want {
		f, ok := first.Files[name]
		switch {
		case w.content == "":
			if ok || first.ReadErrors[name] == "" {
				t.Errorf("%s (mode %s, owned by the agent) should not be readable by the app: read %v, error %q", name, w.mode, ok, first.ReadErrors[name])
			}
		case !ok:
			t.Errorf("%s missing from the app's first look (the app started before every file existed?): %+v", name, first)
		case f.Content != w.content || f.Mode != w.mode || f.GID != injector.AgentGID:
			t.Errorf("%s: content %q mode %s gid %d, want %q %s %d", name, f.Content, f.Mode, f.GID, w.content, w.mode, injector.AgentGID)
		}
	}
	if !strings.Contains(first.WriteError, "read-only file system") {
		t.Errorf("the app could write its secrets volume (error %q)", first.WriteError)
	}
	if !strings.HasPrefix(first.Mount, "tmpfs ") || !strings.Contains(first.Mount, "size=16384k") {
		t.Errorf("the secrets volume is %q, want a tmpfs of 16Mi", first.Mount)
	}
	if !strings.Contains(" "+first.Status["Groups"]+" ", fmt.Sprintf(" %d ", injector.AgentGID)) || first.Status["Uid"] != "1000 1000 1000 1000" {
		t.Errorf("the app runs as %q with groups %q, want uid %d with group %d", first.Status["Uid"], first.Status["Groups"], appUID, injector.AgentGID)
	}
	for where, aud := range first.Tokens {
		if strings.Contains(aud, injector.TokenAudience) {
			t.Errorf("the app holds a federated token at %s (audience %s)", where, aud)
		}
	}
}

func initStatus(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == name {
			return &p.Status.InitContainerStatuses[i]
		}
	}
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// A native sidecar, from a Deployment: the app starts after the startup
// probe passed (its first look has the file), the agent runs confined as
// injected (seen from the app through the shared process namespace), a
// rotation reaches the app within one interval, and `kubectl logs` shows the
// agent's audit lines and no value.
func TestNodeNativeSidecar(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e002"
	const interval = 3 * time.Second
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-native-db", "version-one")

	tmpl := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-db-password": "node-native-db",
		"kvinject.io/refresh":            interval.String(),
	})
	tmpl.Spec.ShareProcessNamespace = ptr.To(true)
	if _, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, deployment("web", tmpl), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, s, ns, "app=web", running)
	if a := initStatus(pod, injector.AgentContainer); a == nil || a.State.Running == nil || a.Started == nil || !*a.Started {
		t.Fatalf("the native sidecar is not running and started: %+v", a)
	}
	rs, err := appReports(ctx, s, ns, pod.Name)
	if err != nil || len(rs) == 0 {
		rs = []appReport{waitReport(t, s, ns, pod.Name, time.Minute, func(appReport) bool { return true })}
	}
	if f := rs[0].Files["db-password"]; f.Content != "version-one" {
		t.Fatalf("the app's first look has db-password %q, want version-one (it started before the startup probe passed?)", f.Content)
	}

	// The agent as the kernel sees it.
	r := waitReport(t, s, ns, pod.Name, 30*time.Second, func(r appReport) bool { return len(r.Agents) > 0 })
	a := r.Agents[0]
	for k, want := range map[string]string{"Uid": "65532 65532 65532 65532", "Gid": "65532 65532 65532 65532",
		"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
		if a[k] != want {
			t.Errorf("agent /proc/<pid>/status %s: %q, want %q", k, a[k], want)
		}
	}

	gets := func() int { return s.srv.Count(fakeazure.EndpointGetSecret, clientID) }
	before := gets()
	rotated := time.Now()
	s.setSecret(t, "node-native-db", "version-two")
	// The deadline only keeps a broken agent from hanging the test; the
	// assertion is on the agent's own cycles below.
	waitReport(t, s, ns, pod.Name, 10*interval+30*time.Second, func(r appReport) bool {
		return r.Files["db-password"].Content == "version-two"
	})
	// At most two GETs since the rotation: one that may have been in flight
	// with the old value, and the one that brought the new one. Any more
	// means a whole interval passed with the new version in the vault but
	// not in the running app's view.
	if n := gets() - before; n > 2 {
		t.Errorf("the new version took %d GETs of the secret to reach the app, want at most 2 (within one %v interval)", n, interval)
	}
	t.Logf("rotation reached the running app after %v (interval %v)", time.Since(rotated).Round(10*time.Millisecond), interval)

	out, _, err := kubectl(ctx, s.c, nil, "logs", "-n", ns, pod.Name, "-c", injector.AgentContainer)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"msg":"fetch"`) || !strings.Contains(string(out), `"result":"success"`) {
		t.Errorf("kubectl logs of the agent shows no audit line:\n%s", out)
	}
	if strings.Contains(string(out), "version-one") || strings.Contains(string(out), "version-two") {
		t.Errorf("the agent's log holds a secret value:\n%s", out)
	}
}

// A Job with a native sidecar completes: the app exits, the kubelet stops the
// agent.
func TestNodeJobCompletes(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	const clientID = "00000000-0000-0000-0000-00000000e003"
	ns := nodeNamespace(t, s, "batch", clientID)
	s.secretFor(t, clientID, "node-job-token", "job-token")

	tmpl := nodePodSpec("batch", map[string]string{
		"kvinject.io/secret-token": "node-job-token",
		"kvinject.io/refresh":      "1m",
	}, "-once")
	rs, err := runJob(t, s, ns, tmpl)
	if err != nil || len(rs) != 1 || rs[0].Files["token"].Content != "job-token" {
		t.Errorf("the Job's app saw %+v (%v), want token = job-token", rs, err)
	}
}

// A classic sidecar (an init agent, then a regular container) works too.
func TestNodeClassicSidecar(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e004"
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-classic-db", "classic-one")
	tmpl := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-db-password": "node-classic-db",
		"kvinject.io/refresh":            "3s",
		"kvinject.io/sidecar":            "classic",
	})
	if _, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, deployment("web", tmpl), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, s, ns, "app=web", running)
	if a := initStatus(pod, injector.InitContainer); a == nil || a.State.Terminated == nil || a.State.Terminated.ExitCode != 0 {
		t.Fatalf("the classic init agent did not complete: %+v", a)
	}
	waitReport(t, s, ns, pod.Name, time.Minute, func(r appReport) bool { return r.Files["db-password"].Content == "classic-one" })
	s.setSecret(t, "node-classic-db", "classic-two")
	waitReport(t, s, ns, pod.Name, time.Minute, func(r appReport) bool { return r.Files["db-password"].Content == "classic-two" })
}

// A 403 ends the init agent with its termination message, which `kubectl
// describe pod` shows with the Fix: line; the app never starts.
func TestNodeForbidden(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e005"
	ns := nodeNamespace(t, s, "billing", clientID)
	s.setSecret(t, "node-forbidden-key", "x")

	tmpl := nodePodSpec("billing", map[string]string{"kvinject.io/secret-payments-key": "node-forbidden-key"})
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	agent := failedPod(t, s, ns, "billing", tmpl)
	want := []string{
		"kvinject agent: could not fetch 1 object(s) as client " + clientID,
		"- secret node-forbidden-key (file payments-key) in vault " + s.vaultURL + ": HTTP 403 ForbiddenByRbac: Caller is not authorized to perform action on resource.…",
		fmt.Sprintf(`  Fix: grant client %s read access to secrets on vault %s: the "Key Vault Secrets User" role on the vault (Azure RBAC), or the 'get' secret permission in an access policy`, clientID, s.vaultURL),
	}
	checkLines(t, agent.State.Terminated.Message, want)
	out, _, err := kubectl(ctx, s.c, nil, "describe", "pod", "-n", ns, "billing")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		w = strings.TrimSuffix(strings.TrimSpace(w), "…")
		if !strings.Contains(string(out), w) {
			t.Errorf("kubectl describe pod does not show %q:\n%s", w, out)
		}
	}
}

// runJob runs tmpl as the Job "batch" in ns, fails the test unless it
// completes, and returns what its app container reported.
func runJob(t *testing.T, s *stack, ns string, tmpl corev1.PodTemplateSpec) ([]appReport, error) {
	t.Helper()
	ctx := t.Context()
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	tmpl.Labels = map[string]string{"app": "batch"}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "batch"}, Spec: batchv1.JobSpec{Template: tmpl, BackoffLimit: ptr.To(int32(0))}}
	if _, err := s.c.Kube.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *batchv1.Job
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		j, err := s.c.Kube.BatchV1().Jobs(ns).Get(ctx, "batch", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = j
		for _, c := range j.Status.Conditions {
			if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil || last.Status.Succeeded != 1 {
		t.Fatalf("the Job did not complete: %v, status %+v\nkubelet (tail):\n%s", err, last.Status, s.c.NodeLog("kubelet"))
	}
	pod := waitPod(t, s, ns, "app=batch", func(*corev1.Pod) bool { return true })
	return appReports(ctx, s, ns, pod.Name)
}
