package e2e

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

// The webhook down: the configuration's failurePolicy Fail rejects a pod
// that asked for secrets, and its matchConditions keep every other pod from
// waiting on the webhook at all. Not parallel: it stops the shared webhook
// (and starts it again), so no other test runs meanwhile.
func TestWebhookUnavailable(t *testing.T) {
	s := testStack(t)
	ctx := t.Context()
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0a1")

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		err := s.hook.start(ctx)
		if err == nil {
			err = s.waitInjecting(ctx)
		}
		if err != nil {
			stackErr = fmt.Errorf("webhook did not come back after TestWebhookUnavailable: %w", err)
			t.Error(stackErr)
		}
	})

	start := time.Now()
	if err := s.hook.stop(); err != nil {
		t.Fatalf("stop webhook: %v", err)
	}
	t.Logf("webhook stopped in %v", time.Since(start))

	_, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod("web", "web", map[string]string{
		"kvinject.io/secret-db-password": "db-password",
	}), metav1.CreateOptions{})
	if err == nil {
		t.Fatal("annotated pod admitted while the webhook is down, want it rejected (failurePolicy: Fail)")
	}
	if want := `failed calling webhook "pods.kvinject.io"`; !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("annotated pod: error %v, want an internal error containing %q", err, want)
	}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("rejected pod: get = %v, want not found", err)
	}

	plain, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod("plain", "web", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("plain pod rejected while the webhook is down: %v", err)
	}
	if len(plain.Spec.InitContainers) != 0 || len(plain.Annotations) != 0 {
		t.Errorf("plain pod changed: init containers %v, annotations %v", plain.Spec.InitContainers, plain.Annotations)
	}
	// An opt-out spelled out is not an opt-in either.
	optOut := appPod("opt-out", "web", nil)
	optOut.Annotations = map[string]string{injector.AnnotationInject: "false"}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, optOut, metav1.CreateOptions{}); err != nil {
		t.Errorf("pod with kvinject.io/inject=false rejected while the webhook is down: %v", err)
	}
}

// An annotated pod comes back from the API server with the agent, its
// volumes and mounts exactly as documented; a plain pod in the same
// namespace is never sent to the webhook.
func TestWebhookInjects(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ctx := t.Context()
	ns := testNamespace(t, s.c, nil)
	const clientID = "00000000-0000-0000-0000-00000000d0a2"
	createServiceAccount(t, s, ns, "web", clientID)

	pod := appPod("web", "web", map[string]string{
		"kvinject.io/secret-db-password": "db-password",
		"kvinject.io/template-app.env":   `DB_PASSWORD={{ secret "db-password" | envQuote }}`,
		"kvinject.io/refresh":            "1m",
		"kvinject.io/containers":         "web",
		"kvinject.io/mount-path":         "/srv/web/secrets",
	})
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "registry.invalid/migrate:1"}}
	pod.Spec.Containers = []corev1.Container{{Name: "web", Image: "registry.invalid/web:1"}, {Name: "metrics", Image: "registry.invalid/metrics:1"}}
	if _, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.c.Kube.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	agent := injectedAgent(t, got)
	if names := containerNames(got.Spec.InitContainers); !slices.Equal(names, []string{injector.AgentContainer, "migrate"}) {
		t.Errorf("init containers %v, want the agent first, then the pod's own", names)
	}
	if names := containerNames(got.Spec.Containers); !slices.Equal(names, []string{"web", "metrics"}) {
		t.Errorf("containers %v, want the pod's own, unchanged", names)
	}
	// A native sidecar: app containers start after its startup probe passed.
	if agent.Image != agentImage || !slices.Equal(agent.Command, []string{"/kvinject-agent"}) || !slices.Equal(agent.Args, []string{"sidecar"}) {
		t.Errorf("agent runs %s %v %v, want %s /kvinject-agent sidecar", agent.Image, agent.Command, agent.Args, agentImage)
	}
	if agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("agent restartPolicy %v, want Always (native sidecar)", agent.RestartPolicy)
	}
	if p := agent.StartupProbe; p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, []string{"/kvinject-agent", "probe"}) {
		t.Errorf("agent startupProbe %+v, want exec /kvinject-agent probe", p)
	}
	env := map[string]string{}
	for _, e := range agent.Env {
		if e.ValueFrom != nil {
			t.Errorf("agent env %s comes from %+v, want a plain value", e.Name, e.ValueFrom)
		}
		env[e.Name] = e.Value
	}
	wantEnv := map[string]string{
		"AZURE_CLIENT_ID":            clientID, // from the ServiceAccount
		"AZURE_TENANT_ID":            s.srv.TenantID(),
		"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/kvinject/tokens/azure-identity-token",
		"AZURE_AUTHORITY_HOST":       s.srv.AuthorityHost(),
	}
	for k, v := range wantEnv {
		if env[k] != v {
			t.Errorf("agent env %s = %q, want %q", k, env[k], v)
		}
	}
	cfg, err := config.Load([]byte(env[config.EnvVar]))
	if err != nil {
		t.Fatalf("agent %s: %v", config.EnvVar, err)
	}
	if cfg.Dir != injector.AgentDir || time.Duration(cfg.Refresh) != time.Minute || cfg.Namespace != ns || cfg.ServiceAccount != "web" {
		t.Errorf("agent config dir %q refresh %v namespace %q serviceAccount %q, want %s 1m0s %s web",
			cfg.Dir, time.Duration(cfg.Refresh), cfg.Namespace, cfg.ServiceAccount, injector.AgentDir, ns)
	}
	var files []string
	for _, f := range cfg.Files {
		files = append(files, f.Name)
		if f.Mode != 0o440 {
			t.Errorf("file %s mode %o, want 0440", f.Name, f.Mode)
		}
	}
	if !slices.Equal(files, []string{"app.env", "db-password"}) {
		t.Errorf("agent config files %v, want [app.env db-password]", files)
	}
	if db := cfg.Files[len(cfg.Files)-1].Object; db == nil || db.Vault != s.vaultURL || db.Kind != config.KindSecret || db.Name != "db-password" {
		t.Errorf("db-password object %+v, want secret db-password in %s (the webhook's --vault)", db, s.vaultURL)
	}
	checkRestricted(t, agent)
	if r := agent.Resources; r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("agent resources %+v, want CPU and memory requests and a memory limit", r)
	}

	// Volumes: the in-memory secrets volume, the token for Entra ID.
	vols := map[string]corev1.Volume{}
	for _, v := range got.Spec.Volumes {
		vols[v.Name] = v
	}
	sec := vols[injector.SecretsVolume].EmptyDir
	if sec == nil || sec.Medium != corev1.StorageMediumMemory || sec.SizeLimit == nil || sec.SizeLimit.Cmp(resource.MustParse("16Mi")) != 0 {
		t.Errorf("volume %s = %+v, want an emptyDir with medium Memory and sizeLimit 16Mi", injector.SecretsVolume, vols[injector.SecretsVolume])
	}
	tok := vols[injector.TokenVolume].Projected
	if tok == nil || len(tok.Sources) != 1 || tok.Sources[0].ServiceAccountToken == nil {
		t.Fatalf("volume %s = %+v, want one projected serviceAccountToken", injector.TokenVolume, vols[injector.TokenVolume])
	}
	if sat := tok.Sources[0].ServiceAccountToken; sat.Audience != "api://AzureADTokenExchange" || ptr.Deref(sat.ExpirationSeconds, 0) != 3600 || sat.Path != "azure-identity-token" {
		t.Errorf("projected token %+v, want audience api://AzureADTokenExchange, 3600s, path azure-identity-token", sat)
	}

	// Mounts: the agent writes the volume and alone reads the token; only the
	// chosen app container reads the secrets.
	wantMounts := map[string][]string{
		injector.AgentContainer: {"kvinject-secrets:/var/run/kvinject/secrets:rw", "kvinject-token:/var/run/secrets/kvinject/tokens:ro",
			"kvinject-no-api-token:/var/run/secrets/kubernetes.io/serviceaccount:ro"},
		"migrate": nil,
		"web":     {"kvinject-secrets:/srv/web/secrets:ro"},
		"metrics": nil,
	}
	for _, c := range slices.Concat(got.Spec.InitContainers, got.Spec.Containers) {
		if m := mounts(c); !slices.Equal(m, wantMounts[c.Name]) {
			t.Errorf("container %s mounts %v, want %v", c.Name, m, wantMounts[c.Name])
		}
	}
	// The ServiceAccount admission plugin, run again after the webhook,
	// mounts the pod's API token into every container but the agent, which
	// has a mount at that path already: the agent never holds a token for
	// the Kubernetes API. The plugin thus changes nothing kvinject added,
	// and the API server does not call kvinject again.
	for _, c := range slices.Concat(got.Spec.InitContainers, got.Spec.Containers) {
		hasAPIToken := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return strings.HasPrefix(m.Name, "kube-api-access-") && m.MountPath == injector.KubeAPITokenDir
		})
		if want := c.Name != injector.AgentContainer; hasAPIToken != want {
			t.Errorf("container %s has the pod's Kubernetes API token: %t, want %t", c.Name, hasAPIToken, want)
		}
	}
	if d := s.hook.audit.decisions(ns, "web"); !slices.Equal(d, []string{"patched"}) {
		t.Errorf("webhook reviews of pod web: %v, want [patched]", d)
	}

	// A plain pod: admitted untouched, and the webhook never heard of it.
	before := s.hook.audit.inNamespace(ns)
	plain, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod("plain", "web", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Spec.InitContainers) != 0 || len(plain.Spec.Volumes) != 1 || !strings.HasPrefix(plain.Spec.Volumes[0].Name, "kube-api-access-") ||
		plain.Annotations[injector.AnnotationStatus] != "" {
		t.Errorf("plain pod changed: %+v", plain.Spec)
	}
	if n := s.hook.audit.inNamespace(ns) - before; n != 0 {
		t.Errorf("the webhook reviewed %d pod(s) for a plain pod, want none (matchConditions)", n)
	}
}

// Invalid annotations deny the pod at admission, with one message naming
// the annotation, as kubectl shows it.
func TestWebhookDeniesInvalid(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0a3")
	_, err := s.c.Kube.CoreV1().Pods(ns).Create(t.Context(), appPod("web", "web", map[string]string{
		"kvinject.io/secret-db-password": "db-password",
		"kvinject.io/refresh":            "soon",
	}), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `admission webhook "pods.kvinject.io" denied the request`) ||
		!strings.Contains(err.Error(), "kvinject.io/refresh") {
		t.Errorf("pod with refresh=soon: error %v, want forbidden by pods.kvinject.io naming kvinject.io/refresh", err)
	}
}

// The injector's warnings reach the user with the admitted pod, as kubectl
// prints them.
func TestWebhookWarns(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0a7")
	var warnings warningRecorder
	cfg := rest.CopyConfig(s.c.Config)
	cfg.WarningHandler = &warnings
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	created, err := kube.CoreV1().Pods(ns).Create(t.Context(), appPod("web", "web", map[string]string{
		"kvinject.io/secret-db-password": "db-password",
		"kvinject.io/refresh":            "2s",
	}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	injectedAgent(t, created)
	warnings.mu.Lock()
	defer warnings.mu.Unlock()
	if !slices.ContainsFunc(warnings.texts, func(w string) bool { return strings.HasPrefix(w, "kvinject.io/refresh: 2s is shorter than 30s") }) {
		t.Errorf("warnings %q, want one about kvinject.io/refresh 2s being shorter than 30s", warnings.texts)
	}
}

type warningRecorder struct {
	mu    sync.Mutex
	texts []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	w.texts = append(w.texts, text)
	w.mu.Unlock()
}

// A namespace that enforces the restricted Pod Security Standard admits an
// injected pod: Pod Security admission runs after the webhook and checks
// the agent too.
func TestWebhookRestrictedNamespace(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ctx := t.Context()
	ns := testNamespace(t, s.c, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0a4")

	// Enforcement is on: a pod that is not restricted is refused.
	_, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod("loose", "web", nil), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted`) {
		t.Fatalf("unrestricted pod: error %v, want a PodSecurity restricted violation", err)
	}

	for _, refresh := range []string{"", "1m"} {
		name := "once"
		ann := map[string]string{"kvinject.io/secret-db-password": "db-password"}
		if refresh != "" {
			name, ann["kvinject.io/refresh"] = "sidecar", refresh
		}
		pod := appPod(name, "web", ann)
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{
			RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
		created, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Errorf("restricted pod with refresh %q: %v", refresh, err)
			continue
		}
		injectedAgent(t, created)
	}
}

// A Deployment's pods are created by kube-controller-manager's ReplicaSet
// controller and injected on the way in. The API server sends the same pod
// for every replica, each with its own kube-api-access-* volume (the
// ServiceAccount admission plugin names them): every replica is injected
// alike.
func TestWebhookDeployment(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ctx := t.Context()
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0a5")

	labels := map[string]string{"app": "web"}
	tmpl := appPod("", "web", map[string]string{
		"kvinject.io/secret-db-password": "db-password",
		"kvinject.io/refresh":            "5m",
		"kvinject.io/file-mode":          "0444", // draws a warning nobody sees
	})
	tmpl.Labels = labels
	dep, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := s.c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods = l.Items
		return len(pods) == 2, nil
	})
	if err != nil {
		t.Fatalf("deployment %s: %d pod(s), want 2: %v\nkube-controller-manager log:\n%s", dep.Name, len(pods), err, s.c.ControllerManagerLog())
	}
	for _, p := range pods {
		owner := metav1.GetControllerOf(&p)
		if owner == nil || owner.Kind != "ReplicaSet" {
			t.Errorf("pod %s controlled by %+v, want a ReplicaSet", p.Name, owner)
		}
		agent := injectedAgent(t, &p)
		if agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("pod %s: agent restartPolicy %v, want Always", p.Name, agent.RestartPolicy)
		}
		// The API server accepts the metrics port on a native sidecar, and
		// the warning the ReplicaSet controller got stays on the pod.
		if len(agent.Ports) != 1 || agent.Ports[0].Name != "kvinject-agent" || agent.Ports[0].ContainerPort != 9797 {
			t.Errorf("pod %s: agent ports %+v, want kvinject-agent 9797", p.Name, agent.Ports)
		}
		if w := p.Annotations["kvinject.io/warnings"]; !strings.Contains(w, "kvinject.io/file-mode: mode 0444 gives other users access") {
			t.Errorf("pod %s: kvinject.io/warnings %q, want the file-mode warning", p.Name, w)
		}
		if !slices.Equal(mounts(p.Spec.Containers[0]), []string{"kvinject-secrets:/mnt/secrets:ro"}) {
			t.Errorf("pod %s: app mounts %v, want the secrets at /mnt/secrets, read-only", p.Name, mounts(p.Spec.Containers[0]))
		}
	}
	if len(pods) == 2 {
		// The replicas are one pod to the injector: same spec, same answer.
		a, b := pods[0].DeepCopy(), pods[1].DeepCopy()
		for _, p := range []*corev1.Pod{a, b} {
			p.ObjectMeta = metav1.ObjectMeta{Annotations: p.Annotations, Labels: p.Labels}
			p.Spec.NodeName, p.Status = "", corev1.PodStatus{}
			sameTokenVolumeName(p)
		}
		if !apiequality.Semantic.DeepEqual(a, b) {
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			t.Errorf("the replicas were injected differently:\n%s\n%s", ja, jb)
		}
		rs := metav1.GetControllerOf(&pods[0])
		// Each replica: injected once. The ServiceAccount plugin, run
		// again after the webhook, skips kvinject's containers (they mount
		// kvinject-no-api-token at the token path), so nothing calls
		// kvinject again.
		if d := s.hook.audit.decisions(ns, rs.Name+"-"); !slices.Equal(d, []string{"patched", "patched"}) {
			t.Errorf("reviews of the replicas: %v, want [patched patched]", d)
		}
	}
}

// Another mutating webhook that runs after kvinject and adds a container
// makes the API server call kvinject again (reinvocationPolicy IfNeeded).
// The second pass finds the agent in place and gives the new container the
// secrets mount: the pod ends with exactly one agent, and every targeted
// container reads the secrets.
func TestWebhookReinvocation(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ctx := t.Context()
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0a6")

	// The other webhook: adds a log-shipper container to pods of this
	// namespace that do not have one yet.
	adder := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		_ = json.Unmarshal(review.Request.Object.Raw, &pod)
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if !slices.Contains(containerNames(pod.Spec.Containers), "log-shipper") {
			patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-",
				"value": corev1.Container{Name: "log-shipper", Image: "registry.invalid/log-shipper:1"}}})
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = patch, &pt
		}
		review.Response, review.Request = resp, nil
		_ = json.NewEncoder(w).Encode(review)
	}))
	adder.StartTLS()
	t.Cleanup(adder.Close)
	caPEM := pemCert(adder.Certificate().Raw)

	name := "zz-e2e-log-shipper-" + ns // after kvinject's configuration in name order
	_, err := s.c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "log-shipper.e2e.kvinject.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(adder.URL + "/"), CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	// Wait until the API server calls it (dry runs create nothing).
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod("probe", "web", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && slices.Contains(containerNames(p.Spec.Containers), "log-shipper"), nil
	})
	if err != nil {
		t.Fatalf("the log-shipper webhook is not called: %v", err)
	}

	created, err := s.c.Kube.CoreV1().Pods(ns).Create(ctx, appPod("web", "web", map[string]string{
		"kvinject.io/secret-db-password": "db-password",
	}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	injectedAgent(t, created)
	if names := containerNames(created.Spec.Containers); !slices.Equal(names, []string{"app", "log-shipper"}) {
		t.Errorf("containers %v, want [app log-shipper]", names)
	}
	// Reinvoked after the other webhook, kvinject gives its container the
	// secrets mount (the pod targets every container).
	if m := mounts(created.Spec.Containers[1]); !slices.Equal(m, []string{"kvinject-secrets:/mnt/secrets:ro"}) {
		t.Errorf("log-shipper mounts %v, want the secrets at /mnt/secrets, read-only", m)
	}
	d := s.hook.audit.decisions(ns, "web")
	if !slices.Equal(d, []string{"patched", "patched"}) {
		t.Errorf("kvinject reviews of pod web: %v, want [patched patched] (injected, then the mount for the added container)", d)
	}
}

// appPod is a pod with one container "app" running as ServiceAccount sa;
// with annotations, it opts in to kvinject.
func appPod(name, sa string, annotations map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}
	if annotations != nil {
		p.Annotations = map[string]string{injector.AnnotationInject: "true"}
		for k, v := range annotations {
			p.Annotations[k] = v
		}
	}
	return p
}

// createServiceAccount creates a ServiceAccount with the workload identity
// annotations a user sets for clientID in the emulated tenant.
func createServiceAccount(t *testing.T, s *stack, ns, name, clientID string) {
	t.Helper()
	ann := map[string]string{injector.WorkloadIdentityTenantID: s.srv.TenantID()}
	if clientID != "" {
		ann[injector.WorkloadIdentityClientID] = clientID
	}
	if _, err := s.c.Kube.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// injectedAgent checks that pod is marked injected and has exactly one
// agent container, and returns it.
func injectedAgent(t *testing.T, pod *corev1.Pod) *corev1.Container {
	t.Helper()
	if s := pod.Annotations[injector.AnnotationStatus]; s != injector.StatusInjected {
		t.Errorf("pod %s: %s = %q, want %q", pod.Name, injector.AnnotationStatus, s, injector.StatusInjected)
	}
	var agents []*corev1.Container
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if strings.HasPrefix(cs[i].Name, "kvinject-") {
				agents = append(agents, &cs[i])
			}
		}
	}
	if len(agents) != 1 || agents[0].Name != injector.AgentContainer {
		t.Fatalf("pod %s has kvinject containers %v, want exactly one %s", pod.Name, agents, injector.AgentContainer)
	}
	return agents[0]
}

// checkRestricted checks the agent's security context against the restricted
// Pod Security Standard, field by field as the design promises.
func checkRestricted(t *testing.T, c *corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Fatalf("container %s has no securityContext", c.Name)
	}
	if !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || ptr.Deref(sc.Privileged, false) {
		b, _ := json.Marshal(sc)
		t.Errorf("container %s securityContext %s, want non-root, no privilege escalation, read-only root, all capabilities dropped, seccomp RuntimeDefault", c.Name, b)
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// mounts lists a container's volume mounts as "volume:path:ro|rw".
// mounts lists a container's mounts but the API token's, which the
// ServiceAccount admission plugin adds to every container.
func mounts(c corev1.Container) []string {
	var out []string
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(m.Name, "kube-api-access-") {
			continue
		}
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, m.Name+":"+m.MountPath+":"+mode)
	}
	return out
}

// sameTokenVolumeName renames the pod's kube-api-access-<random> volume and
// its mounts to kube-api-access, so that two replicas compare equal.
func sameTokenVolumeName(p *corev1.Pod) {
	const prefix = "kube-api-access-"
	for i := range p.Spec.Volumes {
		if strings.HasPrefix(p.Spec.Volumes[i].Name, prefix) {
			p.Spec.Volumes[i].Name = prefix
		}
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			for j := range cs[i].VolumeMounts {
				if strings.HasPrefix(cs[i].VolumeMounts[j].Name, prefix) {
					cs[i].VolumeMounts[j].Name = prefix
				}
			}
		}
	}
}
