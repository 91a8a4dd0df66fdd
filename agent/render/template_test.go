package render

import (
	"encoding/base64"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/agent/config"
)

func TestFuncNamesMatchTheContract(t *testing.T) {
	got := slices.Sorted(maps.Keys(funcs(nil, nil)))
	want := slices.Sorted(slices.Values(config.TemplateFuncNames))
	if !slices.Equal(got, want) {
		t.Fatalf("template functions %v, config.TemplateFuncNames %v", got, want)
	}
}

func tmplFile(name, text string) config.File {
	return config.File{Name: name, Mode: 0o440, Template: text}
}

func TestTemplates(t *testing.T) {
	c := newChain(t)
	files := []config.File{
		secretFile("password", ""),
		secretFile("user", ""),
		certFile("tls", ""),
		keyFile("signing"),
		tmplFile("db.env", `DB_USER={{ secret "user" | trim | envQuote }}
DB_PASSWORD={{ secret "password" | envQuote }}
`),
		tmplFile("config.json", `{"password": {{ secret "password" | json }}, "user": {{ quote (secret "user" | trim) }}, "b64": {{ secret "user" | trim | base64 | quote }}, "back": {{ "aGk=" | base64decode | quote }}}`),
		tmplFile("bundle.pem", `{{ privateKey "tls" }}{{ cert "tls" }}--
{{ chain "tls" }}{{ key "signing" }}`),
	}
	jwk := JWK{Kty: "RSA", N: []byte{0xc5, 0x01, 0x03}, E: []byte{1, 0, 1}}
	objects := map[string]Object{
		"password": {Value: `it's "q" $x`},
		"user":     {Value: "app\n"},
		"tls":      {Value: pemCert(c.leaf) + pemKey(t, c.leafKey) + pemCert(c.root) + pemCert(c.inter), ContentType: ContentTypePEM},
		"signing":  {Key: &jwk},
	}
	if err := Check(files); err != nil {
		t.Fatal(err)
	}
	out, _, err := Files(files, objects, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range out {
		got[f.Name] = string(f.Data)
	}
	if want := "DB_USER='app'\nDB_PASSWORD='it'\\''s \"q\" $x'\n"; got["db.env"] != want {
		t.Errorf("db.env = %q, want %q", got["db.env"], want)
	}
	if want := `{"password": "it's \"q\" $x", "user": "app", "b64": "` + base64.StdEncoding.EncodeToString([]byte("app")) + `", "back": "hi"}`; got["config.json"] != want {
		t.Errorf("config.json = %q, want %q", got["config.json"], want)
	}
	keyPEM, _ := PublicKeyPEM(&jwk)
	if want := pemKey(t, c.leafKey) + pemCert(c.leaf) + "--\n" + pemCert(c.leaf) + pemCert(c.inter) + pemCert(c.root) + string(keyPEM); got["bundle.pem"] != want {
		t.Errorf("bundle.pem = %q, want %q", got["bundle.pem"], want)
	}
}

func TestTemplateErrorsNameFileAndLine(t *testing.T) {
	objFiles := []config.File{secretFile("password", ""), certFile("tls", "")}
	for _, tc := range []struct {
		name, text string
		want       []string // substrings of the error
		checked    bool     // Check finds it before any fetch
	}{
		{"unknown file", "a\n{{ secret \"nope\" }}", []string{"bad.tmpl:2", `no object file`, "password, tls"}, true},
		{"wrong kind", "x\n\n{{ cert \"password\" }}", []string{"bad.tmpl:3", `"password" is a secret, cert needs a cert`}, true},
		{"unknown func", "x\n{{ secrets \"password\" }}", []string{"bad.tmpl:2", `"secrets" not defined`}, true},
		{"syntax", "{{ secret \"password\" ", []string{"bad.tmpl:1"}, true},
		{"dynamic ref", "x\n\n{{ \"nope\" | secret }}", []string{"bad.tmpl:3", `secret takes exactly one file name in double quotes`}, true},
		{"field on nothing", "x\n{{ .password }}", []string{"bad.tmpl:2", "templates see no data"}, true},
		{"bad base64", "{{ secret \"password\" | base64decode }}", []string{"bad.tmpl:1", "not valid standard base64"}, false},
		{"empty output", `{{ "" }}`, []string{"bad.tmpl", "empty file"}, false},
	} {
		files := append(slices.Clone(objFiles), tmplFile("bad.tmpl", tc.text))
		checkErr := Check(files)
		if tc.checked != (checkErr != nil) {
			t.Errorf("%s: Check() = %v, want an error: %v", tc.name, checkErr, tc.checked)
		}
		c := newChain(t)
		out, _, err := Files(files, map[string]Object{
			"password": {Value: "SECRET-VALUE-1"},
			"tls":      {Value: pemCert(c.leaf), ContentType: ContentTypePEM},
		}, DefaultLimits)
		if err == nil {
			t.Errorf("%s: rendered %q", tc.name, out[len(out)-1].Data)
			continue
		}
		for _, e := range []error{checkErr, err} {
			if e == nil {
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Error(), w) {
					t.Errorf("%s: error %q does not contain %q", tc.name, e, w)
				}
			}
			if strings.Contains(e.Error(), "SECRET-VALUE") {
				t.Errorf("%s: error reveals the value: %v", tc.name, e)
			}
		}
	}
}
