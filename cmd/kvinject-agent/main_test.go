package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/agent/config"
)

// TestLinksNoKubernetesClient: the agent runs in every injected pod, so it
// links none of the webhook's machinery: no Kubernetes packages at all
// (client-go, apimachinery), no controller-runtime, no CEL.
func TestLinksNoKubernetesClient(t *testing.T) {
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed %d packages", len(deps))
	}
	for _, dep := range deps {
		for _, banned := range []string{"k8s.io/", "sigs.k8s.io/", "github.com/google/cel-go", "github.com/kvinject/kvinject/webhook", "github.com/kvinject/kvinject/injector"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("kvinject-agent links %s", dep)
			}
		}
	}
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	getenv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage: kvinject-agent"},
		{[]string{"bogus"}, 2, `unknown mode "bogus"`},
		{[]string{"init", "--log-level=loud"}, 2, `--log-level "loud"`},
		{[]string{"init", "extra"}, 2, "unexpected arguments"},
		{[]string{"probe", "--dir", t.TempDir()}, 1, "not ready"},
		{[]string{"version"}, 0, "kvinject-agent dev"},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := run(context.Background(), tc.args, getenv, &stdout, &stderr); code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, output %q; want %d and %q", tc.args, code, stdout.String()+stderr.String(), tc.code, tc.want)
		}
	}
}

// TestDependenciesFollowTheData: fetch (keyvault) → render → write
// (snapshot); no package depends on the one that consumes its output.
func TestDependenciesFollowTheData(t *testing.T) {
	for pkg, banned := range map[string][]string{
		"../../agent/keyvault": {"agent/render", "agent/snapshot"},
		"../../agent/render":   {"github.com/kvinject/kvinject/agent\n"},
		"../../agent/snapshot": {"agent/render", "agent/keyvault"},
	} {
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range banned {
			if strings.Contains(string(out)+"\n", b) {
				t.Errorf("%s depends on %s", pkg, strings.TrimSpace(b))
			}
		}
	}
}

// TestEnvCheck: env-check passes only when the kubelet set the check
// variable from the env file, and otherwise says why and what to do, in the
// termination message too.
func TestEnvCheck(t *testing.T) {
	termLog := filepath.Join(t.TempDir(), "termination-log")
	for value, code := range map[string]int{config.EnvCheckValue: 0, "": 1} {
		var stdout, stderr bytes.Buffer
		getenv := func(k string) string {
			if k == config.EnvCheck {
				return value
			}
			return ""
		}
		if got := run(t.Context(), []string{"env-check", "--termination-log", termLog}, getenv, &stdout, &stderr); got != code {
			t.Errorf("%s=%q: exit %d, want %d (%s)", config.EnvCheck, value, got, code, stderr.String())
		}
	}
	msg, err := os.ReadFile(termLog)
	if err != nil || !strings.Contains(string(msg), "without the EnvFiles feature") || !strings.Contains(string(msg), "Fix: run the pod on nodes whose kubelet is 1.35") {
		t.Errorf("termination message %q (%v)", msg, err)
	}
}
