package webhook

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

// TestConfigObjects holds configObjects to what the agent reads: for the
// config of every golden pod the injector accepts, and for a config whose
// strings encoding/json escapes, it lists the objects of config.Load's files.
func TestConfigObjects(t *testing.T) {
	configs := map[string][]byte{}
	for _, g := range goldenInputs(t) {
		out, _, err := injector.Inject(g.pod, g.sa, testDefaults())
		if err != nil {
			continue
		}
		if raw := agentConfig(out); raw != "" {
			configs[g.name] = []byte(raw)
		}
	}
	if len(configs) < 3 {
		t.Fatalf("only %d golden configs", len(configs))
	}
	escaped, err := json.Marshal(config.Config{Dir: "/d", Files: []config.File{
		{Name: "a", Object: &config.Object{Vault: "https://v<&>\u2028.vault.azure.net/", Kind: config.KindSecret, Name: `n"\`, Version: "é"}},
		{Name: "t", Template: `{{ secret "a" }} "object":{"vault":"x"}`},
		{Name: "b", Object: &config.Object{Vault: "https://w.vault.azure.net/", Kind: config.KindCert, Name: "c"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	configs["escaped"] = escaped

	for name, raw := range configs {
		c, err := config.Load(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var want []config.Object
		for _, f := range c.Files {
			if f.Object != nil {
				want = append(want, *f.Object)
			}
		}
		got, err := configObjects(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: objects\n got %+v\nwant %+v", name, got, want)
		}
	}

	for _, bad := range []string{"", "[]", `{"files":{}}`, `{"files":[1]}`, `{"files":[{"object":[]}]}`,
		`{"files":[{"object":{"vault":1}}]}`, `{"files":[{"object":{"vault":"x"`} {
		if _, err := configObjects([]byte(bad)); err == nil {
			t.Errorf("configObjects(%q) succeeded", bad)
		}
	}
}

// goldenInput is one of the injector's golden inputs: a Pod, and the
// ServiceAccount that follows it in the file or else webSA.
type goldenInput struct {
	name string
	pod  *corev1.Pod
	sa   *corev1.ServiceAccount
}

func goldenInputs(t *testing.T) []goldenInput {
	t.Helper()
	inputs, err := filepath.Glob("../injector/testdata/golden/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	var out []goldenInput
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(string(data), "\n---\n")
		g := goldenInput{name: filepath.Base(in), pod: &corev1.Pod{}, sa: webSA}
		if err := yaml.UnmarshalStrict([]byte(docs[0]), g.pod); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if len(docs) > 1 {
			g.sa = &corev1.ServiceAccount{}
			if err := yaml.UnmarshalStrict([]byte(docs[1]), g.sa); err != nil {
				t.Fatalf("%s: %v", in, err)
			}
		}
		out = append(out, g)
	}
	return out
}
