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
	inputs, err := filepath.Glob("../injector/testdata/golden/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(string(data), "\n---\n")
		var pod corev1.Pod
		if err := yaml.Unmarshal([]byte(docs[0]), &pod); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		sa := webSA
		if len(docs) > 1 {
			sa = &corev1.ServiceAccount{}
			if err := yaml.Unmarshal([]byte(docs[1]), sa); err != nil {
				t.Fatalf("%s: %v", in, err)
			}
		}
		out, _, err := injector.Inject(&pod, sa, testDefaults())
		if err != nil {
			continue
		}
		if raw := agentConfig(out); raw != "" {
			configs[filepath.Base(in)] = []byte(raw)
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
