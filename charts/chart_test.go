// Package charts holds the Helm chart of kvinject (charts/kvinject). Its
// tests render the chart with Helm's own engine and linter (kvinject-helm,
// built by hack/tools.sh), compare the default rendering with `kubectl
// kustomize manifests/`, and test the monitoring objects with promtool and
// Prometheus's PromQL parser. `make unit` puts the tools on PATH.
package charts

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/webhook"
)

const chart = "kvinject"

// helmLabels are the standard labels Helm charts put on every object's
// metadata (https://helm.sh/docs/chart_best_practices/labels/); the
// kustomize install has no release, so it has none of them. They are the
// only difference the comparison allows, and only in metadata.labels.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed (built by hack/tools.sh; `make unit` puts it on PATH): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(tool(t, name), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

// object is one rendered document, decoded as JSON would be.
type object = map[string]any

func key(o object) string {
	md, _ := o["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	return fmt.Sprintf("%s %s %s/%s", o["apiVersion"], o["kind"], ns, name)
}

// get is the object of that kind and namespace/name, whatever its apiVersion.
func get(objs map[string]object, kind, name string) object {
	for _, o := range objs {
		if o["kind"] == kind && strings.HasSuffix(key(o), " "+kind+" "+name) {
			return o
		}
	}
	return nil
}

// decodeStream splits a YAML stream into objects keyed by kind, namespace and name.
func decodeStream(t *testing.T, out []byte) map[string]object {
	t.Helper()
	objs := map[string]object{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered document is not YAML: %v\n%s", err, doc)
		}
		if o == nil {
			continue
		}
		k := key(o)
		if _, dup := objs[k]; dup {
			t.Errorf("%s rendered twice", k)
		}
		objs[k] = o
	}
	return objs
}

// helm renders the chart with the default release (kvinject in
// kvinject-system) and the given -set/-f arguments.
func helm(t *testing.T, args ...string) map[string]object {
	t.Helper()
	return decodeStream(t, run(t, "kvinject-helm", append(append([]string{"template"}, args...), chart)...))
}

func helmFails(t *testing.T, want string, args ...string) {
	t.Helper()
	cmd := exec.Command(tool(t, "kvinject-helm"), append(append([]string{"template"}, args...), chart)...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("helm template %v: err %v, output %s; want a failure naming %q", args, err, out, want)
	}
}

func TestDefaultEqualsKustomize(t *testing.T) {
	chartObjs := helm(t)
	kustomized := decodeStream(t, run(t, "kubectl", "kustomize", "../manifests"))
	for k, o := range chartObjs {
		labels, _ := o["metadata"].(map[string]any)["labels"].(map[string]any)
		for _, l := range helmLabels {
			if _, ok := labels[l]; !ok {
				t.Errorf("%s lacks Helm's standard label %s", k, l)
			}
			delete(labels, l)
		}
	}
	for k, want := range kustomized {
		got, ok := chartObjs[k]
		if !ok {
			t.Errorf("chart does not render %s", k)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			g, _ := yaml.Marshal(got)
			w, _ := yaml.Marshal(want)
			t.Errorf("%s differs from manifests/.\nchart:\n%s\nkustomize:\n%s", k, g, w)
		}
	}
	for k := range chartObjs {
		if _, ok := kustomized[k]; !ok {
			t.Errorf("chart renders %s, manifests/ does not", k)
		}
	}
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", "testdata/all-values.yaml"}, {"--set", "tls.mode=selfManaged"}} {
		run(t, "kvinject-helm", append(append([]string{"lint"}, args...), chart)...)
	}
}

// strict decodes built-in kinds, failing on unknown or duplicate fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Every value in testdata/all-values.yaml shows where a user expects it.
func TestValues(t *testing.T) {
	objs := helm(t, "-f", "testdata/all-values.yaml")
	for k, o := range objs {
		if gvk := fmt.Sprint(o["apiVersion"]); !strings.Contains(gvk, "coreos.com") && !strings.Contains(gvk, "cert-manager") {
			b, _ := json.Marshal(o)
			if _, _, err := strict.Decode(b, nil, nil); err != nil {
				t.Errorf("%s: %v", k, err)
			}
		}
	}
	dep := decodeInto(t, get(objs, "Deployment", "kvinject-system/kvinject-webhook"), &appsv1.Deployment{})
	spec := dep.Spec.Template.Spec
	c := spec.Containers[0]
	wantImage := "registry.example/kvinject:v1.2.3@sha256:" + strings.Repeat("ab", 32)
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if c.Image != wantImage || env["KVINJECT_AGENT_IMAGE"] != wantImage || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %q (%s), KVINJECT_AGENT_IMAGE %q; want both %q", c.Image, c.ImagePullPolicy, env["KVINJECT_AGENT_IMAGE"], wantImage)
	}
	if *dep.Spec.Replicas != 3 || spec.NodeSelector["pool"] != "system" || len(spec.Tolerations) != 1 || spec.Affinity == nil ||
		len(spec.ImagePullSecrets) != 1 || spec.PriorityClassName != "system-cluster-critical" || len(spec.TopologySpreadConstraints) != 0 ||
		dep.Spec.Template.Labels["team"] != "platform" || dep.Spec.Template.Annotations["example.com/a"] != "b" {
		t.Errorf("pod spec does not follow the values: %+v", spec)
	}
	if c.Resources.Limits.Cpu().String() != "500m" {
		t.Errorf("resources %+v, want the CPU limit Azure Policy asks for", c.Resources)
	}
	// Every KVINJECT_* variable the chart sets is the twin of a real webhook
	// flag, with a value that flag accepts.
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	webhook.BindFlags(fs)
	twins := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) { twins[webhook.EnvName(f.Name)] = f })
	for name, v := range env {
		if !strings.HasPrefix(name, webhook.EnvPrefix) {
			continue
		}
		f, ok := twins[name]
		if !ok {
			t.Errorf("%s is no webhook flag's twin", name)
			continue
		}
		if err := fs.Set(f.Name, v); err != nil {
			t.Errorf("%s=%q: --%s refuses it: %v", name, v, f.Name, err)
		}
	}
	for name, want := range map[string]string{
		"KVINJECT_VAULT": "https://kv.vault.azure.net/", "KVINJECT_TENANT_ID": "00000000-0000-0000-0000-000000000001",
		"KVINJECT_REFRESH": "1h", "KVINJECT_DISABLE_INSTANCE_DISCOVERY": "true",
		"KVINJECT_AGENT_CPU_LIMIT": "100m", "KVINJECT_SIDECAR": "classic", "KVINJECT_CA_CONFIGMAP": "corp-root-ca",
		"KVINJECT_AGENT_METRICS": "false", "KVINJECT_IDENTITY_BINDING": "true",
		"KVINJECT_IDENTITY_BINDING_TOKEN_PROXY": "https://kubernetes.default.svc", "KVINJECT_IDENTITY_BINDING_SNI_NAME": "0123456789abcdef.ib.test",
		"KVINJECT_IDENTITY_BINDING_CA_CONFIGMAP": "cluster-ca", "KVINJECT_IDENTITY_BINDING_AUDIENCE": "api://AKSIdentityBinding",
	} {
		if env[name] != want {
			t.Errorf("%s=%q, want %q", name, env[name], want)
		}
	}

	// TLS from a Secret you provide: no cert-manager objects, your CA as the caBundle.
	for k := range objs {
		if strings.Contains(k, " Certificate ") || strings.Contains(k, " Issuer ") {
			t.Errorf("tls.mode=secret renders %s", k)
		}
	}
	mwc := decodeInto(t, get(objs, "MutatingWebhookConfiguration", "/kvinject"), &admissionregistrationv1.MutatingWebhookConfiguration{})
	w := mwc.Webhooks[0]
	ca, _ := os.ReadFile("testdata/ca.pem")
	if !bytes.Equal(w.ClientConfig.CABundle, ca) || mwc.Annotations["cert-manager.io/inject-ca-from"] != "" {
		t.Errorf("caBundle %q, annotations %v; want testdata/ca.pem and no CA injection", w.ClientConfig.CABundle, mwc.Annotations)
	}
	if spec.Volumes[0].Secret.SecretName != "my-webhook-tls" {
		t.Errorf("mounted secret %q", spec.Volumes[0].Secret.SecretName)
	}
	if *w.FailurePolicy != admissionregistrationv1.Ignore || *w.TimeoutSeconds != 3 ||
		w.NamespaceSelector.MatchLabels["kvinject.io/enabled"] != "true" || w.ObjectSelector.MatchLabels["kvinject.io/pod"] != "true" {
		t.Errorf("webhook registration does not follow the values: %+v", w)
	}
	if mwc.Labels["admissions.enforcer/disabled"] != "true" {
		t.Errorf("MutatingWebhookConfiguration labels %v lack webhook.configurationLabels", mwc.Labels)
	}
	for _, k := range [][2]string{{"Namespace", "/kvinject-system"}, {"PriorityClass", "/kvinject-webhook"}, {"PodDisruptionBudget", "kvinject-system/kvinject-webhook"}} {
		if get(objs, k[0], k[1]) != nil {
			t.Errorf("%s rendered although turned off", k)
		}
	}

	helmFails(t, "tls.caBundle", "-set", "tls.mode=secret", "-set", "tls.secretName=x")
	helmFails(t, "tls.secretName", "-set", "tls.mode=secret")
	// values.schema.json names the value at fault.
	helmFails(t, "'/tls/mode': value must be one of 'certManager', 'secret', 'selfManaged'", "-set", "tls.mode=none")
	helmFails(t, "additional properties 'replicas' not allowed", "-set", "replicas=3")
	helmFails(t, "'/webhook/failurePolicy'", "-set", "webhook.failurePolicy=Deny")
	helmFails(t, "'/image/digest'", "-set", "image.digest=v1.2.3")
}

func decodeInto[T runtime.Object](t *testing.T, o object, into T) T {
	t.Helper()
	if o == nil {
		t.Fatal("object not rendered")
	}
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := strict.Decode(b, nil, into); err != nil {
		t.Fatalf("%s: %v", key(o), err)
	}
	return into
}

func TestMonitoring(t *testing.T) {
	objs := helm(t, "-f", "testdata/all-values.yaml")
	for _, group := range []string{"monitoring.coreos.com", "azmonitoring.coreos.com"} {
		var sm, pm object
		for _, o := range objs {
			if o["apiVersion"] == group+"/v1" {
				switch o["kind"] {
				case "ServiceMonitor":
					sm = o
				case "PodMonitor":
					pm = o
				}
			}
		}
		if sm == nil || pm == nil {
			t.Errorf("%s: ServiceMonitor %v, PodMonitor %v", group, sm != nil, pm != nil)
			continue
		}
		// The ServiceMonitor selects the webhook's Service and its metrics port.
		svc := decodeInto(t, get(objs, "Service", "kvinject-system/kvinject-webhook"), &corev1.Service{})
		sel, _ := field(sm, "spec", "selector", "matchLabels").(map[string]any)
		for k, v := range sel {
			if svc.Labels[k] != v {
				t.Errorf("%s ServiceMonitor selects %s=%v, the Service has %q", group, k, v, svc.Labels[k])
			}
		}
		port := field(sm, "spec", "endpoints").([]any)[0].(map[string]any)["port"]
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
			t.Errorf("%s ServiceMonitor scrapes port %v, not a port of the Service", group, port)
		}
		// The PodMonitor scrapes the port the injector declares on a sidecar.
		if p := field(pm, "spec", "podMetricsEndpoints").([]any)[0].(map[string]any)["port"]; p != sidecarMetricsPort(t) {
			t.Errorf("%s PodMonitor port %v, the injector names the agent's metrics port %q", group, p, sidecarMetricsPort(t))
		}
	}
	if get(objs, "ConfigMap", "kvinject-system/kvinject-dashboard") == nil {
		t.Error("no dashboard ConfigMap")
	}
	// Off by default, so the default rendering equals manifests/.
	for k := range helm(t) {
		if strings.Contains(k, "Monitor") || strings.Contains(k, "PrometheusRule") || strings.Contains(k, "ConfigMap") {
			t.Errorf("default rendering has %s", k)
		}
	}
}

func field(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

// The alerts, rendered with the default release, pass promtool's checks and
// the unit tests in testdata/rules_test.yaml, and name only metrics kvinject
// exports (and the few documented outside ones).
func TestPrometheusRule(t *testing.T) {
	objs := helm(t, "-set", "monitoring.prometheusRule.enabled=true")
	rule := get(objs, "PrometheusRule", "kvinject-system/kvinject")
	if rule == nil {
		t.Fatal("no PrometheusRule")
	}
	dir := t.TempDir()
	spec := rule["spec"].(map[string]any)
	write := func(name string, v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run(t, "promtool", "check", "rules", write("full.yaml", spec))

	var exprs []string
	alerts := map[string]bool{}
	for _, g := range spec["groups"].([]any) {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			r := r.(map[string]any)
			a, _ := r["annotations"].(map[string]any)
			if a["summary"] == nil || a["description"] == nil {
				t.Errorf("alert %v lacks a summary or description", r["alert"])
			}
			delete(r, "annotations")
			exprs = append(exprs, r["expr"].(string))
			alerts[r["alert"].(string)] = true
		}
	}
	write("rules.yaml", spec)
	tests, err := os.ReadFile("testdata/rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Every alert has a unit test.
	for a := range alerts {
		if !strings.Contains(string(tests), "alertname: "+a+",") && !strings.Contains(string(tests), "alertname: "+a+"\n") {
			t.Errorf("alert %s has no test in testdata/rules_test.yaml", a)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "promtool", "test", "rules", filepath.Join(dir, "rules_test.yaml"))

	// Metrics from elsewhere the alerts may use: Prometheus's own up,
	// kube-state-metrics and cert-manager (docs/operations.md names them).
	outside := []string{"up", "kube_endpoint_address", "certmanager_certificate_expiration_timestamp_seconds"}
	checkNames(t, "PrometheusRule", exprs, outside)
}

// The dashboard is valid JSON, and every query parses as PromQL and names
// only metrics kvinject exports.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("kvinject/files/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	// Grafana's variables, as Grafana substitutes them before querying.
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$namespace", "kvinject-system", "$agent_namespace", ".+")
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, grafana.Replace(tg.Expr))
		}
	}
	if len(exprs) < 8 {
		t.Fatalf("dashboard has %d queries", len(exprs))
	}
	// label_values(metric, label) variable queries.
	lv := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*), *[a-zA-Z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Definition == "" {
			continue
		}
		m := lv.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(metric, label)", v.Name, v.Definition)
			continue
		}
		exprs = append(exprs, m[1])
	}
	checkNames(t, "dashboard", exprs, nil)
}

// checkNames parses each expression with Prometheus's parser (promqlnames)
// and fails on a metric name that kvinject's code does not export.
func checkNames(t *testing.T, what string, exprs, outside []string) {
	t.Helper()
	var in strings.Builder
	for _, e := range exprs {
		in.WriteString(strings.ReplaceAll(e, "\n", `\n`) + "\n")
	}
	cmd := exec.Command(tool(t, "promqlnames"))
	cmd.Stdin = strings.NewReader(in.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: PromQL does not parse: %v\n%s", what, err, stderr.String())
	}
	exported := exportedMetrics(t)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	for i, line := range lines {
		for _, name := range strings.Fields(line) {
			if !exported[name] && !slices.Contains(outside, name) {
				t.Errorf("%s: %q uses %s, which kvinject does not export", what, exprs[i], name)
			}
		}
	}
}

// exportedMetrics reads the metric names the webhook and the agent register:
// the Name of every prometheus.{Counter,Gauge,Histogram,Summary}Opts literal
// in their non-test sources, with a histogram's _bucket, _sum and _count.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, root := range []string{"../webhook", "../agent"} {
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.CompositeLit)
				if !ok {
					return true
				}
				sel, ok := lit.Type.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				for _, el := range lit.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok || fmt.Sprint(kv.Key) != "Name" {
						continue
					}
					if bl, ok := kv.Value.(*ast.BasicLit); ok {
						name, _ := strconv.Unquote(bl.Value)
						names[name] = true
						if sel.Sel.Name == "HistogramOpts" || sel.Sel.Name == "SummaryOpts" {
							for _, s := range []string{"_bucket", "_sum", "_count"} {
								names[name+s] = true
							}
						}
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !names["kvinject_webhook_reviews_total"] || !names["kvinject_agent_cycles_total"] {
		t.Fatalf("found no kvinject metrics in webhook/ and agent/: %v", names)
	}
	return names
}

// sidecarMetricsPort is the name of the metrics port of the agent the
// injector adds to a refreshing pod.
func sidecarMetricsPort(t *testing.T) string {
	t.Helper()
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	pod.Name, pod.Namespace = "web", "shop"
	pod.Annotations = map[string]string{"kvinject.io/inject": "true", "kvinject.io/refresh": "5m",
		"kvinject.io/vault": "shop-kv", "kvinject.io/secret-db": "db",
		"kvinject.io/client-id": "00000000-0000-0000-0000-000000000001", "kvinject.io/tenant-id": "contoso.onmicrosoft.com"}
	out, _, err := injector.Inject(pod, nil, injector.Defaults{Image: "kvinject"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range slices.Concat(out.Spec.InitContainers, out.Spec.Containers) {
		for _, p := range c.Ports {
			if c.Name == injector.AgentContainer && p.ContainerPort == 9797 {
				return p.Name
			}
		}
	}
	t.Fatal("the injected sidecar declares no metrics port")
	return ""
}

// TLS without cert-manager: no cert-manager objects, no caBundle rendered
// (the webhook keeps it), flags that name the rendered Secret, configuration
// and Service, and RBAC for exactly those.
func TestSelfManagedTLS(t *testing.T) {
	objs := helm(t, "-set", "tls.mode=selfManaged")
	for k := range objs {
		if strings.Contains(k, "cert-manager") {
			t.Errorf("tls.mode=selfManaged renders %s", k)
		}
	}
	mwc := decodeInto(t, get(objs, "MutatingWebhookConfiguration", "/kvinject"), &admissionregistrationv1.MutatingWebhookConfiguration{})
	if len(mwc.Webhooks[0].ClientConfig.CABundle) != 0 || len(mwc.Annotations) != 0 {
		t.Errorf("caBundle %q, annotations %v; want neither", mwc.Webhooks[0].ClientConfig.CABundle, mwc.Annotations)
	}
	dep := decodeInto(t, get(objs, "Deployment", "kvinject-system/kvinject-webhook"), &appsv1.Deployment{})
	spec := dep.Spec.Template.Spec
	c := spec.Containers[0]
	if v := spec.Volumes[0]; v.Name != "tls" || v.EmptyDir == nil || v.Secret != nil || c.VolumeMounts[0].ReadOnly {
		t.Errorf("tls volume %+v, mount %+v; want a writable emptyDir", v, c.VolumeMounts[0])
	}

	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	f := webhook.BindFlags(fs)
	for _, e := range c.Env {
		if e.Name == "KVINJECT_NAMESPACE" {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
				t.Errorf("KVINJECT_NAMESPACE = %+v; want the pod's namespace", e)
			}
			t.Setenv(e.Name, dep.Namespace) // what the downward API gives
		} else if e.ValueFrom == nil {
			t.Setenv(e.Name, e.Value)
		}
	}
	if c.Args[0] != "webhook" {
		t.Fatalf("args %q", c.Args)
	}
	if err := f.Parse(c.Args[1:]); err != nil {
		t.Fatal(err)
	}
	got := f.SelfManagedTLS()
	want := webhook.SelfManagedTLS{Enabled: true, Namespace: "kvinject-system", SecretName: "kvinject-webhook-tls", Configuration: mwc.Name, Service: "kvinject-webhook"}
	if got != want {
		t.Errorf("flags give %+v; want %+v", got, want)
	}
	if get(objs, "Service", "kvinject-system/"+got.Service) == nil {
		t.Errorf("--service=%s is no rendered Service", got.Service)
	}

	role := decodeInto(t, get(objs, "Role", "kvinject-system/kvinject-webhook-tls"), &rbacv1.Role{})
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{got.SecretName}, Verbs: []string{"get", "update"}},
	}
	if !reflect.DeepEqual(role.Rules, wantRules) {
		t.Errorf("Role rules %+v; want %+v", role.Rules, wantRules)
	}
	cr := decodeInto(t, get(objs, "ClusterRole", "/kvinject-webhook-tls"), &rbacv1.ClusterRole{})
	wantRules = []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{mwc.Name}, Verbs: []string{"get", "patch"}}}
	if !reflect.DeepEqual(cr.Rules, wantRules) {
		t.Errorf("ClusterRole rules %+v; want %+v", cr.Rules, wantRules)
	}
	for _, k := range [][2]string{{"RoleBinding", "kvinject-system/kvinject-webhook-tls"}, {"ClusterRoleBinding", "/kvinject-webhook-tls"}} {
		if get(objs, k[0], k[1]) == nil {
			t.Errorf("%s %s not rendered", k[0], k[1])
		}
	}
	if get(helm(t), "Role", "kvinject-system/kvinject-webhook-tls") != nil {
		t.Error("the Secret-writing Role is rendered outside selfManaged mode")
	}
}
