package config

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"text/template"
	"text/template/parse"
)

func TestFileModeJSON(t *testing.T) {
	b, err := json.Marshal(File{Name: "a", Mode: 0o440, Template: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"mode":"0440"`) {
		t.Errorf("encoded %s, want the mode as \"0440\"", b)
	}
	for in, want := range map[string]FileMode{`"0440"`: 0o440, `"640"`: 0o640, `288`: 0o440} {
		var m FileMode
		if err := json.Unmarshal([]byte(in), &m); err != nil || m != want {
			t.Errorf("decode %s = %#o, %v; want %#o", in, m, err, want)
		}
	}
	for _, in := range []string{`"0x1ff"`, `"rw-r-----"`, `-1`, `true`} {
		var m FileMode
		if err := json.Unmarshal([]byte(in), &m); err == nil {
			t.Errorf("decode %s = %#o, want an error", in, m)
		}
	}
}

func TestTemplateObjectRefs(t *testing.T) {
	funcs := template.FuncMap{}
	for _, n := range TemplateFuncNames {
		funcs[n] = func(...any) (any, error) { return nil, nil }
	}
	src := `{{ secret "a" }}{{ if true }}{{ cert "b" | base64 }}{{ else }}{{ with key "c" }}{{ . }}{{ end }}{{ end }}` +
		`{{ range $x := list }}{{ chain "d" }}{{ end }}{{ define "t" }}{{ privateKey "e" }}{{ end }}{{ template "t" (secret "f") }}` +
		`{{ secret .Dynamic }}{{ trim "not-a-file" }}`
	funcs["list"] = func() []int { return nil }
	tmpl, err := template.New("x").Funcs(funcs).Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	TemplateObjectRefs(tmpl, func(_ *parse.CommandNode, fn, file string) { got = append(got, fn+":"+file) })
	slices.Sort(got)
	want := []string{"cert:b", "chain:d", "key:c", "privateKey:e", "secret:a", "secret:f"}
	if !slices.Equal(got, want) {
		t.Errorf("refs = %v, want %v", got, want)
	}
}

// TestVersion: Load reads the versions it supports (a config without one is
// version 1, from before the field) and refuses any other, naming both.
func TestVersion(t *testing.T) {
	for in, want := range map[string]int{`{"dir":"/d"}`: 1, `{"version":1,"dir":"/d"}`: 1, `{"version":2,"dir":"/d"}`: 2} {
		c, err := Load([]byte(in))
		if err != nil || c.Version != want {
			t.Errorf("Load(%s) = %+v, %v; want version %d", in, c, err, want)
		}
	}
	for _, v := range []string{"3", "-1", "99"} {
		_, err := Load([]byte(`{"version":` + v + `,"dir":"/d","files":[{"name":"x"}]}`))
		var ve *VersionError
		if !errors.As(err, &ve) {
			t.Errorf("version %s: error %v, want a *VersionError", v, err)
			continue
		}
		for _, want := range []string{"schema version " + v + ",", "supports version 1, 2:", "Fix: run an agent image of the same release as the webhook"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("version %s: %q lacks %q", v, err, want)
			}
		}
	}
}

// TestEnvFile: a variable must name one of the files.
func TestEnvFile(t *testing.T) {
	_, err := Load([]byte(`{"version":2,"dir":"/d","files":[{"name":"a","template":"x"}],"env":[{"name":"A","file":"b"}]}`))
	if err == nil || !strings.Contains(err.Error(), `env[0] "A": file "b" is not one of files`) {
		t.Errorf("Load: %v", err)
	}
}
