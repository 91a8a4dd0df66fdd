package render

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/kvinject/kvinject/agent/config"
)

// Template functions. Templates see no data ("." is nil): everything comes
// through these functions, which have no side effects. Files are named by the
// file name of another (object) file of the same pod.
//
//	secret "f"       the value of secret file f, as written to f (decoded per its encoding)
//	cert "f"         the leaf certificate of cert file f, as PEM
//	privateKey "f"   the private key of cert file f, as PKCS#8 PEM
//	chain "f"        the whole chain of cert file f, leaf first, as PEM
//	key "f"          the public key of key file f, as PEM
//	base64 s         s encoded as standard base64
//	base64decode s   s decoded from standard base64
//	json v           v as JSON (no HTML escaping)
//	quote s          s as a double-quoted string with JSON escapes (valid JSON, YAML and TOML)
//	envQuote s       s in POSIX shell single quotes, for .env files that a shell sources
//	trim s           s without leading and trailing white space
//
// funcs returns the template functions over the rendered object files.
// Parsing and checking use a nil map; every function then fails.
func funcs(files map[string]*rendered) template.FuncMap {
	lookup := func(fn, name string) (*rendered, error) {
		r, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("no object file %q (object files: %s)", name, strings.Join(slices.Sorted(maps.Keys(files)), ", "))
		}
		if want := config.TemplateObjectFuncs[fn]; r.file.Object.Kind != want {
			return nil, fmt.Errorf("file %q is a %s, %s needs a %s", name, r.file.Object.Kind, fn, want)
		}
		return r, nil
	}
	return template.FuncMap{
		"secret": func(name string) (string, error) {
			r, err := lookup("secret", name)
			if err != nil {
				return "", err
			}
			return string(r.data), nil
		},
		"cert": func(name string) (string, error) {
			r, err := lookup("cert", name)
			if err != nil {
				return "", err
			}
			return string(r.cert.LeafPEM()), nil
		},
		"privateKey": func(name string) (string, error) {
			r, err := lookup("privateKey", name)
			if err != nil {
				return "", err
			}
			if r.cert.Key == nil {
				return "", fmt.Errorf("cert %q has no private key (is the key exportable?)", name)
			}
			return string(r.cert.PrivateKeyPEM()), nil
		},
		"chain": func(name string) (string, error) {
			r, err := lookup("chain", name)
			if err != nil {
				return "", err
			}
			return string(r.cert.ChainPEM()), nil
		},
		"key": func(name string) (string, error) {
			r, err := lookup("key", name)
			if err != nil {
				return "", err
			}
			return string(r.data), nil
		},
		"base64": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"base64decode": func(s string) (string, error) {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				// The decoder's error points into the (possibly secret) input.
				return "", errors.New("input is not valid standard base64")
			}
			return string(b), nil
		},
		"json": func(v any) (string, error) {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(v); err != nil {
				return "", errors.New("value cannot be encoded as JSON")
			}
			return strings.TrimSuffix(buf.String(), "\n"), nil
		},
		"quote": func(s string) string {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return strings.TrimSuffix(buf.String(), "\n")
		},
		"envQuote": func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" },
		"trim":     strings.TrimSpace,
	}
}

func parseTemplate(f config.File, fm template.FuncMap) (*template.Template, error) {
	return template.New(f.Name).Option("missingkey=error").Funcs(fm).Parse(f.Template)
}

// Check parses every template of files and checks that each constant file
// reference (secret "f", cert "f", …) names an object file of the right kind,
// so a mistake fails before anything is fetched. Errors name the template
// file and line.
func Check(files []config.File) error {
	kinds := make(map[string]config.Kind, len(files))
	for _, f := range files {
		if f.Object != nil {
			kinds[f.Name] = f.Object.Kind
		}
	}
	var errs []error
	for _, f := range files {
		if f.Object != nil {
			continue
		}
		t, err := parseTemplate(f, funcs(nil))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		config.TemplateObjectRefs(t, func(cmd *parse.CommandNode, fn, file string) {
			loc, _ := t.ErrorContext(cmd)
			switch kind, ok := kinds[file]; {
			case !ok:
				errs = append(errs, fmt.Errorf("template: %s: %s %q: no object file %q (object files: %s)",
					loc, fn, file, file, strings.Join(slices.Sorted(maps.Keys(kinds)), ", ")))
			case kind != config.TemplateObjectFuncs[fn]:
				errs = append(errs, fmt.Errorf("template: %s: %s %q: file %q is a %s, %s needs a %s",
					loc, fn, file, file, kind, fn, config.TemplateObjectFuncs[fn]))
			}
		})
	}
	return errors.Join(errs...)
}

func execTemplate(f config.File, files map[string]*rendered) ([]byte, error) {
	t, err := parseTemplate(f, funcs(files))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, nil); err != nil {
		return nil, err
	}
	if buf.Len() == 0 {
		return nil, fmt.Errorf("template: %s: rendered nothing; refusing to write an empty file", f.Name)
	}
	return buf.Bytes(), nil
}
