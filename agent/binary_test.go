package agent_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// agentBinary returns $KVINJECT_AGENT_BIN, or builds cmd/kvinject-agent.
func agentBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KVINJECT_AGENT_BIN"); p != "" {
		return p
	}
	bin := filepath.Join(t.TempDir(), "kvinject-agent")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../cmd/kvinject-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build kvinject-agent: %v\n%s", err, out)
	}
	return bin
}

// command runs the binary as the injected container would: configuration
// and identity in the environment, logs on stderr (collected for the scan).
func (h *harness) command(bin string, c *config.Config, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	for k, v := range h.env(c) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "KVINJECT_TERMINATION_LOG="+h.termLog)
	cmd.Stdout, cmd.Stderr = &h.logs, &h.logs
	return cmd
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestBinary drives the built kvinject-agent binary through init, probe, a failing
// init and a sidecar that is stopped with SIGTERM, and reports the idle
// sidecar's memory.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kvinject-agent binary")
	}
	bin := agentBinary(t)
	h := newHarness(t)
	h.secret("db-password", "bin-value-Oo7")
	c := h.config(time.Hour, secretFile(h, "password", "db-password", ""))

	// probe before anything was written fails.
	if code := exitCode(h.command(bin, c, "probe").Run()); code != 1 {
		t.Errorf("probe on an empty dir: exit %d, want 1", code)
	}
	if code := exitCode(h.command(bin, c, "init").Run()); code != 0 {
		t.Fatalf("init: exit %d\n%s", code, h.logs.String())
	}
	if h.read("password") != "bin-value-Oo7" {
		t.Errorf("init did not write the file")
	}
	if code := exitCode(h.command(bin, c, "probe").Run()); code != 0 {
		t.Errorf("probe after init: exit %d", code)
	}

	// A failing init exits non-zero with the reason in the termination log.
	failing := *c
	failing.Dir = t.TempDir()
	failing.Files = []config.File{secretFile(h, "password", "not-there", "")}
	if code := exitCode(h.command(bin, &failing, "init", "--deadline=5s").Run()); code != 1 {
		t.Errorf("failing init: exit %d, want 1", code)
	}
	if msg := h.termination(); !strings.Contains(msg, "HTTP 404 SecretNotFound") || !strings.Contains(msg, h.clientID) {
		t.Errorf("termination message: %q", msg)
	}
	if code := exitCode(h.command(bin, c, "bogus").Run()); code != 2 {
		t.Errorf("unknown mode: exit %d, want 2", code)
	}

	// The sidecar: ready, idle, then SIGTERM → exit 0.
	sidecarDir := t.TempDir()
	sc := *c
	sc.Dir = sidecarDir
	sc.MetricsAddr = "127.0.0.1:0"
	cmd := h.command(bin, &sc, "sidecar", "--log-level=debug")
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	eventually(t, "the sidecar's first snapshot", 30*time.Second, func() bool { return agent.Probe(sidecarDir) == nil })
	gets := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID)
	// Idle: the first cycle is over and its garbage handed back.
	eventually(t, "the sidecar to go idle", 30*time.Second, func() bool {
		return strings.Contains(h.logs.String(), `"msg":"next fetch"`)
	})
	if status, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status"); err == nil {
		var mem []string
		for _, line := range strings.Split(string(status), "\n") {
			for _, k := range []string{"VmRSS", "RssAnon", "RssFile", "VmHWM"} {
				if strings.HasPrefix(line, k+":") {
					mem = append(mem, strings.Join(strings.Fields(line), " "))
				}
			}
		}
		t.Logf("idle sidecar memory: %s", strings.Join(mem, ", "))
	}
	if n := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); n != gets {
		t.Errorf("idle sidecar (refresh 1h) made %d more GETs", n-gets)
	}
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		if code := exitCode(err); code != 0 {
			t.Errorf("sidecar after SIGTERM: exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sidecar did not exit within 30s of SIGTERM")
	}
	if !bytes.Contains([]byte(h.logs.String()), []byte(`"msg":"terminating"`)) {
		t.Errorf("no terminating log line")
	}
}
