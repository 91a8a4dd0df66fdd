// Command kvinject-helm renders and lints a Helm chart with Helm's own
// packages (chart loader, template engine, linter), the same code paths
// `helm template` and `helm lint --strict` run, without the helm CLI's
// registry, plugin and cluster dependencies. hack/tools.sh builds it into a
// cache outside the repository; the chart tests (charts/) run it.
//
//	kvinject-helm template [-namespace ns] [-name release] [-f values.yaml]... [-set k=v]... CHART
//	kvinject-helm lint [-namespace ns] [-f values.yaml]... [-set k=v]... CHART
//	kvinject-helm package [-out dir] CHART
//
// template prints every rendered manifest (NOTES.txt and empty documents
// left out) as one YAML stream in Helm's install order (Namespace first,
// then PriorityClass, ServiceAccount, ...), each document headed by
// "# Source: <file>", as helm template does, so `kubectl apply -f -` of it
// creates objects in the order helm install would. lint prints every message and
// exits 1 on any warning or error (helm lint --strict). package writes
// CHART as <name>-<version>.tgz into -out, as helm package does, and prints
// its path.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kvinject-helm template|lint [flags] CHART")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	namespace := fs.String("namespace", "kvinject-system", "release namespace")
	name := fs.String("name", "kvinject", "release name")
	out := fs.String("out", ".", "package: directory for the .tgz")
	var files, sets list
	fs.Var(&files, "f", "values file (repeatable)")
	fs.Var(&sets, "set", "key=value as helm --set (repeatable)")
	_ = fs.Parse(os.Args[2:])
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "kvinject-helm: exactly one chart directory")
		os.Exit(2)
	}
	vals, err := values(files, sets)
	if err != nil {
		fail(err)
	}
	switch cmd {
	case "template":
		err = template(fs.Arg(0), *name, *namespace, vals)
	case "lint":
		err = lintChart(fs.Arg(0), *namespace, vals)
	case "package":
		err = packageChart(fs.Arg(0), *out)
	default:
		err = fmt.Errorf("unknown command %q: template, lint or package", cmd)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kvinject-helm:", err)
	os.Exit(1)
}

// values merges -f files and then -set pairs, as helm does.
func values(files, sets []string) (map[string]any, error) {
	base := map[string]any{}
	for _, f := range files {
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			return nil, fmt.Errorf("-f %s: %w", f, err)
		}
		base = chartutil.MergeTables(v.AsMap(), base)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, base); err != nil {
			return nil, fmt.Errorf("-set %s: %w", s, err)
		}
	}
	return base, nil
}

func template(dir, name, namespace string, vals map[string]any) error {
	chrt, err := loader.Load(dir)
	if err != nil {
		return err
	}
	if err := chartutil.ProcessDependenciesWithMerge(chrt, vals); err != nil {
		return err
	}
	top, err := chartutil.ToRenderValues(chrt, vals, chartutil.ReleaseOptions{
		Name: name, Namespace: namespace, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return err
	}
	out, err := engine.Render(chrt, top)
	if err != nil {
		return err
	}
	// As helm template: NOTES.txt out, then every document in Helm's
	// install order (kinds such as Namespace first), hooks rejected.
	for f := range out {
		if strings.HasSuffix(f, "NOTES.txt") {
			delete(out, f)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(out, chartutil.DefaultCapabilities.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return err
	}
	if len(hooks) > 0 {
		return fmt.Errorf("%d hooks: this chart has none, and kvinject-helm does not render them", len(hooks))
	}
	var b strings.Builder
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, strings.TrimSpace(m.Content))
	}
	_, err = os.Stdout.WriteString(b.String())
	return err
}

func lintChart(dir, namespace string, vals map[string]any) error {
	l := lint.All(dir, vals, namespace, false)
	bad := 0
	for _, m := range l.Messages {
		fmt.Println(m.Error())
		if m.Severity >= support.WarningSev {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%s: %d lint warnings or errors", dir, bad)
	}
	fmt.Printf("%s: linted, %d messages, no warnings or errors\n", dir, len(l.Messages))
	return nil
}

func packageChart(dir, out string) error {
	chrt, err := loader.Load(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	p, err := chartutil.Save(chrt, out)
	if err != nil {
		return err
	}
	fmt.Println(p)
	return nil
}
