// Package manifests holds the kustomize install of kvinject; its test renders
// it with kubectl and checks the objects a user relies on. The schema check
// against a real API server (server-side dry run, with cert-manager's CRDs)
// is in the e2e suite.
package manifests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/webhook"
)

const (
	namespace = "kvinject-system"
	image     = "ghcr.io/kvinject/kvinject"
)

// rendered is the output of kubectl kustomize, by kind and name.
type rendered struct {
	objects map[string][]byte         // "Kind/name" → the document
	generic map[string]map[string]any // "Kind/name" → decoded
	order   []string
}

// kustomize renders dir with the kubectl on PATH.
func kustomize(t *testing.T, dir string) *rendered {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is needed to render the manifests (it embeds kustomize): %v", err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	r := &rendered{objects: map[string][]byte{}, generic: map[string]map[string]any{}}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("rendered document is not YAML: %v\n%s", err, doc)
		}
		md, _ := m["metadata"].(map[string]any)
		key := m["kind"].(string) + "/" + md["name"].(string)
		if _, dup := r.objects[key]; dup {
			t.Errorf("%s rendered twice", key)
		}
		r.objects[key], r.generic[key] = doc, m
		r.order = append(r.order, key)
	}
	return r
}

// strict decodes a built-in object, failing on unknown or duplicate fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

func decode[T runtime.Object](t *testing.T, r *rendered, key string, into T) T {
	t.Helper()
	doc, ok := r.objects[key]
	if !ok {
		t.Fatalf("no %s in the manifests; have %v", key, r.order)
	}
	if _, _, err := strict.Decode(doc, nil, into); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return into
}

// field walks a decoded object along path.
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

func TestManifestsRender(t *testing.T) {
	r := kustomize(t, ".")

	want := []string{
		"Namespace/kvinject-system", "PriorityClass/kvinject-webhook", "ServiceAccount/kvinject-webhook",
		"ClusterRole/kvinject-webhook", "ClusterRoleBinding/kvinject-webhook", "Service/kvinject-webhook",
		"Deployment/kvinject-webhook", "PodDisruptionBudget/kvinject-webhook",
		"Issuer/kvinject-selfsigned", "Certificate/kvinject-ca", "Issuer/kvinject-ca", "Certificate/kvinject-webhook",
		"MutatingWebhookConfiguration/kvinject",
	}
	got := slices.Sorted(slices.Values(r.order))
	if !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	for _, key := range r.order {
		ns, _ := field(r.generic[key], "metadata", "namespace").(string)
		clusterScoped := slices.Contains([]string{"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}, strings.Split(key, "/")[0])
		if clusterScoped != (ns == "") || (!clusterScoped && ns != namespace) {
			t.Errorf("%s: namespace %q", key, ns)
		}
	}

	dep := decode(t, r, "Deployment/kvinject-webhook", &appsv1.Deployment{})
	svc := decode(t, r, "Service/kvinject-webhook", &corev1.Service{})
	sa := decode(t, r, "ServiceAccount/kvinject-webhook", &corev1.ServiceAccount{})
	role := decode(t, r, "ClusterRole/kvinject-webhook", &rbacv1.ClusterRole{})
	binding := decode(t, r, "ClusterRoleBinding/kvinject-webhook", &rbacv1.ClusterRoleBinding{})
	pdb := decode(t, r, "PodDisruptionBudget/kvinject-webhook", &policyv1.PodDisruptionBudget{})
	pc := decode(t, r, "PriorityClass/kvinject-webhook", &schedulingv1.PriorityClass{})
	mwc := decode(t, r, "MutatingWebhookConfiguration/kvinject", &admissionregistrationv1.MutatingWebhookConfiguration{})
	decode(t, r, "Namespace/kvinject-system", &corev1.Namespace{})

	t.Run("deployment", func(t *testing.T) { checkDeployment(t, dep, pdb, pc, sa) })
	t.Run("rbac", func(t *testing.T) {
		wantRules := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get", "list", "watch"}},
			{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}},
		}
		if !apiequality.Semantic.DeepEqual(role.Rules, wantRules) {
			t.Errorf("ClusterRole rules %+v, want only %+v", role.Rules, wantRules)
		}
		if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 ||
			binding.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: namespace}) {
			t.Errorf("ClusterRoleBinding %+v", binding)
		}
	})
	t.Run("webhook configuration", func(t *testing.T) { checkWebhookConfiguration(t, mwc, svc, dep) })
	t.Run("cert-manager", func(t *testing.T) { checkCertificates(t, r, mwc, svc, dep) })
}

func checkDeployment(t *testing.T, dep *appsv1.Deployment, pdb *policyv1.PodDisruptionBudget, pc *schedulingv1.PriorityClass, sa *corev1.ServiceAccount) {
	spec := dep.Spec.Template.Spec
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", dep.Spec.Replicas)
	}
	if len(spec.TopologySpreadConstraints) == 0 || spec.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" ||
		!selects(spec.TopologySpreadConstraints[0].LabelSelector, dep.Spec.Template.Labels) {
		t.Errorf("replicas are not spread across nodes: %+v", spec.TopologySpreadConstraints)
	}
	if !selects(pdb.Spec.Selector, dep.Spec.Template.Labels) || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB %+v does not keep one webhook pod", pdb.Spec)
	}
	if spec.PriorityClassName != pc.Name || pc.Value <= 0 || pc.GlobalDefault {
		t.Errorf("priority class %q (%d)", spec.PriorityClassName, pc.Value)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v: a replica could land on a Windows node", spec.NodeSelector)
	}
	if spec.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName %q", spec.ServiceAccountName)
	}
	// The restricted Pod Security Standard, as the API server would enforce it.
	evaluator, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := psapolicy.AggregateCheckResults(evaluator.EvaluatePod(
		psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &dep.Spec.Template.ObjectMeta, &spec))
	if !res.Allowed {
		t.Errorf("webhook pod violates PSS restricted: %s", res.ForbiddenDetail())
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Error("root filesystem is writable")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
	args := flagArgs(c.Args)
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes: readiness %+v liveness %+v", c.ReadinessProbe, c.LivenessProbe)
	} else if p := port(c, c.ReadinessProbe.HTTPGet.Port.StrVal); ":"+strconv.Itoa(int(p)) != args["health-probe-bind-address"] {
		t.Errorf("probe port %d, but --health-probe-bind-address=%s", p, args["health-probe-bind-address"])
	}
	if p := port(c, "webhook"); strconv.Itoa(int(p)) != args["port"] {
		t.Errorf("container port webhook %d, but --port=%s", p, args["port"])
	}
	var tlsMount string
	for _, m := range c.VolumeMounts {
		if m.Name == "tls" {
			tlsMount = m.MountPath
		}
	}
	if tlsMount == "" || args["cert-dir"] != tlsMount {
		t.Errorf("--cert-dir=%s, TLS secret mounted at %q", args["cert-dir"], tlsMount)
	}
	if c.Command[0] != "/kvinject" || c.Args[0] != "webhook" {
		t.Errorf("command %q args %q", c.Command, c.Args)
	}
	if c.Image != image+":latest" || agentImage(t, c) != c.Image {
		t.Errorf("image %q, KVINJECT_AGENT_IMAGE %q: both must be the kustomization's image", c.Image, agentImage(t, c))
	}
}

func selects(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil || len(sel.MatchLabels) == 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// flagArgs maps "--name=value" arguments to name → value.
func flagArgs(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			m[k] = v
		}
	}
	return m
}

func port(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func agentImage(t *testing.T, c corev1.Container) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == webhook.EnvName("agent-image") {
			return e.Value
		}
	}
	t.Fatalf("container %s has no %s", c.Name, webhook.EnvName("agent-image"))
	return ""
}

func checkWebhookConfiguration(t *testing.T, mwc *admissionregistrationv1.MutatingWebhookConfiguration, svc *corev1.Service, dep *appsv1.Deployment) {
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	if w.Name != "pods.kvinject.io" {
		t.Errorf("name %q", w.Name)
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
		!slices.Equal(w.Rules[0].APIGroups, []string{""}) || !slices.Equal(w.Rules[0].APIVersions, []string{"v1"}) ||
		!slices.Equal(w.Rules[0].Resources, []string{"pods"}) {
		t.Errorf("rules %+v, want pods CREATE only", w.Rules)
	}
	if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy %v", w.FailurePolicy)
	}
	if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
		t.Errorf("sideEffects %v", w.SideEffects)
	}
	if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Errorf("reinvocationPolicy %v", w.ReinvocationPolicy)
	}
	if w.TimeoutSeconds == nil || *w.TimeoutSeconds > 5 {
		t.Errorf("timeoutSeconds %v, want a short timeout", w.TimeoutSeconds)
	}
	if !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions %v", w.AdmissionReviewVersions)
	}
	if w.NamespaceSelector == nil || len(w.NamespaceSelector.MatchExpressions) != 1 {
		t.Fatalf("namespaceSelector %+v", w.NamespaceSelector)
	}
	e := w.NamespaceSelector.MatchExpressions[0]
	if e.Key != "kubernetes.io/metadata.name" || e.Operator != metav1.LabelSelectorOpNotIn ||
		!slices.Equal(slices.Sorted(slices.Values(e.Values)), []string{"kube-system", namespace}) {
		t.Errorf("namespaceSelector %+v, want kubernetes.io/metadata.name NotIn [kube-system %s]", e, namespace)
	}
	s := w.ClientConfig.Service
	if s == nil || s.Name != svc.Name || s.Namespace != namespace || s.Path == nil || *s.Path != webhook.Path {
		t.Fatalf("clientConfig.service %+v, want %s/%s path %s", s, namespace, svc.Name, webhook.Path)
	}
	var target string
	for _, p := range svc.Spec.Ports {
		if s.Port != nil && p.Port == *s.Port {
			target = p.TargetPort.StrVal
		}
	}
	if target == "" || port(dep.Spec.Template.Spec.Containers[0], target) == 0 {
		t.Errorf("service port %v does not lead to a container port (target %q)", s.Port, target)
	}
	if len(w.MatchConditions) != 1 {
		t.Fatalf("matchConditions %+v", w.MatchConditions)
	}
	checkMatchCondition(t, w.MatchConditions[0].Expression)
}

// checkMatchCondition evaluates the CEL expression on pods the way the API
// server does: true for every pod that carries kvinject.io/inject with a
// value other than "false" (the webhook injects "true" and denies the rest),
// and never an error (an error would fail closed under failurePolicy: Fail).
func checkMatchCondition(t *testing.T, expr string) {
	env, err := cel.NewEnv(cel.Variable("object", cel.DynType))
	if err != nil {
		t.Fatal(err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		t.Fatalf("matchCondition does not compile: %v", iss.Err())
	}
	prg, err := env.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		metadata map[string]any
		want     bool
	}{
		{"opted in", map[string]any{"annotations": map[string]any{"kvinject.io/inject": "true"}}, true},
		{"opted out", map[string]any{"annotations": map[string]any{"kvinject.io/inject": "false"}}, false},
		{"True, to be denied", map[string]any{"annotations": map[string]any{"kvinject.io/inject": "True"}}, true},
		{"yes, to be denied", map[string]any{"annotations": map[string]any{"kvinject.io/inject": "yes"}}, true},
		{"padded, to be denied", map[string]any{"annotations": map[string]any{"kvinject.io/inject": " true"}}, true},
		{"empty, to be denied", map[string]any{"annotations": map[string]any{"kvinject.io/inject": ""}}, true},
		{"other annotations", map[string]any{"annotations": map[string]any{"a": "b"}}, false},
		{"no annotations", map[string]any{"name": "p"}, false},
	} {
		out, _, err := prg.Eval(map[string]any{"object": map[string]any{"metadata": tc.metadata}})
		if err != nil {
			t.Errorf("%s: evaluation error %v", tc.name, err)
			continue
		}
		if out.Value() != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, out.Value(), tc.want)
		}
	}
}

func checkCertificates(t *testing.T, r *rendered, mwc *admissionregistrationv1.MutatingWebhookConfiguration, svc *corev1.Service, dep *appsv1.Deployment) {
	str := func(key string, path ...string) string {
		s, _ := field(r.generic[key], path...).(string)
		return s
	}
	// self-signed Issuer → CA Certificate → CA Issuer → serving Certificate.
	if field(r.generic["Issuer/kvinject-selfsigned"], "spec", "selfSigned") == nil {
		t.Error("Issuer kvinject-selfsigned is not selfSigned")
	}
	if field(r.generic["Certificate/kvinject-ca"], "spec", "isCA") != true || str("Certificate/kvinject-ca", "spec", "issuerRef", "name") != "kvinject-selfsigned" {
		t.Error("Certificate kvinject-ca is not a CA from the self-signed issuer")
	}
	if str("Issuer/kvinject-ca", "spec", "ca", "secretName") != str("Certificate/kvinject-ca", "spec", "secretName") {
		t.Error("Issuer kvinject-ca does not use the CA certificate's secret")
	}
	serving := "Certificate/kvinject-webhook"
	if str(serving, "spec", "issuerRef", "name") != "kvinject-ca" || str(serving, "spec", "issuerRef", "kind") != "Issuer" {
		t.Error("serving certificate is not issued by the CA issuer")
	}
	dns, _ := field(r.generic[serving], "spec", "dnsNames").([]any)
	if !slices.Contains(dns, any(svc.Name+"."+namespace+".svc")) {
		t.Errorf("serving certificate dnsNames %v lack the name the API server dials, %s.%s.svc", dns, svc.Name, namespace)
	}
	var secret string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Name == "tls" && v.Secret != nil {
			secret = v.Secret.SecretName
		}
	}
	if secret == "" || secret != str(serving, "spec", "secretName") {
		t.Errorf("Deployment mounts secret %q, certificate writes %q", secret, str(serving, "spec", "secretName"))
	}
	if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != namespace+"/kvinject-webhook" {
		t.Errorf("cert-manager.io/inject-ca-from %q, want %s/kvinject-webhook", got, namespace)
	}
}

// Setting the image, in manifests/ or in an overlay, changes the webhook's
// image and the agent image it injects together.
func TestSetImageKeepsAgentImageInStep(t *testing.T) {
	abs, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		images string // the images: entry `kustomize edit set image` writes
		want   string
	}{
		"tag":    {"  newName: registry.example/kvinject\n  newTag: v1.2.3\n", "registry.example/kvinject:v1.2.3"},
		"digest": {"  digest: sha256:" + strings.Repeat("ab", 32) + "\n", image + "@sha256:" + strings.Repeat("ab", 32)},
	} {
		t.Run("overlay "+name, func(t *testing.T) {
			dir := t.TempDir()
			rel, err := filepath.Rel(dir, abs)
			if err != nil {
				t.Fatal(err)
			}
			kz := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + rel +
				"\nimages:\n- name: " + image + "\n" + tc.images
			if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kz), 0o644); err != nil {
				t.Fatal(err)
			}
			dep := decode(t, kustomize(t, dir), "Deployment/kvinject-webhook", &appsv1.Deployment{})
			c := dep.Spec.Template.Spec.Containers[0]
			if c.Image != tc.want || agentImage(t, c) != tc.want {
				t.Errorf("image %q, KVINJECT_AGENT_IMAGE %q, want both %q", c.Image, agentImage(t, c), tc.want)
			}
		})
	}
	t.Run("in manifests", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range mustGlob(t, "*.yaml") {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if f == "kustomization.yaml" {
				b = []byte(strings.Replace(string(b), "  newTag: latest\n", "  newName: registry.example/kvinject\n  newTag: v9\n", 1))
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		dep := decode(t, kustomize(t, dir), "Deployment/kvinject-webhook", &appsv1.Deployment{})
		c := dep.Spec.Template.Spec.Containers[0]
		if c.Image != "registry.example/kvinject:v9" || agentImage(t, c) != c.Image {
			t.Errorf("image %q, KVINJECT_AGENT_IMAGE %q", c.Image, agentImage(t, c))
		}
	})
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("glob %s: %v %v", pattern, m, err)
	}
	return m
}
