package injector

import (
	"text/template"
	"text/template/parse"

	"github.com/kvinject/kvinject/agent/config"
)

func templateFuncNames() []string { return config.TemplateFuncNames }

// parseFuncs has the agent's function names with stand-in bodies: parsing
// only checks that a called function exists, the agent supplies the real ones.
func parseFuncs() template.FuncMap {
	fm := template.FuncMap{}
	for _, name := range templateFuncNames() {
		fm[name] = func(...any) (any, error) { return nil, nil }
	}
	return fm
}

// checkTemplates parses every template file, denies what the agent could
// never render safely (config.TemplateProblems: anything but straight
// pipelines over literal file names) and checks that the files it names
// exist and are objects of the right kind, not other templates.
func (p *parser) checkTemplates(files []config.File) {
	kinds := map[string]config.Kind{}
	for _, f := range files {
		if f.Object != nil {
			kinds[f.Name] = f.Object.Kind
		}
	}
	for _, f := range files {
		if f.Template == "" {
			continue
		}
		key := p.fileSource[f.Name]
		t, err := template.New(f.Name).Funcs(parseFuncs()).Parse(f.Template)
		if err != nil {
			p.problems.add(key, "template does not parse: %v", err)
			continue
		}
		for _, tp := range config.TemplateProblems(t) {
			loc, _ := t.ErrorContext(tp.Node)
			p.problems.add(key, "%s: %s", loc, tp.Message)
		}
		config.TemplateObjectRefs(t, func(_ *parse.CommandNode, fn, ref string) {
			kind, isObject := kinds[ref]
			switch {
			case isObject && kind == config.TemplateObjectFuncs[fn]:
			case isObject:
				p.problems.add(key, "%s %q: file %q is a %s, %s needs a %s", fn, ref, ref, kind, fn, config.TemplateObjectFuncs[fn])
			case p.templates[ref] != "":
				p.problems.add(key, "%s %q names another template; templates can use only object files", fn, ref)
			default:
				p.problems.add(key, "%s %q: no file %q in this pod; name a file from a secret-, cert-, key- annotation or an objects alias", fn, ref, ref)
			}
		})
	}
}
