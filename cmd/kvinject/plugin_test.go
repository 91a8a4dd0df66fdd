package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommandName(t *testing.T) {
	for argv0, want := range map[string]string{
		"kvinject":                          "kvinject",
		"/usr/local/bin/kvinject":           "kvinject",
		"/root/.krew/bin/kubectl-kvinject":  "kubectl kvinject",
		"kubectl-kvinject":                  "kubectl kvinject",
		"/opt/kvinject/bin/kubectl-kvinjec": "kvinject",
	} {
		if got := commandName(argv0); got != want {
			t.Errorf("commandName(%q) = %q, want %q", argv0, got, want)
		}
	}
	if u := usageText("kubectl-kvinject"); !strings.Contains(u, "  kubectl kvinject explain -f") || strings.Contains(u, "\n  kvinject ") {
		t.Errorf("plugin usage:\n%s", u)
	}
}

// Installed as kubectl-kvinject on PATH, the binary runs as `kubectl
// kvinject`, with the real kubectl (make unit puts the one
// hack/controlplane.sh builds on PATH; skipped without one).
func TestKubectlPlugin(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl on PATH (make unit provides one)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, pluginBinary)
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+filepath.Join(dir, "none"))

	list := exec.Command(kubectl, "plugin", "list", "--name-only")
	list.Env = env
	out, _ := list.CombinedOutput()
	if !strings.Contains(string(out), pluginBinary) {
		t.Errorf("kubectl plugin list does not find %s:\n%s", pluginBinary, out)
	}

	help := exec.Command(kubectl, "kvinject", "help")
	help.Env = env
	out, err = help.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "  kubectl kvinject grants -f") {
		t.Errorf("kubectl kvinject help: %v\n%s", err, out)
	}

	explain := exec.Command(kubectl, "kvinject", "explain", "-f", "../../grants/testdata/shop.yaml", "--tenant-id", "11111111-1111-1111-1111-111111111111", "-o", "json")
	explain.Env = env
	out, err = explain.Output()
	if err != nil || !strings.Contains(string(out), `"federatedCredentialSubject": "system:serviceaccount:shop:orders"`) {
		t.Errorf("kubectl kvinject explain: %v\n%s", err, out)
	}

	injectHelp := exec.Command(kubectl, "kvinject", "inject", "-h")
	injectHelp.Env = env
	out, err = injectHelp.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Usage: kubectl kvinject inject -f") {
		t.Errorf("kubectl kvinject inject -h names another command: %v\n%s", err, out)
	}

	migrate := exec.Command(kubectl, "kvinject", "migrate", "-f", "../../migrate/testdata/shop/in.yaml")
	migrate.Env = env
	out, err = migrate.Output()
	if err != nil || !strings.Contains(string(out), "kvinject.io/mount-path: /mnt/secrets-store") {
		t.Errorf("kubectl kvinject migrate: %v\n%s", err, out)
	}
}
