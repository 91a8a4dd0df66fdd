package grants

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func run(t *testing.T, sub string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := Command{Name: "kvinject", Version: "test", Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut}
	if sub == "explain" {
		code = c.Explain(args)
	} else {
		code = c.Grants(args)
	}
	return code, out.String(), errOut.String()
}

// The command's flags reach Derive and Render as the goldens' options do.
func TestGrantsCommandMatchesGolden(t *testing.T) {
	code, out, stderr := run(t, "grants", "", "-f", "testdata/shop.yaml", "--tenant-id", tenant,
		"--subscription", "22222222-2222-2222-2222-222222222222", "--resource-group", "rg-shop",
		"--vault-resource-group", "shared-kv=rg-shared", "--identity-resource-group", "rg-identities",
		"--identity", clientOrders+"=id-orders", "--issuer", issuerEU, "--issuer", issuerUS)
	want, _ := os.ReadFile("testdata/az-object.sh")
	if code != 0 || out != string(want) {
		t.Errorf("exit %d, stderr %s, output differs from az-object.sh:\n%s", code, stderr, out)
	}
	if !strings.Contains(stderr, "warning: client "+clientPayments+" has no --identity") {
		t.Errorf("stderr lacks the unnamed identity: %s", stderr)
	}
	code, out, _ = run(t, "explain", "", "-f", "testdata/shop.yaml", "--tenant-id", tenant,
		"--subscription", "22222222-2222-2222-2222-222222222222", "--resource-group", "rg-shop",
		"--vault-resource-group", "shared-kv=rg-shared")
	want, _ = os.ReadFile("testdata/explain.txt")
	if code != 0 || out != string(want) {
		t.Errorf("explain: exit %d, output differs from explain.txt:\n%s", code, out)
	}
}

func TestCommandErrors(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns, annotations: {kvinject.io/inject: \"true\", kvinject.io/secret-s: kv-one/s}}\nspec: {containers: [{name: app, image: app}]}\n"
	base := []string{"-f", "-", "--subscription", "s", "--resource-group", "rg", "--issuer", issuerEU}
	for _, tc := range []struct {
		name  string
		sub   string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"no input", "explain", "", nil, 2, "give one input with -f FILE"},
		{"bad output", "explain", pod, []string{"-f", "-", "--sa-client-id", clientOrders, "--tenant-id", tenant, "-o", "yaml"}, 2, `-o "yaml" is not text or json`},
		{"bad default flag", "explain", pod, []string{"-f", "-", "--sidecar", "side"}, 2, "--sidecar (KVINJECT_SIDECAR)"},
		{"no identity", "explain", pod, []string{"-f", "-"}, 1, "no client ID for the agent"},
		{"missing subscription", "grants", pod, []string{"-f", "-", "--sa-client-id", clientOrders, "--tenant-id", tenant, "--resource-group", "rg", "--issuer", issuerEU}, 2, "--subscription is required"},
		{"bad format", "grants", pod, append(base, "--sa-client-id", clientOrders, "--tenant-id", tenant, "--format", "pulumi"), 2, `--format "pulumi" is not one of az, terraform, bicep`},
		{"bad scope", "grants", pod, append(base, "--sa-client-id", clientOrders, "--tenant-id", tenant, "--scope", "tenant"), 2, `scope "tenant" is not object or vault`},
		{"bad pair", "grants", pod, append(base, "--identity", "nameonly"), 2, `"nameonly" is not KEY=VALUE`},
		{"not a workload", "explain", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, annotations: {kvinject.io/inject: \"true\"}}\n", []string{"-f", "-"}, 1, "kind ConfigMap is not injected"},
		{"nothing opted in", "explain", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app, image: app}]}\n", []string{"-f", "-"}, 0, `no workload in the input has kvinject.io/inject: "true"`},
		{"unknown field", "explain", strings.Replace(pod, "spec:", "spec: {hostNetwrk: true}\nx:", 1), []string{"-f", "-"}, 1, "unknown field"},
	} {
		code, _, stderr := run(t, tc.sub, tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %s; want exit %d and %q", tc.name, code, stderr, tc.code, tc.want)
		}
	}
}
