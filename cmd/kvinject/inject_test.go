package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/injector"
)

const (
	testClient = "6f1c9a52-3c3e-4c52-9f3b-2f0a4c6d8e11"
	testTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

// inject runs `kvinject inject` as a user would and returns exit code, stdout and stderr.
func inject(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runInject(context.Background(), "kvinject", args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// documents splits output YAML into its documents.
func documents(out string) []string {
	var docs []string
	for _, d := range strings.Split(out, "\n---\n") {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

func initNames(spec corev1.PodSpec) []string {
	var n []string
	for _, c := range spec.InitContainers {
		n = append(n, c.Name)
	}
	return n
}

// TestExamples is the acceptance check: a refreshed Deployment gets
// a native sidecar, a Job without refresh a plain init container.
func TestExamples(t *testing.T) {
	code, out, stderr := inject(t, "", "-f", "../../examples/deployment-refresh.yaml")
	if code != 0 {
		t.Fatalf("deployment-refresh: exit %d: %s", code, stderr)
	}
	docs := documents(out)
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(docs[len(docs)-1]), &d); err != nil {
		t.Fatal(err)
	}
	agent := d.Spec.Template.Spec.InitContainers[0]
	if agent.Name != injector.AgentContainer || agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways || agent.StartupProbe == nil {
		t.Errorf("deployment: first init container %s is not a native sidecar with a startup probe", agent.Name)
	}
	if env := agent.Env[1]; env.Name != "AZURE_CLIENT_ID" || env.Value != testClient {
		t.Errorf("client ID from the ServiceAccount in the stream: got %s=%s", env.Name, env.Value)
	}

	code, out, stderr = inject(t, "", "-f", "../../examples/job-once.yaml", "--sa-client-id", testClient, "--sa-tenant-id", testTenant)
	if code != 0 {
		t.Fatalf("job-once: exit %d: %s", code, stderr)
	}
	var j batchv1.Job
	if err := yaml.UnmarshalStrict([]byte(documents(out)[0]), &j); err != nil {
		t.Fatal(err)
	}
	agent = j.Spec.Template.Spec.InitContainers[0]
	if agent.Name != injector.AgentContainer || agent.RestartPolicy != nil || strings.Join(agent.Args, " ") != "init" {
		t.Errorf("job: first init container %s %v is not a plain fetch-once init container", agent.Name, agent.Args)
	}

	code, _, stderr = inject(t, "", "-f", "../../examples/csi-migration.yaml")
	if code != 0 {
		t.Errorf("csi-migration: exit %d: %s", code, stderr)
	}
}

// TestEveryKind injects each kind with a pod template.
func TestEveryKind(t *testing.T) {
	const pod = `metadata:
  name: p
  annotations:
    kvinject.io/inject: "true"
    kvinject.io/secret-db: kv1/db
spec:
  containers:
  - name: app
    image: example.com/app:1
`
	workload := func(apiVersion, kind string) string {
		return "apiVersion: " + apiVersion + "\nkind: " + kind + "\nmetadata:\n  name: w\nspec:\n  template:\n" + indent(pod, "    ")
	}
	for kind, doc := range map[string]string{
		"Pod":         "apiVersion: v1\nkind: Pod\n" + pod,
		"Deployment":  workload("apps/v1", "Deployment"),
		"StatefulSet": workload("apps/v1", "StatefulSet"),
		"DaemonSet":   workload("apps/v1", "DaemonSet"),
		"ReplicaSet":  workload("apps/v1", "ReplicaSet"),
		"Job":         workload("batch/v1", "Job"),
		"CronJob": "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cj\nspec:\n  schedule: '@hourly'\n" +
			"  jobTemplate:\n    spec:\n      template:\n" + indent(pod, "        "),
	} {
		code, out, stderr := inject(t, doc, "-f", "-", "--sa-client-id", testClient, "--sa-tenant-id", testTenant)
		if code != 0 {
			t.Errorf("%s: exit %d: %s", kind, code, stderr)
			continue
		}
		if !strings.Contains(out, "name: "+injector.AgentContainer) || !strings.Contains(out, injector.AnnotationStatus+": injected") {
			t.Errorf("%s: not injected:\n%s", kind, out)
		}
		if strings.Contains(out, "creationTimestamp") {
			t.Errorf("%s: output has creationTimestamp noise:\n%s", kind, out)
		}
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(out), &obj); err != nil || obj["kind"] != kind {
			t.Errorf("%s: output is not a %s: %v", kind, kind, err)
		}
	}
}

// indent prefixes every non-empty line of s.
func indent(s, by string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			lines[i] = by + l
		}
	}
	return strings.Join(lines, "")
}

// TestPassThrough: documents kvinject does not change come out byte for byte,
// comments, key order, separators and all.
func TestPassThrough(t *testing.T) {
	in := `# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: x}   # flow style, kept
data:
  z: "1"
  a: '2'
--- # a separator with a comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: plain
spec:
  template:
    metadata:
      annotations:
        kvinject.io/inject: "false"
        kvinject.io/secret-db: kv1/db
    spec:
      containers: [{name: app, image: "example.com/app:1"}]
---

---
apiVersion: v1
kind: Pod
metadata:
  name: done
  annotations:
    kvinject.io/inject: "true"
    kvinject.io/status: injected
spec:
  containers: [{name: app, image: x}]
`
	code, out, stderr := inject(t, in, "-f", "-")
	if code != 0 || out != in {
		t.Errorf("exit %d, stderr %q; output differs from input:\n%s", code, stderr, out)
	}
}

// TestIdempotent: running the output through again changes nothing.
func TestIdempotent(t *testing.T) {
	_, once, _ := inject(t, "", "-f", "../../examples/deployment-refresh.yaml")
	code, twice, stderr := inject(t, once, "-f", "-")
	if code != 0 || once != twice {
		t.Errorf("exit %d %s; second run changed the output", code, stderr)
	}
}

func TestInvalidDocuments(t *testing.T) {
	in := `apiVersion: v1
kind: ConfigMap
metadata: {name: ok}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata:
      annotations:
        kvinject.io/inject: "true"
        kvinject.io/refresh: soon
        kvinject.io/secret-db: kv1/db
    spec:
      containers: [{name: app, image: x}]
---
apiVersion: v1
kind: Pod
metadata: {name: typo}
spec:
  containers: [{name: app, image: x, imagePullPolcy: Always}]
  `
	code, out, stderr := inject(t, in+"\n", "-f", "-", "--sa-client-id", testClient, "--sa-tenant-id", testTenant)
	if code != 1 || out != "" {
		t.Fatalf("exit %d with output %q, want 1 and nothing on stdout", code, out)
	}
	for _, want := range []string{
		`error: document 2 (Deployment shop/web): kvinject.io/refresh: "soon" is not a duration`,
		`error: document 3 (Pod typo): pod: json: unknown field "imagePullPolcy"`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestList: kubectl get -o yaml prints a List; its items are injected.
func TestList(t *testing.T) {
	in := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: shop}
  spec:
    template:
      metadata:
        annotations:
          kvinject.io/inject: "true"
          kvinject.io/secret-db: kv1/db
      spec:
        containers: [{name: app, image: x}]
`
	code, out, stderr := inject(t, in, "-f", "-", "--sa-client-id", testClient, "--sa-tenant-id", testTenant)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var list struct{ Items []map[string]any }
	if err := yaml.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 2 {
		t.Fatalf("output is not a List of 2: %v\n%s", err, out)
	}
	if !strings.Contains(out, "name: "+injector.AgentContainer) {
		t.Errorf("Deployment in the List not injected:\n%s", out)
	}
	in = strings.Replace(in, `kv1/db`, `kv1/db@bad-version`, 1)
	if code, _, stderr := inject(t, in, "-f", "-", "--sa-client-id", testClient, "--sa-tenant-id", testTenant); code != 1 ||
		!strings.Contains(stderr, "document 1 items[1] (Deployment shop/web): kvinject.io/secret-db:") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestUsage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, args := range [][]string{
		{},
		{"-f"},
		{"--no-such-flag"},
		{"-f", "-", "extra"},
		{"-f", missing},
		{"-f", "-", "--cloud", "Mars"},
		{"-f", "-", "--server-version", "latest"},
		{"-f", "-", "--server-feature-gates", "EnvFiles"},
	} {
		if code, out, _ := inject(t, "", args...); code != 2 || out != "" {
			t.Errorf("%v: exit %d output %q, want 2 and no output", args, code, out)
		}
	}
	if code, _, stderr := inject(t, "", "-h"); code != 0 || !strings.Contains(stderr, "Exit codes") {
		t.Errorf("-h: exit %d, help %q", code, stderr)
	}
}

func TestWarningsGoToStderr(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    kvinject.io/inject: \"true\"\n    kvinject.io/refresh: 5s\n    kvinject.io/secret-db: kv1/db\nspec:\n  containers: [{name: app, image: x}]\n"
	code, out, stderr := inject(t, in, "-f", "-", "--sa-client-id", testClient, "--sa-tenant-id", testTenant)
	if code != 0 || !strings.Contains(stderr, "warning: document 1 (Pod p): kvinject.io/refresh: 5s is shorter than 30s") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// stdout stays the YAML stream: the warnings are in it only as the
	// pod's kvinject.io/warnings annotation, as the webhook writes it.
	if strings.Contains(out, "warning: document") {
		t.Errorf("warning lines on stdout:\n%s", out)
	}
	if !strings.Contains(out, "kvinject.io/warnings: 'kvinject.io/refresh: 5s is shorter than 30s") {
		t.Errorf("no kvinject.io/warnings annotation on stdout:\n%s", out)
	}
}

// TestServerVersion: offline, the API server is the newest tested release
// unless --server-version or --server-feature-gates say otherwise; an older
// one denies a pod with an environment variable, with the reason and fix.
func TestServerVersion(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    kvinject.io/inject: \"true\"\n    kvinject.io/secret-db: kv1/db\n    kvinject.io/env-DB: db\nspec:\n  containers: [{name: app, image: x}]\n"
	ids := []string{"-f", "-", "--sa-client-id", testClient, "--sa-tenant-id", testTenant}
	if code, _, stderr := inject(t, in, ids...); code != 0 {
		t.Errorf("default server: exit %d, stderr %q", code, stderr)
	}
	for _, args := range [][]string{{"--server-version", "1.34"}, {"--server-feature-gates", "EnvFiles=false"}} {
		code, out, stderr := inject(t, in, append(args, ids...)...)
		if code != 1 || out != "" || !strings.Contains(stderr, "kvinject.io/env-DB: the API server") || !strings.Contains(stderr, "read the file /mnt/secrets/db instead") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, stderr)
		}
	}
}
