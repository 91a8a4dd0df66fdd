//go:build linux

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvinject/kvinject/e2e/cluster"
)

// The demo, run as `make demo` runs it, prints every step's key line and
// leaves no process behind, also when interrupted with Ctrl-C in the middle.
func TestDemo(t *testing.T) {
	cluster.SkipOrFailWithoutAssets(t)
	assets, _ := cluster.Assets()
	if _, err := cluster.NodeAssets(); err != nil || os.Getuid() != 0 {
		if cluster.Required() {
			t.Fatalf("e2e required (%s=1) but the demo's node cannot run here (root, %s): %v", cluster.RequireEnv, cluster.NodeAssetsEnv, err)
		}
		t.Skipf("the demo runs a real node: run as root with %s=$(hack/node.sh) (%v)", cluster.NodeAssetsEnv, err)
	}
	// Orphans of the demo become our children, so a process it leaks cannot
	// hide by being reparented to init.
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", errno)
	}
	dir := t.TempDir()
	kvinject, err := buildKvinject(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	demoBin := filepath.Join(dir, "demo")
	if out, err := exec.Command("go", "build", "-o", demoBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build demo: %v\n%s", err, out)
	}
	command := func(ctx context.Context, assets string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, demoBin, "--assets", assets, "--kvinject", kvinject)
		cmd.Dir = "../.." // the repository root, as make runs it
		return cmd
	}

	t.Run("complete", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		out, err := command(ctx, assets).CombinedOutput()
		if err != nil {
			t.Fatalf("demo: %v\n%s", err, out)
		}
		s := string(out)
		for _, want := range []string{
			"==> Step 1/7:", "==> Step 2/7:", "==> Step 3/7:", "==> Step 4/7:", "==> Step 5/7:", "==> Step 6/7:", "==> Step 7/7:",
			"registered MutatingWebhookConfiguration \"kvinject\" from kubectl kustomize manifests/",
			"deployment.apps/web created",
			"+    kvinject.io/status: injected",
			"+  initContainers:",
			"+    name: kvinject-agent",
			"decision=patched objects=",
			// The agent's placeholder at the API token path (no reinvocation).
			"name: kvinject-no-api-token",
			"startup probe `kvinject-agent probe` passed",
			"$ kubectl get pods -n shop -o wide",
			"Running",
			`-r--r-----     28  db-password: "correct-horse-battery-staple"`,
			"signing.pub: PEM: PUBLIC KEY",
			"tls.pem: PEM: PRIVATE KEY, CERTIFICATE web-tls.kvinject.test, CERTIFICATE fakeazure Test Issuing CA 01, CERTIFICATE fakeazure Test Root CA",
			`"correct-horse-battery-staple" → "staple-battery-horse-correct"`,
			"DB_PASSWORD='staple-battery-horse-correct'",
			// Step 5: an environment variable, restarted in place on rotation.
			"deployment.apps/orders created",
			`KVINJECT-APP {"env":{"ORDERS_API_TOKEN":"demo-token-one"},...}`,
			`KVINJECT-APP {"env":{"ORDERS_API_TOKEN":"demo-token-two"},...}`,
			"restart counts: kvinject-agent=1 kvinject-env-check=1 web=1",
			"(unchanged), IP ",
			"Init:Error",
			"State:      Terminated",
			"secret payments-api-key (file payments-api-key) in vault",
			"HTTP 403 ForbiddenByRbac",
			"Exit Code:    1",
			"webhook: stopped, exit code 0",
			"kubelet, containerd, kube-scheduler, kube-controller-manager, kube-apiserver, etcd: stopped",
			"no process left behind",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("demo output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", s)
		}
		noChildren(t)
	})

	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		cmd := command(ctx, assets)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var (
			mu  sync.Mutex
			out strings.Builder
		)
		reached := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stdout)
			once := sync.Once{}
			for sc.Scan() {
				mu.Lock()
				out.WriteString(sc.Text() + "\n")
				mu.Unlock()
				// At step 4 everything runs: control plane, webhook, emulator, agent.
				if strings.HasPrefix(sc.Text(), "==> Step 4/7") {
					once.Do(func() { close(reached) })
				}
			}
		}()
		select {
		case <-reached:
		case <-ctx.Done():
			t.Fatal("demo did not reach step 4")
		}
		// What a terminal's Ctrl-C sends.
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		mu.Lock()
		s := out.String()
		mu.Unlock()
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("exit code after Ctrl-C %d (%v), want 130", code, err)
		}
		for _, want := range []string{"==> Step 7/7:", "no process left behind", "Interrupted; everything the demo started is stopped."} {
			if !strings.Contains(s, want) {
				t.Errorf("interrupted demo output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", s)
		}
		noChildren(t)
	})
}

// noChildren fails if any process (a leaked grandchild of the demo, reparented
// to this subreaper) is still running.
func noChildren(t *testing.T) {
	t.Helper()
	var left []string
	for _, c := range children() {
		if b, err := os.ReadFile("/proc/" + strings.Fields(c)[0] + "/stat"); err == nil {
			s := string(b)
			if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "Z" {
				continue // exited, not yet reaped
			}
		}
		left = append(left, c)
	}
	if len(left) > 0 {
		t.Errorf("processes left behind by the demo: %v", left)
	}
}
