package render

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/agent/config"
)

// TestExecErrorsWithheldWithoutTheShapeCheck is the second line of defence:
// even a template the shape check would deny, executed over real values,
// fails with an error that names the file and position and holds no value.
func TestExecErrorsWithheldWithoutTheShapeCheck(t *testing.T) {
	b, err := os.ReadFile("../config/testdata/hostile-templates.txt")
	if err != nil {
		t.Fatal(err)
	}
	const value = "Zr8kWq3Pn5Lt7Vx9Bm2Hd4Jf6Gs1Kc0!"
	c := newChain(t)
	files := []config.File{secretFile("db-password", ""), certFile("tls", "")}
	byName := map[string]*rendered{}
	for _, f := range files {
		obj := Object{Value: value}
		if f.Name == "tls" {
			obj = Object{Value: pemCert(c.leaf) + pemKey(t, c.leafKey), ContentType: ContentTypePEM}
		}
		r, err := renderObject(f, obj)
		if err != nil {
			t.Fatal(err)
		}
		byName[f.Name] = r
	}
	for _, entry := range strings.Split(string(b), "\n--- ")[1:] {
		name, text, _ := strings.Cut(entry, "\n")
		f := tmplFile("app.tmpl", text)
		tm, err := parseTemplate(f, funcs(byName, newBudget(DefaultLimits)))
		if err != nil {
			continue // a parse error sees only the template's text
		}
		var out bytes.Buffer
		err = tm.Execute(&out, nil)
		if err == nil {
			continue // it rendered (into a file): not an error channel
		}
		msg := execError(f.Name, err).Error()
		if !strings.HasPrefix(msg, "template: app.tmpl") {
			t.Errorf("%s: %q does not name the file", name, msg)
		}
		for i := 0; i+6 <= len(value); i += 3 {
			if strings.Contains(msg, value[i:i+6]) {
				t.Errorf("%s: %q reveals a part of the value", name, msg)
				break
			}
		}
	}
}
