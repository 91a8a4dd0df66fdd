package migrate

import (
	"io"
	"os"
	"testing"
)

// Whatever the input, Run does not panic and its report can be written.
func FuzzRun(f *testing.F) {
	for _, p := range []string{"testdata/shop/in.yaml", "testdata/blocked/in.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(dbClass + "\n---\n" + deploymentYAML("web", "        - name: app\n          image: app\n          volumeMounts: [{name: kv, mountPath: /mnt/kv}]", csiVolume)))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := defaults(t)
		if err != nil {
			t.Fatal(err)
		}
		r := Run([]Input{{Name: "in.yaml", Data: b}}, Options{Namespace: "default", Defaults: d})
		if err := r.WriteReport(io.Discard); err != nil {
			t.Fatal(err)
		}
		if r.OK() && len(r.Files) != 1 {
			t.Fatalf("%d output files for one input", len(r.Files))
		}
	})
}
