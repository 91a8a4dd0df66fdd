package injector

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// update rewrites golden files and the generated docs instead of comparing.
var update = flag.Bool("update", false, "rewrite testdata/golden/*.golden, README.md and docs/annotations.md")

// testDefaults are what the golden files are rendered with: no vault, client
// or tenant, so each case shows where those come from; an identity-binding
// proxy as AKS's webhook would name it, off unless a pod turns it on.
func testDefaults() Defaults {
	return Defaults{Image: "ghcr.io/kvinject/kvinject:v0.0.0-test", Server: Server{Version: Newest}, IdentityBinding: IdentityBinding{
		TokenProxy: "https://kubernetes.default.svc", SNIName: "0123456789abcdef.ib.test",
		CAConfigMap: IdentityBindingCAConfigMap, Audience: IdentityBindingAudience}}
}

// TestGolden injects every testdata/golden/*.yaml (a Pod, optionally followed
// by its ServiceAccount) and compares the whole result, warnings or error with
// the .golden file next to it. Review changes with git diff after -update.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			pod, sa := readCase(t, in)
			got := render(t, pod, sa, testDefaults())
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./injector -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output; review with go test ./injector -update && git diff\n--- got\n%s", golden, got)
			}
		})
	}
}

func readCase(t *testing.T, path string) (*corev1.Pod, *corev1.ServiceAccount) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(data), "\n---\n")
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &pod); err != nil {
		t.Fatalf("pod: %v", err)
	}
	if len(docs) < 2 {
		return &pod, nil
	}
	var sa corev1.ServiceAccount
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &sa); err != nil {
		t.Fatalf("service account: %v", err)
	}
	return &pod, &sa
}

// render is the golden form of one Inject call: warnings and error as
// comments, then the pod.
func render(t *testing.T, pod *corev1.Pod, sa *corev1.ServiceAccount, d Defaults) []byte {
	t.Helper()
	out, r, err := Inject(pod, sa, d)
	warnings := r.Warnings
	var b bytes.Buffer
	for _, w := range warnings {
		b.WriteString("# warning: " + w + "\n")
	}
	if err != nil {
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("error is %T, want *InvalidError: %v", err, err)
		}
		for _, p := range inv.Problems {
			b.WriteString("# error: " + p.String() + "\n")
		}
		return b.Bytes()
	}
	y, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(y)
	return b.Bytes()
}
