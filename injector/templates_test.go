package injector

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestHostileTemplatesDenied: every template of the agent's hostile corpus is
// denied at admission, on its annotation, saying what to write instead.
func TestHostileTemplatesDenied(t *testing.T) {
	b, err := os.ReadFile("../agent/config/testdata/hostile-templates.txt")
	if err != nil {
		t.Fatal(err)
	}
	entries := strings.Split(string(b), "\n--- ")[1:]
	if len(entries) < 30 {
		t.Fatalf("corpus has %d entries", len(entries))
	}
	field := Prefix + "template-app.tmpl"
	for _, entry := range entries {
		name, text, _ := strings.Cut(entry, "\n")
		t.Run(name, func(t *testing.T) {
			_, _, err := Inject(testPod(map[string]string{Prefix + "cert-tls": "tls", field: text}), nil, testDefaults())
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("admitted: %v", err)
			}
			for _, p := range inv.Problems {
				if p.Field != field {
					t.Errorf("problem on %s, want %s: %s", p.Field, field, p.Message)
				}
			}
		})
	}
}

// TestStraightPipelinesAdmitted: what the language allows.
func TestStraightPipelinesAdmitted(t *testing.T) {
	for _, text := range []string{
		`DB={{ secret "db-password" | trim | envQuote }}`,
		`{"p": {{ quote (secret "db-password" | trim) }}, "b": {{ "aGk=" | base64decode | quote }}}`,
		`{{ privateKey "tls" }}{{ cert "tls" }}{{ chain "tls" | base64 }}{{/* a comment */}}`,
		`{{ (secret "db-password") | json }}`,
	} {
		if _, _, err := Inject(testPod(map[string]string{Prefix + "cert-tls": "tls", Prefix + "template-a": text}), nil, testDefaults()); err != nil {
			t.Errorf("%s: %v", text, err)
		}
	}
}
