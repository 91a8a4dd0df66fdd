package migrate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/offline"
	"github.com/kvinject/kvinject/webhook"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./migrate -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./migrate -update rewrites it; review the diff):\n--- got\n%s", p, got)
	}
}

func run(t *testing.T, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Command{Name: "kvinject", Version: "test", Stdout: &out, Stderr: &errOut, Stdin: strings.NewReader("")}.Run(args)
	return out.Bytes(), errOut.Bytes(), code
}

// The whole output and report of kvinject migrate on inputs in the shapes of
// the CSI provider's documentation.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		// Secrets, a pfx certificate with an alias, a public certificate, a
		// key, a pinned version, an Opaque synced Secret read through
		// secretKeyRef and envFrom; a Deployment and a CronJob.
		{"shop", []string{"-f", "testdata/shop/in.yaml"}, 0},
		// An Ingress on a kubernetes.io/tls synced Secret, pod identity, VM
		// identity, two vaults at two paths, another provider, an image pull
		// Secret, a missing class, objects and a path the webhook denies; and
		// a service-principal class whose pod has a workload identity.
		{"blocked", []string{"-f", "testdata/blocked/in.yaml"}, 1},
		{"blocked-partial", []string{"--partial", "-f", "testdata/blocked/in.yaml"}, 0},
		{"rotation", []string{"--rotation-poll-interval", "2m", "testdata/shop/in.yaml"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := run(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			dir := strings.TrimSuffix(strings.TrimSuffix(tc.name, "-partial"), "-x")
			if tc.name == "rotation" {
				dir = "shop"
			}
			golden(t, filepath.Join(dir, tc.name+".report.txt"), stderr)
			if tc.code != 0 {
				if len(stdout) != 0 {
					t.Errorf("wrote output though something did not migrate:\n%s", stdout)
				}
				return
			}
			golden(t, filepath.Join(dir, tc.name+".out.yaml"), stdout)
			admitted(t, stdout)
		})
	}
}

// admitted checks that kvinject inject, with the webhook's defaults, injects
// the migrated output without a problem, and that migrate finds nothing
// left to migrate in it.
func admitted(t *testing.T, out []byte) {
	t.Helper()
	d, err := defaults(t)
	if err != nil {
		t.Fatal(err)
	}
	injected, _, problems := offline.Documents(out, offline.Options{Namespace: "default", Defaults: d})
	if len(problems) > 0 {
		t.Errorf("kvinject inject denies the output: %v", problems)
	}
	if !bytes.Contains(injected, []byte(injector.AnnotationStatus+": "+injector.StatusInjected)) {
		t.Errorf("kvinject inject injected nothing")
	}
	r := Run([]Input{{Name: "out.yaml", Data: out}}, Options{Namespace: "default", Defaults: d})
	for _, w := range r.Migrated {
		t.Errorf("migrate on its own output migrates %s again", w.Name)
	}
}

func defaults(t *testing.T) (injector.Defaults, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	df := webhook.BindDefaultsFlags(fs)
	sf := offline.BindServerFlags(fs) // the newest release, as the command's default
	if err := fs.Parse([]string{"--agent-image", "ghcr.io/kvinject/kvinject:test"}); err != nil {
		t.Fatal(err)
	}
	d, err := df.Defaults()
	if err != nil {
		return d, err
	}
	d.Server, err = sf.Server()
	return d, err
}
