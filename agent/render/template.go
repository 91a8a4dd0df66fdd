package render

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/kvinject/kvinject/agent/config"
)

// Template functions. Templates see no data ("." is nil): everything comes
// through these functions, which have no side effects. Files are named by the
// file name of another (object) file of the same pod, always as a literal
// (config.TemplateProblems).
//
//	secret "f"       the value of secret file f, as written to f (decoded per its encoding)
//	cert "f"         the leaf certificate of cert file f, as PEM
//	privateKey "f"   the private key of cert file f, as PKCS#8 PEM
//	chain "f"        the whole chain of cert file f, leaf first, as PEM
//	key "f"          the public key of key file f, as PEM
//	base64 s         s encoded as standard base64
//	base64decode s   s decoded from standard base64
//	json s           s as a JSON string (no HTML escaping)
//	quote s          s as a double-quoted string with JSON escapes (valid JSON, YAML and TOML)
//	envQuote s       s in POSIX shell single quotes, for .env files that a shell sources
//	trim s           s without leading and trailing white space
//
// Every function takes and returns strings, and its errors (funcError) never
// hold a value. Each result is charged to the render's budget, which bounds
// the work and memory of a template however it chains them.
//
// funcs returns the template functions over the rendered object files.
// Parsing and checking use a nil map and budget; every function then fails.
func funcs(files map[string]*rendered, b *budget) template.FuncMap {
	lookup := func(fn, name string) (*rendered, error) {
		r, ok := files[name]
		if !ok {
			// The name is not quoted: were it not a literal, it would be a value.
			return nil, funcErrorf("%s: no object file of that name (object files: %s)", fn, strings.Join(slices.Sorted(maps.Keys(files)), ", "))
		}
		if want := config.TemplateObjectFuncs[fn]; r.file.Object.Kind != want {
			return nil, funcErrorf("file %q is a %s, %s needs a %s", name, r.file.Object.Kind, fn, want)
		}
		return r, nil
	}
	object := func(fn string, part func(r *rendered) ([]byte, error)) func(string) (string, error) {
		return func(name string) (string, error) {
			r, err := lookup(fn, name)
			if err != nil {
				return "", err
			}
			data, err := part(r)
			if err != nil {
				return "", err
			}
			return b.charge(fn, string(data))
		}
	}
	helper := func(fn string, f func(string) (string, error)) func(string) (string, error) {
		return func(s string) (string, error) {
			out, err := f(s)
			if err != nil {
				return "", err
			}
			return b.charge(fn, out)
		}
	}
	jsonString := func(s string) (string, error) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s) // a string always encodes
		return strings.TrimSuffix(buf.String(), "\n"), nil
	}
	return template.FuncMap{
		"secret": object("secret", func(r *rendered) ([]byte, error) { return r.data, nil }),
		"cert":   object("cert", func(r *rendered) ([]byte, error) { return r.cert.LeafPEM(), nil }),
		"privateKey": object("privateKey", func(r *rendered) ([]byte, error) {
			if r.cert.Key == nil {
				return nil, funcErrorf("cert %q has no private key (is the key exportable?)", r.file.Name)
			}
			return r.cert.PrivateKeyPEM(), nil
		}),
		"chain": object("chain", func(r *rendered) ([]byte, error) { return r.cert.ChainPEM(), nil }),
		"key":   object("key", func(r *rendered) ([]byte, error) { return r.data, nil }),
		"base64": helper("base64", func(s string) (string, error) {
			return base64.StdEncoding.EncodeToString([]byte(s)), nil
		}),
		"base64decode": helper("base64decode", func(s string) (string, error) {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				// The decoder's error points into the (possibly secret) input.
				return "", funcErrorf("base64decode: input is not valid standard base64")
			}
			return string(b), nil
		}),
		"json":  helper("json", jsonString),
		"quote": helper("quote", jsonString),
		"envQuote": helper("envQuote", func(s string) (string, error) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
		}),
		"trim": helper("trim", func(s string) (string, error) { return strings.TrimSpace(s), nil }),
	}
}

// funcError is an error of a template function: it names files and
// functions, never a value, so it is the one error text of an evaluation
// that reaches a log.
type funcError struct{ msg string }

func (e *funcError) Error() string { return e.msg }

func funcErrorf(format string, args ...any) error {
	return &funcError{msg: fmt.Sprintf(format, args...)}
}

// Limits bound what the templates of one cycle may produce.
type Limits struct {
	// File bounds one template file's output.
	File int
	// Total bounds all files of a snapshot together, objects included.
	Total int
}

// DefaultLimits are generous for .env files, configs and PEM bundles (a Key
// Vault secret is at most 25 KB) and small beside the agent's 64Mi memory
// limit and the volume's default 16Mi, which must hold the old and the new
// snapshot during a swap.
var DefaultLimits = Limits{File: 1 << 20, Total: 4 << 20}

// budget is the work one render may do: every function result is charged,
// so a template that chains base64 a thousand times, or calls secret ten
// thousand times, ends in an error after a bounded amount of work and
// memory instead of exhausting the agent.
type budget struct{ left, total int }

func newBudget(l Limits) *budget { return &budget{left: workFactor * l.Total, total: l.Total} }

// workFactor: a render may compute this many times its total output limit.
const workFactor = 4

func (b *budget) charge(fn, s string) (string, error) {
	if b == nil {
		return "", funcErrorf("%s: not available while checking", fn)
	}
	b.left -= len(s)
	if b.left < 0 {
		return "", funcErrorf("%s: the templates compute more than %d bytes in all; templates are limited to what the volume can hold", fn, workFactor*b.total)
	}
	return s, nil
}

func parseTemplate(f config.File, fm template.FuncMap) (*template.Template, error) {
	return template.New(f.Name).Option("missingkey=error").Funcs(fm).Parse(f.Template)
}

// Check parses every template of files, checks it against the template
// language's rules (config.TemplateProblems) and checks that each file
// reference (secret "f", cert "f", …) names an object file of the right
// kind, so a mistake fails before anything is fetched. Errors name the
// template file, line and column.
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
		t, err := parseTemplate(f, funcs(nil, nil))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range config.TemplateProblems(t) {
			loc, _ := t.ErrorContext(p.Node)
			errs = append(errs, fmt.Errorf("template: %s: %s", loc, p.Message))
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

// execTemplate renders f. Its error names the file and the position in the
// template, and holds only a funcError's or the limit's text: the engine's
// own message (which may quote the data it was handling) is never passed on.
func execTemplate(f config.File, files map[string]*rendered, b *budget, max int) ([]byte, error) {
	t, err := parseTemplate(f, funcs(files, b))
	if err != nil {
		return nil, err
	}
	// Check ran before the first fetch; this is the same rule where it
	// matters, next to the values.
	if ps := config.TemplateProblems(t); len(ps) > 0 {
		loc, _ := t.ErrorContext(ps[0].Node)
		return nil, fmt.Errorf("template: %s: %s", loc, ps[0].Message)
	}
	w := &limitWriter{max: max}
	if err := t.Execute(w, nil); err != nil {
		return nil, execError(f.Name, err)
	}
	if w.buf.Len() == 0 {
		return nil, fmt.Errorf("template: %s: rendered nothing; refusing to write an empty file", f.Name)
	}
	return w.buf.Bytes(), nil
}

// execLocation is the position text/template puts first in an ExecError:
// "template: <name>:<line>:<col>: ". File names hold no colon.
var execLocation = regexp.MustCompile(`^template: ([A-Za-z0-9._-]+:\d+:\d+): `)

func execError(name string, err error) error {
	loc := name
	if m := execLocation.FindStringSubmatch(err.Error()); m != nil {
		loc = m[1]
	}
	var fe *funcError
	if errors.As(err, &fe) {
		return fmt.Errorf("template: %s: %s", loc, fe.msg)
	}
	return fmt.Errorf("template: %s: evaluation failed (the engine's message is withheld: it may quote a value)", loc)
}

// limitWriter holds a template's output up to max bytes.
type limitWriter struct {
	buf bytes.Buffer
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.max {
		return 0, funcErrorf("output is larger than %d bytes, the limit of one template file", w.max)
	}
	return w.buf.Write(p)
}
