package podrunner_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/e2e/podrunner"
	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/webhook"
)

const clientID = "6f1c9a52-3c3e-4c52-9f3b-2f0a4c6d8e11"

// env is one control plane, one emulator and one built binary for the tests
// of this package.
type env struct {
	c        *cluster.Cluster
	srv      *fakeazure.Server
	vaultURL string
	caFile   string
	binary   string
}

func setup(t *testing.T) *env {
	t.Helper()
	c := cluster.StartT(t, cluster.Options{ControllerManager: true}) // publishes kube-root-ca.crt, which the ServiceAccount plugin's volume projects
	ctx := t.Context()
	dir := t.TempDir()
	bin, err := podrunner.Build(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{c: c, binary: bin, caFile: filepath.Join(dir, "ca.pem")}
	e.srv, err = fakeazure.Start(context.Background(), fakeazure.Options{IssuerClient: c.IssuerHTTPClient, CAFile: e.caFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Close)
	if e.vaultURL, err = e.srv.AddVault("shop-kv"); err != nil {
		t.Fatal(err)
	}
	return e
}

// createInjected creates ServiceAccount sa (trusted by the emulator for
// clientID) and the pod, injected as the webhook would with its flags set for
// the emulator, and returns the pod name.
func (e *env) createInjected(t *testing.T, ns, sa string, ann map[string]string) string {
	t.Helper()
	ctx := t.Context()
	acct, err := e.c.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: sa, Annotations: map[string]string{
			"azure.workload.identity/client-id": clientID,
			"azure.workload.identity/tenant-id": e.srv.TenantID(),
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.AddFederatedCredential(clientID, e.c.Issuer, "system:serviceaccount:"+ns+":"+sa); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	df := webhook.BindDefaultsFlags(fs)
	if err := fs.Parse([]string{"--agent-image=ghcr.io/kvinject/kvinject:test", "--vault=" + e.vaultURL,
		"--cloud=Custom", "--authority-host=" + e.srv.AuthorityHost(), "--vault-suffix=vault.kvinject.test",
		"--disable-instance-discovery", "--disable-challenge-resource-verification"}); err != nil {
		t.Fatal(err)
	}
	defaults, err := df.Defaults()
	if err != nil {
		t.Fatal(err)
	}
	ann["kvinject.io/inject"] = "true"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns, Annotations: ann},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}
	injected, _, err := injector.Inject(pod, acct, defaults)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Kube.CoreV1().Pods(ns).Create(ctx, injected, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return pod.Name
}

func (e *env) start(t *testing.T, ns, name string) *podrunner.Pod {
	t.Helper()
	p, err := podrunner.Start(t.Context(), podrunner.Options{
		Kube: e.c.Kube, Commands: map[string]string{"/kvinject": e.binary}, CAFile: e.caFile,
	}, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return p
}

func namespace(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	ns, err := c.CreateNamespace(t.Context(), "podrunner", nil)
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func TestPodRunner(t *testing.T) {
	e := setup(t)

	// A native sidecar: the token comes from TokenRequest exactly as the
	// projection asks, the agent starts from the rewritten env, the startup
	// probe gates the app containers, files appear as the app sees them and
	// a rotation reaches them within one interval; SIGTERM stops it cleanly.
	t.Run("sidecar", func(t *testing.T) {
		ns := namespace(t, e.c)
		if _, err := e.srv.SetSecret("shop-kv", "db-password", "first", ""); err != nil {
			t.Fatal(err)
		}
		if err := e.srv.Grant("shop-kv", clientID, fakeazure.RoleSecretsUser, "db-password"); err != nil {
			t.Fatal(err)
		}
		name := e.createInjected(t, ns, "web", map[string]string{
			"kvinject.io/secret-db-password": "db-password",
			"kvinject.io/refresh":            "2s",
		})
		p := e.start(t, ns, name)
		if p.Phase() != corev1.PodRunning {
			t.Fatalf("phase %s, want Running; agent logs:\n%s", p.Phase(), p.Container("kvinject-agent").Logs())
		}
		agent := p.Container("kvinject-agent")
		if !agent.Sidecar || !agent.Ready() || agent.Exited() {
			t.Fatalf("agent sidecar=%v ready=%v exited=%v, want a running, started sidecar", agent.Sidecar, agent.Ready(), agent.Exited())
		}
		// The metrics listener moved to its own loopback port.
		resp, err := http.Get("http://" + agent.MetricsAddr + "/metrics")
		if err != nil {
			t.Fatalf("agent metrics at %q: %v", agent.MetricsAddr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("agent metrics: %s", resp.Status)
		}
		if app := p.Container("app"); app == nil || !app.Skipped {
			t.Fatalf("app container %+v, want skipped (no binary)", app)
		}

		// The token: bound to this pod, audience and lifetime as projected.
		vol := projected(t, p.Pod, "kvinject-token")
		tokenPath := tokenEnvPath(t, agent)
		claims := jwtClaims(t, tokenPath)
		if aud := fmt.Sprint(claims["aud"]); !strings.Contains(aud, vol.Audience) {
			t.Errorf("token aud %v, want %s", claims["aud"], vol.Audience)
		}
		if got, want := int64(claims["exp"].(float64)-claims["iat"].(float64)), *vol.ExpirationSeconds; got != want {
			t.Errorf("token lifetime %ds, want expirationSeconds %d", got, want)
		}
		k8s, _ := claims["kubernetes.io"].(map[string]any)
		if pod, _ := k8s["pod"].(map[string]any); pod["name"] != name || pod["uid"] != string(p.Pod.UID) {
			t.Errorf("token bound to %v, want pod %s/%s", k8s["pod"], name, p.Pod.UID)
		}

		file, err := p.HostPath("app", "/mnt/secrets/db-password")
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(file); err != nil || string(b) != "first" {
			t.Fatalf("app sees db-password %q, %v; want first", b, err)
		}
		if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o440 {
			t.Fatalf("db-password mode %v, %v; want 0440", fi.Mode().Perm(), err)
		}

		if _, err := e.srv.SetSecret("shop-kv", "db-password", "second", ""); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second) // interval 2s ±10%, plus a slow machine
		for {
			if b, _ := os.ReadFile(file); string(b) == "second" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rotation did not reach %s; agent logs:\n%s", file, agent.Logs())
			}
			time.Sleep(100 * time.Millisecond)
		}

		if err := p.UpdateStatus(t.Context()); err != nil {
			t.Fatal(err)
		}
		got, err := e.c.Kube.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s := got.Status.InitContainerStatuses; len(s) != 1 || s[0].State.Running == nil || !s[0].Ready {
			t.Errorf("init container status %+v, want running and ready", s)
		}

		pid := agentPID(t, agent)
		if err := p.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		if code := agent.ExitCode(); code != 0 {
			t.Errorf("agent exit code after SIGTERM %d, want 0; logs:\n%s", code, agent.Logs())
		}
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("agent process %d still exists after Stop", pid)
		}
		if _, err := os.Stat(p.Dir); !os.IsNotExist(err) {
			t.Errorf("scratch dir %s left behind: %v", p.Dir, err)
		}
	})

	// The token is replaced before it expires, as kubelet does (here after
	// 1s instead of 80% of an hour), and stays bound to the pod.
	t.Run("token refresh", func(t *testing.T) {
		restore := podrunner.SetRefreshAfter(func(time.Duration) time.Duration { return time.Second })
		defer restore()
		ns := namespace(t, e.c)
		if _, err := e.srv.SetSecret("shop-kv", "api-token", "t", ""); err != nil {
			t.Fatal(err)
		}
		if err := e.srv.Grant("shop-kv", clientID, fakeazure.RoleSecretsUser, "api-token"); err != nil {
			t.Fatal(err)
		}
		name := e.createInjected(t, ns, "worker", map[string]string{
			"kvinject.io/secret-api-token": "api-token",
			"kvinject.io/refresh":          "1h",
		})
		p := e.start(t, ns, name)
		if p.Phase() != corev1.PodRunning {
			t.Fatalf("phase %s, want Running", p.Phase())
		}
		path := tokenEnvPath(t, p.Container("kvinject-agent"))
		first, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err) // replaced by rename: never missing
			}
			if !bytes.Equal(b, first) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("token file was not refreshed")
			}
			time.Sleep(100 * time.Millisecond)
		}
		claims := jwtClaims(t, path)
		k8s, _ := claims["kubernetes.io"].(map[string]any)
		if pod, _ := k8s["pod"].(map[string]any); pod["uid"] != string(p.Pod.UID) {
			t.Errorf("refreshed token bound to %v, want pod %s", k8s["pod"], p.Pod.UID)
		}
	})

	// An init agent whose identity may not read the secret: the pod fails with
	// the agent's termination message, which UpdateStatus puts where kubectl
	// describe pod shows it.
	t.Run("forbidden", func(t *testing.T) {
		ns := namespace(t, e.c)
		if _, err := e.srv.SetSecret("shop-kv", "payments-key", "x", ""); err != nil {
			t.Fatal(err)
		}
		name := e.createInjected(t, ns, "billing", map[string]string{
			"kvinject.io/secret-payments-key": "payments-key",
		})
		p := e.start(t, ns, name)
		if p.Phase() != corev1.PodFailed {
			t.Fatalf("phase %s, want Failed", p.Phase())
		}
		failed := p.Failed()
		if failed == nil || failed.Name != "kvinject-agent" || failed.ExitCode() == 0 {
			t.Fatalf("failed container %+v, want kvinject-agent with a non-zero exit", failed)
		}
		msg := failed.TerminationMessage()
		for _, want := range []string{"payments-key", "403", clientID} {
			if !strings.Contains(msg, want) {
				t.Errorf("termination message %q does not name %q", msg, want)
			}
		}
		if err := p.UpdateStatus(t.Context()); err != nil {
			t.Fatal(err)
		}
		got, err := e.c.Kube.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := got.Status.InitContainerStatuses
		if len(s) != 1 || s[0].State.Terminated == nil || s[0].State.Terminated.Message != msg || s[0].State.Terminated.Reason != "Error" {
			t.Fatalf("init container status %+v, want terminated with reason Error and message %q", s, msg)
		}
		if got.Status.Phase != corev1.PodPending {
			t.Errorf("phase %s, want Pending (restartPolicy Always: kubelet would retry)", got.Status.Phase)
		}
	})
}

func projected(t *testing.T, pod *corev1.Pod, volume string) *corev1.ServiceAccountTokenProjection {
	t.Helper()
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume && v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					return s.ServiceAccountToken
				}
			}
		}
	}
	t.Fatalf("pod has no projected token volume %s", volume)
	return nil
}

func tokenEnvPath(t *testing.T, c *podrunner.Container) string {
	t.Helper()
	for _, kv := range c.Env {
		if v, ok := strings.CutPrefix(kv, "AZURE_FEDERATED_TOKEN_FILE="); ok {
			return v
		}
	}
	t.Fatal("agent has no AZURE_FEDERATED_TOKEN_FILE")
	return ""
}

func jwtClaims(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(string(b), ".")
	if len(parts) != 3 {
		t.Fatalf("%s is not a JWT", path)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func agentPID(t *testing.T, c *podrunner.Container) int {
	t.Helper()
	if c.PID() == 0 {
		t.Fatal("agent has no PID")
	}
	return c.PID()
}
