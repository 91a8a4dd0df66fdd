package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/webhook"
)

// The product stack the webhook and agent tests share, set up once per test
// binary on the shared control plane: the Key Vault / Entra ID emulator
// (trusting the API server's own service-account issuer), the kvinject
// webhook in-process on loopback, running with the RBAC of manifests/, and
// the MutatingWebhookConfiguration of manifests/ pointed at it.
//
// Tests isolate themselves by namespace and by client id; the only global
// state is the webhook itself, which TestWebhookUnavailable stops and
// restarts (it is not parallel, so no other test runs meanwhile).

const (
	// manifestsDir is the kustomize install, relative to this package.
	manifestsDir = "../manifests"
	// installNamespace is where manifests/ installs the webhook.
	installNamespace = "kvinject-system"
	// webhookSA is the webhook's ServiceAccount in manifests/; the in-process
	// webhook impersonates it, so the manifests' RBAC is what it runs with.
	webhookSA = "kvinject-webhook"
	// localConfigName is the name the local copy of the manifests'
	// MutatingWebhookConfiguration is installed under, so that the
	// server-side dry run of manifests/ (TestManifestsDryRun) meets no object
	// of its own name with another client config. It sorts before the
	// reinvocation test's second webhook, like "kvinject" does.
	localConfigName = "kvinject-e2e"
	// agentImage is the webhook's --agent-image.
	agentImage = "ghcr.io/kvinject/kvinject:e2e"
	// vaultName is the emulated vault every test reads from (the webhook's
	// --vault, as a URL: a name would resolve through DNS).
	vaultName = "shop-kv"
	// ibSNIName and ibCAConfigMap are the webhook's identity-binding token
	// proxy settings besides its URL: the server name the emulated proxy
	// answers to, and the ConfigMap (key ca.crt) that holds its own CA in
	// the namespaces of the tests that use it.
	ibSNIName     = "0123456789abcdef.ib.kvinject.test"
	ibCAConfigMap = "kvinject-e2e-ib-ca"
)

type stack struct {
	c        *cluster.Cluster
	srv      *fakeazure.Server
	proxy    *fakeazure.TokenProxy // the AKS identity-binding token proxy
	vaultURL string
	caFile   string // the emulator's CA, the agents' extra CA (kvinject.io/ca-configmap)
	defaults injector.Defaults
	hook     *localWebhook
	dir      string // the emulator's CA, the webhook's certificate; removed by stopStack
}

var (
	stackOnce   sync.Once
	sharedStack *stack
	stackErr    error
)

// testStack returns the shared stack, setting it up on first use, with the
// webhook serving.
func testStack(t *testing.T) *stack {
	t.Helper()
	c := testCluster(t)
	stackOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		sharedStack, stackErr = newStack(ctx, c)
	})
	if stackErr != nil {
		t.Fatalf("set up emulator and webhook: %v", stackErr)
	}
	return sharedStack
}

func newStack(ctx context.Context, c *cluster.Cluster) (*stack, error) {
	dir, err := os.MkdirTemp("", "kvinject-e2e-stack-")
	if err != nil {
		return nil, err
	}
	s := &stack{c: c, dir: dir, caFile: filepath.Join(dir, "azure-ca.pem")}
	// The emulator lives as long as the test binary.
	opts := fakeazure.Options{IssuerClient: c.IssuerHTTPClient, CAFile: s.caFile}
	if c.HasNode() {
		// Pods reach the test process on their bridge's address.
		opts.Host = net.ParseIP(cluster.BridgeIP)
	}
	s.srv, err = fakeazure.Start(context.Background(), opts)
	if err != nil {
		return nil, fmt.Errorf("start Azure emulator: %w", err)
	}
	if s.vaultURL, err = s.srv.AddVault(vaultName); err != nil {
		return nil, err
	}

	if s.proxy, err = s.srv.StartTokenProxy(fakeazure.TokenProxyOptions{SNIName: ibSNIName}); err != nil {
		return nil, err
	}

	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	df := webhook.BindDefaultsFlags(fs)
	// Identity bindings are configured as a platform team would, and off
	// unless a pod asks for them.
	if err := fs.Parse([]string{"--agent-image=" + agentImage, "--vault=" + s.vaultURL, "--tenant-id=" + s.srv.TenantID(),
		"--cloud=Custom", "--authority-host=" + s.srv.AuthorityHost(), "--vault-suffix=vault.kvinject.test",
		"--disable-instance-discovery", "--disable-challenge-resource-verification",
		"--identity-binding-token-proxy=" + s.proxy.URL(), "--identity-binding-sni-name=" + ibSNIName,
		"--identity-binding-ca-configmap=" + ibCAConfigMap}); err != nil {
		return nil, err
	}
	if s.defaults, err = df.Defaults(); err != nil {
		return nil, err
	}

	docs, err := renderManifests(ctx)
	if err != nil {
		return nil, err
	}
	// The webhook's namespace, ServiceAccount and RBAC, for real.
	var rbac [][]byte
	for _, kind := range []string{"Namespace/" + installNamespace, "ServiceAccount/" + webhookSA,
		"ClusterRole/" + webhookSA, "ClusterRoleBinding/" + webhookSA} {
		d, ok := docs[kind]
		if !ok {
			return nil, fmt.Errorf("manifests/ renders no %s", kind)
		}
		rbac = append(rbac, d)
	}
	if _, _, err := kubectl(ctx, c, bytes.Join(rbac, []byte("\n---\n")), "apply", "--server-side", "-f", "-"); err != nil {
		return nil, err
	}

	s.hook, err = newLocalWebhook(dir)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + installNamespace + ":" + webhookSA}
	s.hook.opts = webhook.Options{
		Defaults: s.defaults, Host: "127.0.0.1", Port: s.hook.port, CertDir: dir,
		GracefulShutdownTimeout: 10 * time.Second, Config: cfg, Logger: slog.New(s.hook.audit),
	}
	if err := s.hook.start(ctx); err != nil {
		return nil, err
	}

	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(docs["MutatingWebhookConfiguration/kvinject"], mwc); err != nil {
		return nil, fmt.Errorf("decode the MutatingWebhookConfiguration of manifests/: %w", err)
	}
	mwc.Name = localConfigName
	for i := range mwc.Webhooks {
		pointAt(&mwc.Webhooks[i].ClientConfig, "127.0.0.1:"+strconv.Itoa(s.hook.port), s.hook.caPEM)
	}
	if _, err := c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("install the MutatingWebhookConfiguration: %w", err)
	}
	if err := s.waitInjecting(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// pointAt rewrites a client config from the in-cluster Service to the local
// server, keeping the path, as envtest's WebhookInstallOptions does.
func pointAt(cc *admissionregistrationv1.WebhookClientConfig, hostPort string, caPEM []byte) {
	path := "/"
	if cc.Service != nil && cc.Service.Path != nil {
		path = *cc.Service.Path
	}
	url := "https://" + hostPort + path
	cc.Service, cc.URL, cc.CABundle = nil, &url, caPEM
}

// waitInjecting waits until the API server calls the webhook for an
// annotated pod: it picks up new webhook configurations asynchronously, and
// a restarted webhook may take a moment to listen. A server-side dry run
// probes it without creating anything.
func (s *stack) waitInjecting(ctx context.Context) error {
	const probeNS = "e2e-webhook-probe"
	_, err := s.c.Kube.CoreV1().Namespaces().Get(ctx, probeNS, metav1.GetOptions{})
	if err != nil {
		if _, err := s.c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: probeNS}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := s.c.Kube.CoreV1().ServiceAccounts(probeNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Annotations: map[string]string{
			injector.AnnotationInject: "true", injector.Prefix + "secret-probe": "probe",
			injector.AnnotationClientID: "00000000-0000-0000-0000-0000000000aa",
		}},
		Spec: corev1.PodSpec{ServiceAccountName: "probe", Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := s.c.Kube.CoreV1().Pods(probeNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err
			return false, nil
		}
		last = fmt.Errorf("dry-run pod not injected (annotations %v)", got.Annotations)
		return got.Annotations[injector.AnnotationStatus] == injector.StatusInjected, nil
	})
	if err != nil {
		return fmt.Errorf("webhook not called for an annotated pod: %w (last: %v)", err, last)
	}
	return nil
}

// localWebhook is the kvinject webhook served in-process on loopback; it
// can be stopped and started again on the same port.
type localWebhook struct {
	port  int
	caPEM []byte
	opts  webhook.Options
	audit *auditLog

	mu     sync.Mutex
	cancel context.CancelFunc
	done   <-chan error
}

func newLocalWebhook(certDir string) (*localWebhook, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	caPEM, err := fakeazure.NewServingCertDir(certDir)
	if err != nil {
		return nil, err
	}
	return &localWebhook{port: port, caPEM: caPEM, audit: &auditLog{}}, nil
}

func (w *localWebhook) start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		return errors.New("webhook already running")
	}
	// The server outlives ctx, which only bounds the start.
	runCtx, cancel := context.WithCancel(context.Background())
	startErr := make(chan error, 1)
	var done <-chan error
	go func() {
		var err error
		done, err = webhook.Start(runCtx, w.opts)
		startErr <- err
	}()
	select {
	case err := <-startErr:
		if err != nil {
			cancel()
			return fmt.Errorf("start webhook: %w", err)
		}
	case <-ctx.Done():
		cancel()
		return fmt.Errorf("start webhook: %w", ctx.Err())
	}
	w.cancel, w.done = cancel, done
	return nil
}

func (w *localWebhook) stop() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel == nil {
		return nil
	}
	w.cancel()
	err := <-w.done
	w.cancel, w.done = nil, nil
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// review is one audit line of the webhook ("admission review").
type review struct {
	Decision, Namespace, Pod string
	DryRun                   bool
}

// auditLog is the webhook's log handler: it keeps the audit lines, which
// name every review's namespace, pod and decision, so tests can count the
// reviews of their own pods while others run in parallel.
type auditLog struct {
	mu      sync.Mutex
	reviews []review
}

func (a *auditLog) Enabled(context.Context, slog.Level) bool { return true }
func (a *auditLog) WithAttrs([]slog.Attr) slog.Handler       { return a }
func (a *auditLog) WithGroup(string) slog.Handler            { return a }

func (a *auditLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "admission review" {
		return nil
	}
	var rv review
	r.Attrs(func(at slog.Attr) bool {
		switch at.Key {
		case "decision":
			rv.Decision = at.Value.String()
		case "namespace":
			rv.Namespace = at.Value.String()
		case "pod":
			rv.Pod = at.Value.String()
		case "dryRun":
			rv.DryRun = at.Value.Bool()
		}
		return true
	})
	a.mu.Lock()
	a.reviews = append(a.reviews, rv)
	a.mu.Unlock()
	return nil
}

// decisions returns the decisions of the reviews (not dry runs) of pod
// namespace/name in order; name may be a generateName.
func (a *auditLog) decisions(namespace, name string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, r := range a.reviews {
		if r.Namespace == namespace && r.Pod == name && !r.DryRun {
			out = append(out, r.Decision)
		}
	}
	return out
}

// inNamespace counts the reviews (dry runs included) of a namespace.
func (a *auditLog) inNamespace(namespace string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range a.reviews {
		if r.Namespace == namespace {
			n++
		}
	}
	return n
}

// renderManifests renders manifests/ with kubectl kustomize and returns each
// document by "Kind/name".
func renderManifests(ctx context.Context) (map[string][]byte, error) {
	out, _, err := runKubectl(ctx, nil, "kustomize", manifestsDir)
	if err != nil {
		return nil, err
	}
	docs := map[string][]byte{}
	for _, d := range bytes.Split(out, []byte("\n---\n")) {
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(d, &meta); err != nil {
			return nil, fmt.Errorf("kubectl kustomize %s: %w", manifestsDir, err)
		}
		docs[meta.Kind+"/"+meta.Name] = d
	}
	return docs, nil
}

// kubectl runs kubectl against the cluster with stdin and returns its
// stdout and stderr (where it prints the API server's warnings).
func kubectl(ctx context.Context, c *cluster.Cluster, stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	return runKubectl(ctx, stdin, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
}

func runKubectl(ctx context.Context, stdin []byte, args ...string) (stdout, stderr []byte, err error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, cluster.Kubectl(), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, nil, fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes(), errOut.Bytes(), nil
}

// stopStack stops the webhook, if it was started, before the control plane
// goes: its ServiceAccount watch would otherwise hold kube-apiserver's
// shutdown until envtest's stop timeout.
func stopStack(s *stack) {
	if s == nil {
		return
	}
	if err := s.hook.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop webhook: %v\n", err)
	}
	s.srv.Close()
	os.RemoveAll(s.dir)
}
