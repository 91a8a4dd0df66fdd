// Package cluster runs a real Kubernetes cluster on this machine for the
// end-to-end tests, the demo and the benchmarks: etcd and kube-apiserver
// through controller-runtime's envtest, optionally kube-controller-manager,
// and optionally a real node (Options.Node: kube-scheduler, containerd, runc,
// a bridge CNI, a kubelet; see node.go and Isolate), with the service-account
// issuer set up so that a token consumer (the Azure emulator) can verify pod
// tokens against it.
//
// The binaries come from hack/controlplane.sh:
//
//	export KUBEBUILDER_ASSETS=$(hack/controlplane.sh 1.37.2)
//
// Use:
//
//	c := cluster.StartT(t, cluster.Options{ControllerManager: true}) // skips without binaries
//	c.Kube.CoreV1().Pods(ns).Create(...)          // or c.Client, c.Config, c.Kubeconfig
//	tok, _ := c.PodToken(ctx, pod, cluster.AzureAudience, time.Hour)
//	fakeazure.Start(ctx, fakeazure.Options{IssuerClient: c.IssuerHTTPClient})
//	srv.AddFederatedCredential(clientID, c.Issuer, "system:serviceaccount:<ns>:<sa>")
//
// Without Options.Node there is no node: pods are admitted and stay Pending.
// With it, pods that tolerate NodeTaint run on the kubelet.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

const (
	// AssetsEnv names the directory holding kube-apiserver, etcd and
	// kube-controller-manager (controller-runtime's envtest convention).
	AssetsEnv = "KUBEBUILDER_ASSETS"
	// RequireEnv, set to "1", turns a missing control plane from a skip into a
	// failure, so CI cannot pass by skipping the e2e suite.
	RequireEnv = "KVINJECT_REQUIRE_E2E"
	// AzureAudience is the token audience Entra ID accepts for workload identity.
	AzureAudience = "api://AzureADTokenExchange"

	assetsHint = "build them with: export KUBEBUILDER_ASSETS=$(hack/controlplane.sh)"
)

// Options selects what runs besides etcd and kube-apiserver.
type Options struct {
	// ControllerManager starts kube-controller-manager, so Deployments get
	// ReplicaSets and Pods, namespaces get a default ServiceAccount and the
	// kube-root-ca.crt ConfigMap. Without Node, pods stay Pending.
	ControllerManager bool
	// CertManagerCRDs installs the CRDs of the pinned cert-manager release
	// (CertManagerVersion), so manifests with Certificates and Issuers apply.
	CertManagerCRDs bool
	// Webhooks is handed to envtest: it installs these admission webhook
	// configurations with their client config rewritten to a local server
	// (see envtest.WebhookInstallOptions.LocalServingHost/Port/CertDir).
	Webhooks envtest.WebhookInstallOptions
	// Node adds a real node (needs ControllerManager): kube-scheduler,
	// containerd, runc, a bridge CNI and a kubelet named NodeName, with the
	// ServiceAccount admission plugin on. Only inside the namespaces Isolate
	// makes (see InNode); its binaries come from hack/node.sh.
	Node bool
	// NodeUntainted registers the node without NodeTaint, so every pod may
	// run there (the demo); tests leave it tainted.
	NodeUntainted bool
	// StartTimeout bounds the start of each process; default 90s (2 shared
	// cores can make a cold kube-apiserver slow).
	StartTimeout time.Duration
	// Assets is the directory of kube-apiserver, etcd and
	// kube-controller-manager (hack/controlplane.sh <version>); default
	// KUBEBUILDER_ASSETS. Another release than the default's, e.g. the
	// oldest supported (OldestAssetsEnv).
	Assets string
	// APIServerFeatureGates is kube-apiserver's --feature-gates, e.g.
	// "EnvFiles=false"; "" leaves the release's defaults.
	APIServerFeatureGates string
}

// OldestAssetsEnv names the directory of the oldest supported release's
// control plane (hack/controlplane.sh 1.33.13), for Options.Assets.
const OldestAssetsEnv = "KVINJECT_OLDEST_ASSETS"

// OldestAssets returns the directory OldestAssetsEnv names after checking
// that it holds the binaries, or an error that says how to build them.
func OldestAssets() (string, error) {
	dir := os.Getenv(OldestAssetsEnv)
	if dir == "" {
		return "", fmt.Errorf("%s is not set; build them with: export %s=$(hack/controlplane.sh 1.33.13)", OldestAssetsEnv, OldestAssetsEnv)
	}
	return dir, checkAssets(dir)
}

// Cluster is a running control plane. All endpoints are on 127.0.0.1 (with
// a node the API server also listens on the bridge, APIServerBridgeAddr).
type Cluster struct {
	// Env is the underlying envtest environment (for WebhookInstallOptions,
	// AddUser and the like).
	Env *envtest.Environment
	// Config authenticates as a cluster admin (system:masters).
	Config *rest.Config
	// Kube is a typed clientset for Config.
	Kube kubernetes.Interface
	// Client is a controller-runtime client for Config, with envtest's scheme.
	Client client.Client
	// Issuer is the service-account token issuer, exactly as it appears in
	// tokens' "iss" claim and the OIDC discovery document:
	// https://127.0.0.1:<port>/.
	Issuer string
	// IssuerHTTPClient trusts the API server's CA and authenticates as admin,
	// so it can fetch Issuer's OIDC discovery document and JWKS (which the API
	// server serves only to authenticated callers by default).
	IssuerHTTPClient *http.Client
	// Version is the server's /version gitVersion, e.g. v1.37.2.
	Version *version.Version
	// Kubeconfig is a kubeconfig file for Config, for kubectl
	// (kubectl --kubeconfig=... apply -k manifests/).
	Kubeconfig string
	// Dir holds this cluster's scratch files (kubeconfig, logs); removed by Stop.
	Dir string

	kcm  *controllerManager
	node *node
}

// Assets returns the directory named by KUBEBUILDER_ASSETS after checking that
// it holds the binaries, or an error that says how to build them.
func Assets() (string, error) {
	dir := os.Getenv(AssetsEnv)
	if dir == "" {
		return "", fmt.Errorf("%s is not set; %s", AssetsEnv, assetsHint)
	}
	if err := checkAssets(dir); err != nil {
		return "", fmt.Errorf("%s=%s: %w; %s", AssetsEnv, dir, err, assetsHint)
	}
	return dir, nil
}

// checkAssets checks that dir holds the control plane's binaries.
func checkAssets(dir string) error {
	for _, b := range []string{"kube-apiserver", "etcd", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return err
		}
	}
	return nil
}

// Kubectl is the kubectl that hack/controlplane.sh built beside the control
// plane (the same release: no version skew), else "kubectl" from PATH.
func Kubectl() string {
	if dir := os.Getenv(AssetsEnv); dir != "" {
		p := filepath.Join(dir, "kubectl")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return "kubectl"
}

// Required reports whether a missing control plane must fail the tests
// (KVINJECT_REQUIRE_E2E=1) rather than skip them.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// SkipOrFailWithoutAssets skips the test when the binaries are missing, or
// fails it when KVINJECT_REQUIRE_E2E=1.
func SkipOrFailWithoutAssets(t testing.TB) {
	t.Helper()
	if _, err := Assets(); err != nil {
		if Required() {
			t.Fatalf("e2e required (%s=1) but the control plane is missing: %v", RequireEnv, err)
		}
		t.Skipf("skipping e2e: %v", err)
	}
}

// StartT starts a cluster for one test and stops it in t.Cleanup; it skips or
// fails the test when the binaries are missing (see SkipOrFailWithoutAssets).
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	SkipOrFailWithoutAssets(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return c
}

// Start starts etcd and kube-apiserver (and what opts asks for) and waits
// until they serve. On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	assets := opts.Assets
	if assets == "" {
		if assets, err = Assets(); err != nil {
			return nil, err
		}
	} else if err := checkAssets(assets); err != nil {
		return nil, fmt.Errorf("Options.Assets %s: %w", assets, err)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	dir, err := os.MkdirTemp("", "kvinject-cluster-")
	if err != nil {
		return nil, fmt.Errorf("create scratch dir: %w", err)
	}
	c := &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()

	// The issuer and the JWKS URI must name an address tests may contact:
	// by default kube-apiserver advertises jwks_uri on its advertise address
	// (here an unroutable 192.0.2.x, and 127.0.0.1 cannot be that address:
	// the endpoint reconciler rejects loopback). Pin the secure port up front
	// so both can point at 127.0.0.1:<port>.
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	hostPort := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c.Issuer = "https://" + hostPort + "/"

	useExisting := false
	c.Env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		// Never follow USE_EXISTING_CLUSTER to a real cluster: loopback only.
		UseExistingCluster:       &useExisting,
		ControlPlaneStartTimeout: opts.StartTimeout,
		ControlPlaneStopTimeout:  30 * time.Second,
		WebhookInstallOptions:    opts.Webhooks,
	}
	if opts.CertManagerCRDs {
		crds, err := CertManagerCRDDir(ctx)
		if err != nil {
			return nil, err
		}
		c.Env.CRDInstallOptions.Paths = []string{crds}
		c.Env.ErrorIfCRDPathMissing = true
	}
	api := c.Env.ControlPlane.GetAPIServer()
	// By path: envtest would take KUBEBUILDER_ASSETS over
	// BinaryAssetsDirectory, and Options.Assets may name another release.
	api.Path = filepath.Join(assets, "kube-apiserver")
	c.Env.ControlPlane.Etcd = &envtest.Etcd{Path: filepath.Join(assets, "etcd")}
	api.SecureServing.Address = "127.0.0.1"
	api.SecureServing.Port = strconv.Itoa(port)
	args := api.Configure()
	args.Set("service-account-issuer", c.Issuer)
	args.Set("service-account-jwks-uri", c.Issuer+"openid/v1/jwks")
	if opts.APIServerFeatureGates != "" {
		args.Set("feature-gates", opts.APIServerFeatureGates)
	}
	if InNode() {
		// With no default route (the run's namespaces have none)
		// kube-apiserver needs an address to advertise: the pod bridge's.
		// Nothing reconciles the kubernetes Service's endpoints to it (and
		// nothing routes its ClusterIP): pods that need the API server are
		// pointed at APIServerBridgeAddr, on which it listens with a node.
		args.Set("advertise-address", BridgeIP)
		args.Set("endpoint-reconciler-type", "none")
	}
	if opts.Node {
		if !opts.ControllerManager {
			return nil, errors.New("a node needs the controller manager (Options.ControllerManager)")
		}
		if err := nodeAPIServerArgs(api, dir); err != nil {
			return nil, err
		}
	}
	// envtest turns the ServiceAccount admission plugin off; every real
	// cluster runs it (each pod then gets its own kube-api-access-* volume,
	// and a pod's ServiceAccount must exist), so the tests run with it on.
	args.Disable("disable-admission-plugins")

	// Keep kube-apiserver's output for the error below; with
	// KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT=true envtest sends it to the terminal.
	apiLog := filepath.Join(dir, "kube-apiserver.log")
	if os.Getenv("KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT") != "true" {
		f, err := os.Create(apiLog)
		if err != nil {
			return nil, fmt.Errorf("create kube-apiserver log: %w", err)
		}
		defer f.Close()
		api.Out, api.Err = f, f
	}

	if c.Config, err = c.Env.Start(); err != nil {
		return nil, fmt.Errorf("start envtest (kube-apiserver, etcd from %s): %w\nkube-apiserver output (tail):\n%s", assets, err, tail(apiLog))
	}
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, c.Env.KubeConfig, 0o600); err != nil {
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	if c.Kube, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, fmt.Errorf("create clientset: %w", err)
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: c.Env.Scheme}); err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	if c.IssuerHTTPClient, err = rest.HTTPClientFor(c.Config); err != nil {
		return nil, fmt.Errorf("create issuer HTTP client: %w", err)
	}
	info, err := c.Kube.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("get server version: %w", err)
	}
	if c.Version, err = version.ParseSemantic(info.GitVersion); err != nil {
		return nil, fmt.Errorf("server version %q is not semver (was kube-apiserver built without version ldflags?): %w", info.GitVersion, err)
	}

	if opts.ControllerManager {
		if c.kcm, err = startControllerManager(ctx, c, assets, opts.Node, opts.StartTimeout); err != nil {
			return nil, err
		}
	}
	if opts.Node {
		if c.node, err = startNode(ctx, c, !opts.NodeUntainted, opts.StartTimeout); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Stop stops every process of the cluster and removes its files. It is safe
// to call on a partly started cluster and more than once.
func (c *Cluster) Stop() error {
	var errs []error
	if c.node != nil {
		errs = append(errs, c.node.stop(context.Background()))
		c.node = nil
	}
	if c.kcm != nil {
		errs = append(errs, c.kcm.stop())
		c.kcm = nil
	}
	if c.Env != nil {
		if err := c.Env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop envtest: %w", err))
		}
		c.Env = nil
	}
	if c.Dir != "" {
		errs = append(errs, os.RemoveAll(c.Dir))
		c.Dir = ""
	}
	return errors.Join(errs...)
}

// ControllerManagerLog returns kube-controller-manager's output so far (empty
// when it is not running), for failure messages.
func (c *Cluster) ControllerManagerLog() string {
	if c.kcm == nil {
		return ""
	}
	return c.kcm.output()
}

// HasNode reports whether the cluster has a node (Options.Node).
func (c *Cluster) HasNode() bool { return c.node != nil }

// ImportImage imports a docker archive (BuildImage, hack/image) into the
// node's containerd.
func (c *Cluster) ImportImage(ctx context.Context, tarball string) error {
	if c.node == nil {
		return errors.New("the cluster has no node")
	}
	return c.node.ImportImage(ctx, tarball)
}

// NodeLog returns the end of a node daemon's log ("kubelet", "containerd",
// "kube-scheduler"), for failure messages.
func (c *Cluster) NodeLog(daemon string) string {
	if c.node == nil {
		return ""
	}
	return tail(filepath.Join(c.node.dir, daemon+".log"))
}

// CreateNamespace creates a namespace with a generated name starting with
// prefix, with the given labels (for example
// pod-security.kubernetes.io/enforce=restricted).
func (c *Cluster) CreateNamespace(ctx context.Context, prefix string, labels map[string]string) (*corev1.Namespace, error) {
	ns, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace %s-*: %w", prefix, err)
	}
	return ns, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	const max = 8 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
