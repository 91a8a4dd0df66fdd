//go:build linux

package cluster

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// A real node: kube-scheduler, containerd (Debian's, with runc and the CNI
// plugins, see hack/node.sh) and a kubelet named 127.0.0.1, inside the
// namespaces Isolate made. What these machines need beyond a normal node is in
// shared/real-node-notes.md; each setting below says why.

const (
	// NodeAssetsEnv names the directory holding kubelet and kube-scheduler
	// (hack/node.sh prints it).
	NodeAssetsEnv = "KVINJECT_NODE_ASSETS"
	// NodeName is the node's name and InternalIP: an IP-literal name is the
	// one way to give the kubelet a loopback address.
	NodeName = "127.0.0.1"
	// PauseImage is every pod sandbox's image, built and imported at start
	// (never pulled).
	PauseImage = "kvinject.local/pause:1"

	// NodeTaint keeps pods off the node unless they tolerate it
	// (NodeToleration): tests of the API side alone create pods whose images
	// do not exist, which should stay Pending as on a cluster without nodes.
	NodeTaint = "kvinject.io/e2e-node"

	nodeHint   = "build them with: export KVINJECT_NODE_ASSETS=$(hack/node.sh)"
	sysctlFile = "sysctl"
	cniBinDir  = "/usr/lib/cni"
)

// kubeletSysctls are the kernel settings the kubelet changes at start
// (container_manager_linux.go setupKernelTunables); the run records and
// restores them (they are not namespaced).
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// NodeToleration lets a pod run on the node (see NodeTaint).
var NodeToleration = corev1.Toleration{Key: NodeTaint, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule}

// NodeAssets returns the directory named by KVINJECT_NODE_ASSETS after
// checking that it holds the binaries and that containerd, runc and the CNI
// plugins are installed.
func NodeAssets() (string, error) {
	dir := os.Getenv(NodeAssetsEnv)
	if dir == "" {
		return "", fmt.Errorf("%s is not set; %s", NodeAssetsEnv, nodeHint)
	}
	for _, p := range []string{filepath.Join(dir, "kubelet"), filepath.Join(dir, "kube-scheduler"),
		"/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", filepath.Join(cniBinDir, "bridge")} {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w; %s", err, nodeHint)
		}
	}
	return dir, nil
}

// node is the node's processes and files.
type node struct {
	dir        string
	socket     string
	procs      []*process // in start order; stopped in reverse
	kubeletLog string
	// kubelet and kubeletArgs start the kubelet again (RestartKubelet).
	kubelet     string
	kubeletArgs []string
	taint       bool
}

// nodeAPIServerArgs configures kube-apiserver before start for a node: the
// ServiceAccount admission plugin on (as in every real cluster: pods get
// their kube-api-access volume, a pod's ServiceAccount must exist), and the
// kubelet reached on its InternalIP with a client certificate, its serving
// certificate verified.
func nodeAPIServerArgs(api *envtest.APIServer, dir string) error {
	ca, err := newKubeletCA(dir)
	if err != nil {
		return err
	}
	args := api.Configure()
	args.Set("disable-admission-plugins", "")
	args.Set("kubelet-preferred-address-types", "InternalIP")
	args.Set("kubelet-certificate-authority", ca.caFile)
	args.Set("kubelet-client-certificate", ca.clientCert)
	args.Set("kubelet-client-key", ca.clientKey)
	// Pods reach the API server on the bridge (no kube-proxy routes the
	// kubernetes Service): it listens on every address of the run's network
	// namespace (loopback and the bridge only), and answers connections to
	// BridgeIP (no SNI: picked by local address, which needs the name given
	// explicitly: IP SANs are ignored) with a certificate for it,
	// whose CA kube-root-ca.crt carries (see APIServerBridgeAddr).
	args.Set("bind-address", "0.0.0.0")
	args.Set("tls-sni-cert-key", ca.bridgeCert+","+ca.bridgeKey+":"+BridgeIP)
	// Nothing routes ClusterIPs either: webhooks behind a Service are
	// dialled on the Service's endpoints (pod IPs on the bridge).
	args.Set("enable-aggregator-routing", "true")
	return nil
}

// startNode starts kube-scheduler, containerd and the kubelet and waits for
// the node to be Ready.
func startNode(ctx context.Context, c *Cluster, taint bool, timeout time.Duration) (_ *node, err error) {
	assets, err := NodeAssets()
	if err != nil {
		return nil, err
	}
	if !InNode() {
		return nil, errors.New("the node runs only inside the namespaces cluster.Isolate makes (call it from TestMain)")
	}
	n := &node{dir: NodeRunDir()}
	n.socket = filepath.Join(n.dir, "containerd.sock")
	defer func() {
		if err != nil {
			err = errors.Join(err, n.stop(context.Background()))
		}
	}()
	for _, d := range []string{"containerd", "kubelet", "cni/net.d", "cni/ipam", "certs.d/_default", "pod-logs", "images"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := recordSysctls(filepath.Join(n.dir, sysctlFile)); err != nil {
		return nil, err
	}

	// kube-scheduler, with every right (as the controller manager has).
	sched, err := c.userKubeconfig("system:kube-scheduler", "kube-scheduler")
	if err != nil {
		return nil, err
	}
	p, err := startProcess(n.dir, filepath.Join(assets, "kube-scheduler"), "--kubeconfig="+sched, "--leader-elect=false", "--secure-port=0", "--v=1")
	if err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)

	// containerd.
	if err := n.writeContainerdConfig(); err != nil {
		return nil, err
	}
	if p, err = startProcess(n.dir, "/usr/bin/containerd", "--config="+filepath.Join(n.dir, "containerd.toml")); err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("containerd exited:\n%s", p.output())
		}
		return n.ctr(ctx, "version") == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("wait for containerd: %w", err)
	}
	pause, err := BuildImage(ctx, filepath.Join(n.dir, "images"), PauseImage, "github.com/kvinject/kvinject/e2e/cluster/pause", 65535)
	if err != nil {
		return nil, err
	}
	if err := n.ImportImage(ctx, pause); err != nil {
		return nil, err
	}

	// kubelet.
	kubeconfig, err := c.userKubeconfig("system:node:"+NodeName, "kubelet", "system:nodes")
	if err != nil {
		return nil, err
	}
	if err := n.writeKubeletConfig(taint, nil); err != nil {
		return nil, err
	}
	if err := makeCgroupRoot(nodeCgroupRoot()); err != nil {
		return nil, err
	}
	n.kubelet, n.taint = filepath.Join(assets, "kubelet"), taint
	n.kubeletArgs = []string{
		"--config=" + filepath.Join(n.dir, "kubelet.yaml"),
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + NodeName,
		"--root-dir=" + filepath.Join(n.dir, "kubelet"),
		"--cert-dir=" + filepath.Join(n.dir, "kubelet-pki"),
		"--v=2"}
	if err := n.startKubelet(ctx, c, timeout); err != nil {
		return nil, err
	}
	return n, nil
}

// startKubelet starts the kubelet and waits for the node to be Ready and
// untainted (but for NodeTaint).
func (n *node) startKubelet(ctx context.Context, c *Cluster, timeout time.Duration) error {
	p, err := startProcess(n.dir, n.kubelet, n.kubeletArgs...)
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	n.kubeletLog = p.logPath
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("kubelet exited:\n%s", p.output())
		}
		no, err := c.Kube.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, t := range no.Spec.Taints {
			if t.Key != NodeTaint && t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				return false, nil
			}
		}
		for _, cond := range no.Status.Conditions {
			// A restarted kubelet reports Ready again only after its
			// own start.
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue && !cond.LastHeartbeatTime.Time.Before(p.started.Truncate(time.Second)), nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait for node %s to be Ready and untainted: %w\nkubelet (tail):\n%s", NodeName, err, p.output())
	}
	return nil
}

// RestartKubelet stops the node's kubelet and starts it again with these
// feature gates (nil: the release's defaults), then waits for the node to be
// Ready. Pods keep running meanwhile; the kubelet takes them up again. A
// second node cannot run beside the first (one pod bridge and subnet, one
// cgroup root, the kubelet's fixed /var/lib/kubelet/device-plugins), so a
// test that needs a kubelet with other gates switches this one, and nothing
// else may use the node meanwhile (the test must not be parallel).
func (c *Cluster) RestartKubelet(ctx context.Context, gates map[string]bool) error {
	n := c.node
	if n == nil {
		return errors.New("the cluster has no node")
	}
	i := slices.IndexFunc(n.procs, func(p *process) bool { return p.path == n.kubelet })
	if i < 0 {
		return errors.New("the kubelet is not running")
	}
	if err := n.procs[i].stop(); err != nil {
		return err
	}
	n.procs = slices.Delete(n.procs, i, i+1)
	if err := n.writeKubeletConfig(n.taint, gates); err != nil {
		return err
	}
	return n.startKubelet(ctx, c, 90*time.Second)
}

// ctr runs containerd's client against this node's containerd.
func (n *node) ctr(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "/usr/bin/ctr", append([]string{"--address", n.socket, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ImportImage imports a docker-archive tarball into the node's containerd,
// where the kubelet finds it (pods name it with imagePullPolicy IfNotPresent
// or Never).
func (n *node) ImportImage(ctx context.Context, tarball string) error {
	return n.ctr(ctx, "images", "import", "--no-unpack=false", tarball)
}

func (n *node) writeContainerdConfig() error {
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %[3]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # Root here lacks CAP_SYS_RESOURCE: runc cannot set a negative oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %[6]q
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[9]q
`, filepath.Join(n.dir, "containerd/root"), filepath.Join(n.dir, "containerd/state"), n.socket,
		filepath.Join(n.dir, "containerd/opt"), PauseImage, filepath.Join(n.dir, "runc"), cniBinDir,
		filepath.Join(n.dir, "cni/net.d"), filepath.Join(n.dir, "certs.d"))
	// Any accidental pull goes to a closed loopback port.
	hosts := "server = \"http://127.0.0.1:9\"\n[host.\"http://127.0.0.1:9\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	// Pods get a bridge with host-local addresses, inside the run's network
	// namespace: the only route is the bridge's subnet.
	cni := fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "kvinject", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": %q}]}},
  {"type": "loopback"}]}
`, Bridge, filepath.Join(n.dir, "cni/ipam"), podSubnet, BridgeIP, podSubnet)
	for path, content := range map[string]string{
		"containerd.toml":                cfg,
		"certs.d/_default/hosts.toml":    hosts,
		"cni/net.d/10-kvinject.conflist": cni,
	} {
		if err := os.WriteFile(filepath.Join(n.dir, path), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) writeKubeletConfig(taint bool, gates map[string]bool) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	pki := filepath.Join(n.dir, "kubelet-pki")
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzPort: 0
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
# cgroup v1 on these machines; no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
failSwapOn: false
resolvConf: %s
podLogsDir: %s
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
syncFrequency: 5s
fileCheckFrequency: 1h
staticPodPath: ""
`, port, filepath.Join(pki, "kubelet.crt"), filepath.Join(pki, "kubelet.key"), filepath.Join(pki, "ca.crt"),
		n.socket, nodeCgroupRoot(), filepath.Join(n.dir, "resolv.conf"), filepath.Join(n.dir, "pod-logs"))
	if len(gates) > 0 {
		cfg += "featureGates:\n"
		for _, g := range slices.Sorted(maps.Keys(gates)) {
			cfg += fmt.Sprintf("  %s: %t\n", g, gates[g])
		}
	}
	if taint {
		cfg += fmt.Sprintf("registerWithTaints: [{key: %s, value: \"true\", effect: NoSchedule}]\n", NodeTaint)
	}
	if err := os.WriteFile(filepath.Join(n.dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.dir, "kubelet.yaml"), []byte(cfg), 0o644)
}

// stop ends the node in order: the kubelet first (no restarts behind our
// back), every sandbox through containerd, containerd, the shims of our
// socket by PID, the scheduler; then unmounts what is left under our
// directory, deepest first. Processes and mounts would die with the
// namespaces anyway; this keeps a long-lived process (the demo) clean too.
func (n *node) stop(ctx context.Context) error {
	var errs []error
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i := len(n.procs) - 1; i >= 0; i-- {
		p := n.procs[i]
		if filepath.Base(p.path) == "containerd" {
			n.removeTasks(ctx)
		}
		errs = append(errs, p.stop())
	}
	n.procs = nil
	errs = append(errs, n.killShims(), unmountUnder(n.dir))
	return errors.Join(errs...)
}

// removeTasks kills every container task containerd runs for the node.
func (n *node) removeTasks(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "/usr/bin/ctr", "--address", n.socket, "--namespace", "k8s.io", "tasks", "list", "--quiet").Output()
	if err != nil {
		return
	}
	for _, id := range strings.Fields(string(out)) {
		_ = n.ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
	}
}

// killShims kills the containerd-shim-runc-v2 processes serving our socket.
func (n *node) killShims() error {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasSuffix(args[0], "containerd-shim-runc-v2") || !containsArg(args, n.socket) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return nil
}

func containsArg(args []string, s string) bool {
	for _, a := range args {
		if a == s {
			return true
		}
	}
	return false
}

// unmountUnder unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// makeCgroupRoot creates the kubelet's cgroupRoot in every cgroup v1
// hierarchy (the kubelet requires it to exist); a new cpuset cgroup takes its
// parent's CPUs and memory nodes, or no task could join it.
func makeCgroupRoot(root string) error {
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// recordSysctls writes the current values of kubeletSysctls as path=value
// lines (kept if the file exists: the first record is the machine's).
func recordSysctls(file string) error {
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	var b strings.Builder
	for _, k := range kubeletSysctls {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(string(v)))
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// restoreSysctls writes back what recordSysctls recorded.
func restoreSysctls(file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.Contains(k, "..") {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "restore sysctl %s=%s: %v\n", k, v, err)
		}
	}
}

// userKubeconfig writes a kubeconfig for a user with every right (groups
// plus system:masters) and returns its path.
func (c *Cluster) userKubeconfig(user, file string, groups ...string) (string, error) {
	u, err := c.Env.AddUser(envtest.User{Name: user, Groups: append(groups, "system:masters")}, nil)
	if err != nil {
		return "", fmt.Errorf("provision %s: %w", user, err)
	}
	b, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, file+".kubeconfig")
	return path, os.WriteFile(path, b, 0o600)
}

// kubeletCA is the CA of the kubelet's serving certificate and of the API
// server's client certificate towards the kubelet (logs, exec).
type kubeletCA struct{ caFile, clientCert, clientKey, bridgeCert, bridgeKey string }

func newKubeletCA(dir string) (*kubeletCA, error) {
	pki := filepath.Join(NodeRunDir(), "kubelet-pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kvinject-e2e-kubelet-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, tmpl *x509.Certificate) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(pki, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(pki, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	}
	if err := issue("kubelet", 2, &x509.Certificate{Subject: pkix.Name{CommonName: NodeName},
		IPAddresses: []net.IP{net.ParseIP(NodeName)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, err
	}
	if err := issue("apiserver-kubelet-client", 3, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, err
	}
	if err := issue("apiserver-bridge", 4, &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		IPAddresses: []net.IP{net.ParseIP(BridgeIP)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, err
	}
	caFile := filepath.Join(pki, "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		return nil, err
	}
	_ = dir
	return &kubeletCA{caFile: caFile, clientCert: filepath.Join(pki, "apiserver-kubelet-client.crt"), clientKey: filepath.Join(pki, "apiserver-kubelet-client.key"),
		bridgeCert: filepath.Join(pki, "apiserver-bridge.crt"), bridgeKey: filepath.Join(pki, "apiserver-bridge.key")}, nil
}

// process is one of the node's daemons, in its own process group, its output
// in a log file under the node's directory.
type process struct {
	path, logPath string
	started       time.Time
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
}

func startProcess(dir, path string, args ...string) (*process, error) {
	p := &process{path: path, logPath: filepath.Join(dir, filepath.Base(path)+".log"), done: make(chan struct{})}
	f, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = procAttr()
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, SIGKILL after 10 s.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	return nil
}

func (p *process) output() string { return tail(p.logPath) }

// APIServerBridgeAddr is the API server's address as pods reach it, on the
// bridge (host and port), for a pod's KUBERNETES_SERVICE_HOST/PORT; its
// certificate's CA is in kube-root-ca.crt. Only with a node.
func (c *Cluster) APIServerBridgeAddr() (host, port string) {
	return BridgeIP, c.Env.ControlPlane.GetAPIServer().SecureServing.Port
}

// KubeletGet fetches a path from the kubelet's HTTPS API directly, as
// metrics-server does (/metrics/resource, /stats/summary): kube-apiserver
// does not proxy to a node whose address is loopback. It authenticates with
// the API server's kubelet client certificate and verifies the kubelet's.
func (c *Cluster) KubeletGet(ctx context.Context, path string) ([]byte, error) {
	if c.node == nil {
		return nil, errors.New("the cluster has no node")
	}
	no, err := c.Kube.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pki := filepath.Join(c.node.dir, "kubelet-pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "apiserver-kubelet-client.crt"), filepath.Join(pki, "apiserver-kubelet-client.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	url := fmt.Sprintf("https://%s/%s", net.JoinHostPort(NodeName, strconv.Itoa(int(no.Status.DaemonEndpoints.KubeletEndpoint.Port))), strings.TrimPrefix(path, "/"))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("kubelet %s: %s: %s", path, resp.Status, b)
	}
	return b, nil
}
