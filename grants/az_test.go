package grants

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The az commands of the goldens parse with the real az CLI (Debian's
// azure-cli): run offline, a command whose arguments parse stops at "Please
// run 'az login'" (exit 1); bad arguments exit 2 before that. Each runs in
// a new network namespace with no interfaces but loopback, so nothing
// leaves the machine, with an empty config directory and telemetry off.
// It skips where az or unshare is missing, unless KVINJECT_REQUIRE_AZ=1
// (make unit as root, where hack/tools.sh installs azure-cli) says it must run.
func TestAzCommandsParse(t *testing.T) {
	skip := t.Skipf
	if os.Getenv("KVINJECT_REQUIRE_AZ") == "1" {
		skip = t.Fatalf
	}
	if _, err := exec.LookPath("az"); err != nil {
		skip("az not installed (hack/tools.sh as root, or apt-get install azure-cli): %v", err)
	}
	if err := exec.Command("unshare", "-n", "true").Run(); err != nil {
		skip("cannot make a network namespace (unshare -n): %v", err)
	}
	seen := map[string]bool{}
	for _, golden := range []string{"testdata/az-object.sh", "testdata/az-vault.sh"} {
		script, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		var vars []string
		for _, line := range logicalLines(string(script)) {
			if m := regexp.MustCompile(`^(principal_\w+)=\$\((az .*)\)$`).FindStringSubmatch(line); m != nil {
				vars = append(vars, m[1]+"=00000000-0000-0000-0000-0000000000ff")
				line = m[2]
			}
			if !strings.HasPrefix(line, "az ") {
				continue
			}
			// One of each command and scope pattern: az takes seconds to start.
			shape := regexp.MustCompile(` --\S+`).ReplaceAllString(line, "")
			shape = strings.Join(strings.Fields(shape)[:3], " ") + " " + golden
			if seen[shape] {
				continue
			}
			seen[shape] = true
			t.Run(shape, func(t *testing.T) { azParses(t, strings.Join(vars, "; ")+"; "+line) })
		}
	}
	if len(seen) != 6 {
		t.Errorf("checked %d commands, want 3 kinds in each of 2 goldens", len(seen))
	}
	// The check tells a bad command from a good one.
	if code, _ := azRun(t, "az role assignment create --assignee-objectid x --role r --scope /s"); code != 2 {
		t.Errorf("a misspelt flag exits %d, want az's parse error 2", code)
	}
}

// logicalLines joins backslash continuations.
func logicalLines(script string) []string {
	return strings.Split(strings.ReplaceAll(script, "\\\n", ""), "\n")
}

func azParses(t *testing.T, command string) {
	if code, stderr := azRun(t, command); code != 1 || !strings.Contains(stderr, "az login") {
		t.Errorf("%s\n: exit %d\n%s", command, code, stderr)
	}
}

// azRun runs a command line with az offline and returns its exit code and stderr.
func azRun(t *testing.T, command string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-n", "bash", "-c", command)
	cmd.Env = append(os.Environ(), "AZURE_CONFIG_DIR="+t.TempDir(), "AZURE_CORE_COLLECT_TELEMETRY=false", "AZURE_CORE_NO_COLOR=true")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	return 0, stderr.String()
}
