package config

import (
	"encoding/json"
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
