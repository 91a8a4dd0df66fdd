package injector

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/kvinject/kvinject/agent/config"
)

const (
	clientA = "00000000-0000-0000-0000-00000000000a"
	clientB = "00000000-0000-0000-0000-00000000000b"
	clientC = "00000000-0000-0000-0000-00000000000c"
	tenant  = "11111111-1111-1111-1111-111111111111"
)

func testPod(ann map[string]string) *corev1.Pod {
	base := map[string]string{
		AnnotationInject:              "true",
		AnnotationVault:               "shop-kv",
		AnnotationClientID:            clientA,
		AnnotationTenantID:            tenant,
		Prefix + "secret-db-password": "db-password",
	}
	for k, v := range ann {
		if v == "-" {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "shop", Annotations: base},
		Spec: corev1.PodSpec{
			ServiceAccountName: "shop",
			InitContainers:     []corev1.Container{{Name: "migrate", Image: "example.com/migrate:1"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "example.com/app:1"},
				{Name: "proxy", Image: "example.com/proxy:1"},
			},
		},
	}
}

func mustInject(t *testing.T, pod *corev1.Pod, sa *corev1.ServiceAccount, d Defaults) (*corev1.Pod, []string) {
	t.Helper()
	out, r, err := Inject(pod, sa, d)
	if err != nil {
		t.Fatalf("Inject: %v", err)
	}
	return out, r.Warnings
}

func container(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %q in %v", name, names(cs))
	return nil
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

func env(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func agentConfig(t *testing.T, c *corev1.Container) *config.Config {
	t.Helper()
	cfg, err := config.Load([]byte(env(c, config.EnvVar)))
	if err != nil {
		t.Fatalf("agent config: %v", err)
	}
	return cfg
}

func TestModes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ann        map[string]string
		wantInit   []string
		wantMain   []string
		agentArgs  []string
		native     bool
		wantMetric bool
	}{
		{name: "once", wantInit: []string{AgentContainer, "migrate"}, wantMain: []string{"app", "proxy"},
			agentArgs: []string{"init"}},
		{name: "native", ann: map[string]string{AnnotationRefresh: "2m"},
			wantInit: []string{AgentContainer, "migrate"}, wantMain: []string{"app", "proxy"},
			agentArgs: []string{"sidecar"}, native: true, wantMetric: true},
		{name: "classic", ann: map[string]string{AnnotationRefresh: "2m", AnnotationSidecar: SidecarClassic},
			wantInit: []string{InitContainer, "migrate"}, wantMain: []string{"app", "proxy", AgentContainer},
			agentArgs: []string{"sidecar"}, wantMetric: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := mustInject(t, testPod(tc.ann), nil, testDefaults())
			if got := names(out.Spec.InitContainers); !slices.Equal(got, tc.wantInit) {
				t.Errorf("init containers = %v, want %v", got, tc.wantInit)
			}
			if got := names(out.Spec.Containers); !slices.Equal(got, tc.wantMain) {
				t.Errorf("containers = %v, want %v", got, tc.wantMain)
			}
			agent := container(t, slices.Concat(out.Spec.InitContainers, out.Spec.Containers), AgentContainer)
			if !slices.Equal(agent.Command, []string{"/kvinject-agent"}) || !slices.Equal(agent.Args, tc.agentArgs) {
				t.Errorf("agent runs %v %v, want [/kvinject] %v", agent.Command, agent.Args, tc.agentArgs)
			}
			isNative := agent.RestartPolicy != nil && *agent.RestartPolicy == corev1.ContainerRestartPolicyAlways
			if isNative != tc.native {
				t.Errorf("native sidecar = %v, want %v", isNative, tc.native)
			}
			if tc.native {
				if agent.StartupProbe == nil || !slices.Equal(agent.StartupProbe.Exec.Command, []string{"/kvinject-agent", "probe"}) {
					t.Errorf("native sidecar startup probe = %+v, want exec /kvinject-agent probe", agent.StartupProbe)
				}
			} else if agent.StartupProbe != nil {
				t.Errorf("startup probe on a non-native agent: %+v", agent.StartupProbe)
			}
			if tc.name == "classic" {
				init := container(t, out.Spec.InitContainers, InitContainer)
				if !slices.Equal(init.Args, []string{"init"}) {
					t.Errorf("classic init args = %v", init.Args)
				}
			}
			cfg := agentConfig(t, agent)
			if (cfg.MetricsAddr != "") != tc.wantMetric {
				t.Errorf("metrics addr = %q, want set: %v", cfg.MetricsAddr, tc.wantMetric)
			}
			if cfg.Dir != AgentDir || cfg.Namespace != "shop" || cfg.ServiceAccount != "shop" {
				t.Errorf("config dir/ns/sa = %q %q %q", cfg.Dir, cfg.Namespace, cfg.ServiceAccount)
			}
		})
	}
}

// TestSecretsReachOnlyChosenContainers checks what a user checks: the app
// sees the files read-only; only the agent holds the token and the AZURE_* env.
func TestSecretsReachOnlyChosenContainers(t *testing.T) {
	for _, tc := range []struct {
		containers string
		want       []string
	}{
		{"", []string{"migrate", "app", "proxy"}},
		{"app, migrate", []string{"migrate", "app"}},
	} {
		ann := map[string]string{AnnotationMountPath: "/srv/app/secrets", AnnotationContainers: tc.containers}
		if tc.containers == "" {
			ann[AnnotationContainers] = "-"
		}
		out, _ := mustInject(t, testPod(ann), nil, testDefaults())
		var got []string
		for _, c := range slices.Concat(out.Spec.InitContainers, out.Spec.Containers) {
			if c.Name == AgentContainer {
				continue
			}
			for _, m := range c.VolumeMounts {
				if m.Name == TokenVolume {
					t.Errorf("container %s mounts the token volume", c.Name)
				}
				if m.Name == SecretsVolume {
					if !m.ReadOnly || m.MountPath != "/srv/app/secrets" {
						t.Errorf("container %s mounts secrets %+v, want read-only at /srv/app/secrets", c.Name, m)
					}
					got = append(got, c.Name)
				}
			}
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "AZURE_") || e.Name == config.EnvVar {
					t.Errorf("container %s has env %s", c.Name, e.Name)
				}
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("containers=%q: mounted in %v, want %v", tc.containers, got, tc.want)
		}
	}
}

func TestIdentityPrecedence(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "shop",
		Annotations: map[string]string{WorkloadIdentityClientID: clientB}}}
	d := testDefaults()
	d.ClientID, d.TenantID = clientC, tenant
	for _, tc := range []struct {
		name string
		pod  string
		sa   *corev1.ServiceAccount
		want string
	}{
		{"pod annotation wins", clientA, sa, clientA},
		{"then the ServiceAccount", "-", sa, clientB},
		{"then the defaults", "-", nil, clientC},
	} {
		out, _ := mustInject(t, testPod(map[string]string{AnnotationClientID: tc.pod, AnnotationTenantID: "-"}), tc.sa, d)
		agent := container(t, out.Spec.InitContainers, AgentContainer)
		if got := env(agent, "AZURE_CLIENT_ID"); got != tc.want {
			t.Errorf("%s: AZURE_CLIENT_ID = %s, want %s", tc.name, got, tc.want)
		}
		if got := env(agent, "AZURE_TENANT_ID"); got != tenant {
			t.Errorf("%s: AZURE_TENANT_ID = %s, want %s", tc.name, got, tenant)
		}
	}
}

func TestInjectDoesNotModifyInput(t *testing.T) {
	pod := testPod(map[string]string{AnnotationRefresh: "5m"})
	before := pod.DeepCopy()
	mustInject(t, pod, nil, testDefaults())
	if !apiequality.Semantic.DeepEqual(pod, before) {
		t.Error("Inject modified its input pod")
	}
}

func TestIdempotentAndDeterministic(t *testing.T) {
	for _, ann := range []map[string]string{nil, {AnnotationRefresh: "1m"}, {AnnotationRefresh: "1m", AnnotationSidecar: SidecarClassic}} {
		once, _ := mustInject(t, testPod(ann), nil, testDefaults())
		twice, warnings := mustInject(t, once, nil, testDefaults())
		if !apiequality.Semantic.DeepEqual(once, twice) || len(warnings) != 0 {
			t.Errorf("%v: injecting an injected pod changed it (warnings %v)", ann, warnings)
		}
		again, _ := mustInject(t, testPod(ann), nil, testDefaults())
		a, _ := json.Marshal(once)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Errorf("%v: two injections of the same pod differ", ann)
		}
	}
}

// Reinvoked after a later webhook added containers, Inject gives the targeted
// ones the secrets mount, and nothing else; once more, nothing changes.
func TestReinvocationMountsAddedContainers(t *testing.T) {
	for _, tc := range []struct {
		containers string
		want       map[string]bool // added container -> gets the mount
	}{
		{"", map[string]bool{"log-shipper": true, "late-init": true, "has-path": false}},
		{"app", map[string]bool{"log-shipper": false, "late-init": false, "has-path": false}},
	} {
		ann := map[string]string{AnnotationMountPath: "/srv/s"}
		if tc.containers != "" {
			ann[AnnotationContainers] = tc.containers
		}
		once, _ := mustInject(t, testPod(ann), nil, testDefaults())
		later := once.DeepCopy()
		later.Spec.Containers = append(later.Spec.Containers, corev1.Container{Name: "log-shipper"},
			corev1.Container{Name: "has-path", VolumeMounts: []corev1.VolumeMount{{Name: "other", MountPath: "/srv/s"}}})
		later.Spec.InitContainers = append(later.Spec.InitContainers, corev1.Container{Name: "late-init"})
		twice, _ := mustInject(t, later, nil, testDefaults())
		for _, c := range slices.Concat(twice.Spec.InitContainers, twice.Spec.Containers) {
			want, added := tc.want[c.Name]
			if !added {
				continue
			}
			got := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == SecretsVolume && m.MountPath == "/srv/s" && m.ReadOnly
			})
			if got != want {
				t.Errorf("containers=%q: added container %s has the mount: %v, want %v", tc.containers, c.Name, got, want)
			}
		}
		// Everything else as it was.
		strip := twice.DeepCopy()
		for _, cs := range [][]corev1.Container{strip.Spec.InitContainers, strip.Spec.Containers} {
			for i := range cs {
				if _, added := tc.want[cs[i].Name]; added && cs[i].Name != "has-path" {
					cs[i].VolumeMounts = nil
				}
			}
		}
		if !apiequality.Semantic.DeepEqual(strip, later) {
			t.Errorf("containers=%q: reinvocation changed more than the added containers' mounts", tc.containers)
		}
		thrice, _ := mustInject(t, twice, nil, testDefaults())
		if !apiequality.Semantic.DeepEqual(thrice, twice) {
			t.Errorf("containers=%q: a second reinvocation changed the pod", tc.containers)
		}
	}
}

func TestNotOptedIn(t *testing.T) {
	for _, v := range []string{"-", "false"} {
		pod := testPod(map[string]string{AnnotationInject: v})
		out, r, err := Inject(pod, nil, testDefaults())
		warnings := r.Warnings
		if err != nil || !apiequality.Semantic.DeepEqual(pod, out) {
			t.Errorf("inject=%s: got error %v or a changed pod", v, err)
		}
		if wantWarn := v == "-"; (len(warnings) > 0) != wantWarn {
			t.Errorf("inject=%s: warnings %v, want a warning: %v", v, warnings, wantWarn)
		}
	}
}

// TestFileGroup checks the documented choice: an existing fsGroup is kept;
// without one the agent's group is added to supplementalGroups, never fsGroup.
func TestFileGroup(t *testing.T) {
	out, _ := mustInject(t, testPod(nil), nil, testDefaults())
	sc := out.Spec.SecurityContext
	if sc.FSGroup != nil || !slices.Equal(sc.SupplementalGroups, []int64{AgentGID}) {
		t.Errorf("without fsGroup: securityContext = %+v, want supplementalGroups [65532] and no fsGroup", sc)
	}
	pod := testPod(nil)
	fsGroup := int64(2000)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: &fsGroup}
	out, _ = mustInject(t, pod, nil, testDefaults())
	if !apiequality.Semantic.DeepEqual(out.Spec.SecurityContext, pod.Spec.SecurityContext) {
		t.Errorf("with fsGroup: securityContext changed to %+v", out.Spec.SecurityContext)
	}
}

// TestRestricted evaluates the Pod Security Standards "restricted" policy,
// with the same checks the API server's admission plugin runs.
func TestRestricted(t *testing.T) {
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	for _, ann := range []map[string]string{nil, {AnnotationRefresh: "1m"}, {AnnotationRefresh: "1m", AnnotationSidecar: SidecarClassic}} {
		pod := testPod(ann)
		// A restricted app, so that any finding is about what kvinject added.
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
		for i := range pod.Spec.Containers {
			pod.Spec.Containers[i].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptrTo(false),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
		}
		pod.Spec.InitContainers[0].SecurityContext = pod.Spec.Containers[0].SecurityContext
		out, _ := mustInject(t, pod, nil, testDefaults())
		for _, r := range evaluator.EvaluatePod(restricted, &out.ObjectMeta, &out.Spec) {
			if !r.Allowed {
				t.Errorf("%v: restricted: %s: %s", ann, r.ForbiddenReason, r.ForbiddenDetail)
			}
		}
	}
}

func TestWarnings(t *testing.T) {
	for _, tc := range []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{AnnotationRefresh: "10s"}, "shorter than 30s"},
		{map[string]string{AnnotationSidecar: "classic"}, "no effect without kvinject.io/refresh"},
		{map[string]string{AnnotationFileMode: "0400"}, "no group read bit"},
		{map[string]string{AnnotationFileMode: "0444"}, "gives other users access"},
	} {
		_, warnings := mustInject(t, testPod(tc.ann), nil, testDefaults())
		if !strings.Contains(strings.Join(warnings, "\n"), tc.want) {
			t.Errorf("%v: warnings %q, want one containing %q", tc.ann, warnings, tc.want)
		}
	}
}

// TestServiceAccountNamed: the API server refuses a projected token in a pod
// without serviceAccountName, so kvinject names the one the pod runs as.
func TestServiceAccountNamed(t *testing.T) {
	for _, tc := range []struct{ name, deprecated, want string }{
		{"", "", "default"},
		{"", "legacy", "legacy"},
		{"shop", "", "shop"},
	} {
		pod := testPod(nil)
		pod.Spec.ServiceAccountName, pod.Spec.DeprecatedServiceAccount = tc.name, tc.deprecated
		out, _ := mustInject(t, pod, nil, testDefaults())
		if out.Spec.ServiceAccountName != tc.want || agentConfig(t, &out.Spec.InitContainers[0]).ServiceAccount != tc.want {
			t.Errorf("%+v: serviceAccountName %q, want %q in the pod and the agent config", tc, out.Spec.ServiceAccountName, tc.want)
		}
	}
}

// TestMetrics: a sidecar serves metrics on the port the chart's PodMonitor
// scrapes by name, unless the pod turns them off or the port could collide;
// an init-only agent has none.
func TestMetrics(t *testing.T) {
	if errs := validation.IsValidPortName(MetricsPortName); len(errs) > 0 {
		t.Errorf("port name %q: %v", MetricsPortName, errs)
	}
	refresh := map[string]string{AnnotationRefresh: "1m"}
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		change  func(*corev1.Pod)
		on      bool
		warning string
		off     bool // the webhook's --agent-metrics=false
	}{
		{name: "native sidecar", ann: refresh, on: true},
		{name: "classic sidecar", ann: map[string]string{AnnotationRefresh: "1m", AnnotationSidecar: SidecarClassic}, on: true},
		{name: "explicitly on", ann: map[string]string{AnnotationRefresh: "1m", AnnotationMetrics: "true"}, on: true},
		{name: "off", ann: map[string]string{AnnotationRefresh: "1m", AnnotationMetrics: "false"}},
		{name: "init only"},
		{name: "webhook off", ann: refresh, off: true},
		{name: "webhook off, pod on", ann: map[string]string{AnnotationRefresh: "1m", AnnotationMetrics: "true"}, off: true, on: true},
		{name: "webhook off, pod off", ann: map[string]string{AnnotationRefresh: "1m", AnnotationMetrics: "false"}, off: true},
		{name: "on without refresh", ann: map[string]string{AnnotationMetrics: "true"}, warning: "kvinject.io/metrics has no effect without kvinject.io/refresh"},
		{name: "hostNetwork", ann: refresh, change: func(p *corev1.Pod) { p.Spec.HostNetwork = true }, warning: "a hostNetwork pod shares the node's network"},
		{name: "hostNetwork, off", ann: map[string]string{AnnotationRefresh: "1m", AnnotationMetrics: "false"}, change: func(p *corev1.Pod) { p.Spec.HostNetwork = true }},
		{name: "port taken", ann: refresh, change: func(p *corev1.Pod) { p.Spec.Containers[1].Ports = []corev1.ContainerPort{{ContainerPort: 9797}} },
			warning: `container "proxy" uses port 9797 or the port name kvinject-agent`},
		{name: "port name taken", ann: refresh, change: func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Ports = []corev1.ContainerPort{{Name: MetricsPortName, ContainerPort: 8080}}
		}, warning: `container "migrate" uses port 9797 or the port name kvinject-agent`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(tc.ann)
			if tc.change != nil {
				tc.change(pod)
			}
			d := testDefaults()
			d.NoMetrics = tc.off
			out, warnings := mustInject(t, pod, nil, d)
			if tc.warning == "" && len(warnings) > 0 || tc.warning != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], tc.warning)) {
				t.Errorf("warnings %q, want %q", warnings, tc.warning)
			}
			var ports []corev1.ContainerPort
			for _, c := range allContainers(out) {
				if c.Name == AgentContainer || c.Name == InitContainer {
					ports = append(ports, c.Ports...)
					if c.Name == InitContainer && len(c.Ports) > 0 {
						t.Errorf("the init agent declares %v", c.Ports)
					}
				}
			}
			agent := container(t, allContainers(out), AgentContainer)
			cfg := agentConfig(t, agent)
			want := []corev1.ContainerPort{{Name: "kvinject-agent", ContainerPort: 9797, Protocol: corev1.ProtocolTCP}}
			if !tc.on {
				want = nil
			}
			if !apiequality.Semantic.DeepEqual(ports, want) || (cfg.MetricsAddr == ":9797") != tc.on || (cfg.MetricsAddr == "") == tc.on {
				t.Errorf("agent ports %v, metrics addr %q; want ports %v", ports, cfg.MetricsAddr, want)
			}
		})
	}
	_, _, err := Inject(testPod(map[string]string{AnnotationRefresh: "1m", AnnotationMetrics: "no"}), nil, testDefaults())
	if err == nil || !strings.Contains(err.Error(), `kvinject.io/metrics: "no" is not "true" or "false"`) {
		t.Errorf("metrics: no: error %v", err)
	}
}

// TestWarningsAnnotation: an injected pod carries its warnings, one a line,
// bounded in size; a value the pod brought is replaced.
func TestWarningsAnnotation(t *testing.T) {
	out, warnings := mustInject(t, testPod(map[string]string{AnnotationRefresh: "10s", AnnotationFileMode: "0444"}), nil, testDefaults())
	if got := out.Annotations[AnnotationWarnings]; len(warnings) != 2 || got != warnings[0]+"\n"+warnings[1] {
		t.Errorf("annotation %q, warnings %q", got, warnings)
	}
	out, warnings = mustInject(t, testPod(map[string]string{AnnotationWarnings: "forged"}), nil, testDefaults())
	if got, ok := out.Annotations[AnnotationWarnings]; ok || len(warnings) > 0 {
		t.Errorf("no warnings, yet the annotation is %q (warnings %q)", got, warnings)
	}
	var objects strings.Builder
	for i := range 300 {
		fmt.Fprintf(&objects, "- {objectName: s%d, objectType: secret, filePermission: \"0600\"}\n", i)
	}
	out, warnings = mustInject(t, testPod(map[string]string{AnnotationObjects: objects.String()}), nil, testDefaults())
	got := out.Annotations[AnnotationWarnings]
	if len(warnings) != 300 || len(got) > maxWarningsAnnotation || !strings.HasPrefix(got, warnings[0]+"\n") ||
		!strings.HasSuffix(got, "more: run kvinject inject on the manifest to see them all") {
		t.Errorf("%d warnings in an annotation of %d bytes: ...%s", len(warnings), len(got), got[max(0, len(got)-200):])
	}
}

func TestTemplateFuncNamesMatchParser(t *testing.T) {
	fm := parseFuncs()
	if len(fm) != len(config.TemplateFuncNames) {
		t.Errorf("parser has %d functions, config.TemplateFuncNames %d", len(fm), len(config.TemplateFuncNames))
	}
	for name := range config.TemplateObjectFuncs {
		if !slices.Contains(config.TemplateFuncNames, name) {
			t.Errorf("object function %q is not in config.TemplateFuncNames", name)
		}
	}
}

// TestEnvCollision: a targeted container that already sets the variable is
// denied, naming the annotation and the container; an untargeted one is fine.
func TestEnvCollision(t *testing.T) {
	pod := testPod(map[string]string{Prefix + EnvPrefix + "DB_PASSWORD": "db-password", AnnotationContainers: "app"})
	pod.Spec.Containers[1].Env = []corev1.EnvVar{{Name: "DB_PASSWORD", Value: "proxy's own"}}
	out, _ := mustInject(t, pod, nil, testDefaults())
	if c := container(t, out.Spec.Containers, "proxy"); len(c.Env) != 1 {
		t.Errorf("untargeted proxy got variables: %+v", c.Env)
	}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DB_PASSWORD", Value: "old"}}
	_, _, err := Inject(pod, nil, testDefaults())
	want := `kvinject.io/env-DB_PASSWORD: container "app" already sets environment variable DB_PASSWORD`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
}

// TestOnChange: restart needs a refreshing native sidecar and is the only
// value besides none; the agent gets the restart rule only with restart.
func TestOnChange(t *testing.T) {
	for v, want := range map[string]string{
		"bogus":                     `kvinject.io/on-change: "bogus" is not none, restart or a hook`,
		"http://10.0.0.1:80/reload": "the host must be 127.0.0.1 or [::1]",
		"http://127.0.0.1/reload":   "needs a port",
		"https://127.0.0.1:8443/":   "want http://127.0.0.1:<port>/<path>",
		"restart":                   "kvinject.io/on-change: restart needs the native sidecar",
	} {
		_, _, err := Inject(testPod(map[string]string{AnnotationOnChange: v, AnnotationRefresh: "1m", AnnotationSidecar: SidecarClassic}), nil, testDefaults())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("on-change %q: %v, want %q", v, err, want)
		}
	}
	for v, rules := range map[string]int{"none": 0, "restart": 1} {
		out, _ := mustInject(t, testPod(map[string]string{AnnotationOnChange: v, AnnotationRefresh: "1m"}), nil, testDefaults())
		a := container(t, out.Spec.InitContainers, AgentContainer)
		if len(a.RestartPolicyRules) != rules {
			t.Errorf("on-change %q: restart rules %+v", v, a.RestartPolicyRules)
		}
		if cfg := agentConfig(t, a); (cfg.OnChange == config.OnChangeRestart) != (rules == 1) || (cfg.Version == config.VersionEnv) != (rules == 1) {
			t.Errorf("on-change %q: config onChange %q version %d", v, cfg.OnChange, cfg.Version)
		}
	}
}

// TestOnChangeHook: a loopback hook works with either sidecar and needs no
// restart rule.
func TestOnChangeHook(t *testing.T) {
	for _, sidecar := range []string{SidecarNative, SidecarClassic} {
		out, _ := mustInject(t, testPod(map[string]string{AnnotationOnChange: "http://127.0.0.1:8080/reload", AnnotationRefresh: "1m", AnnotationSidecar: sidecar}), nil, testDefaults())
		var a *corev1.Container
		if sidecar == SidecarNative {
			a = container(t, out.Spec.InitContainers, AgentContainer)
		} else {
			a = container(t, out.Spec.Containers, AgentContainer)
		}
		if cfg := agentConfig(t, a); cfg.OnChange != "http://127.0.0.1:8080/reload" || len(a.RestartPolicyRules) != 0 {
			t.Errorf("%s: onChange %q, rules %+v", sidecar, cfg.OnChange, a.RestartPolicyRules)
		}
	}
}

// Identity bindings: the pod chooses only whether its agent uses the
// webhook's proxy; where the proxy is comes from the defaults alone, and the
// token changes audience with it.
func TestIdentityBinding(t *testing.T) {
	ib := IdentityBinding{TokenProxy: "https://kubernetes.default.svc", SNIName: "ib.test",
		CAConfigMap: IdentityBindingCAConfigMap, Audience: IdentityBindingAudience}
	d := Defaults{Image: "img", IdentityBinding: ib}
	proxyEnv := []string{"AZURE_KUBERNETES_TOKEN_PROXY", "AZURE_KUBERNETES_SNI_NAME", "AZURE_KUBERNETES_CA_FILE"}
	check := func(t *testing.T, pod *corev1.Pod, on bool) {
		t.Helper()
		agent := container(t, pod.Spec.InitContainers, AgentContainer)
		for _, name := range proxyEnv {
			if got := env(agent, name) != ""; got != on {
				t.Errorf("agent has %s: %t, want %t", name, got, on)
			}
		}
		var src []corev1.VolumeProjection
		for _, v := range pod.Spec.Volumes {
			if v.Name == TokenVolume {
				src = v.Projected.Sources
			}
		}
		aud := TokenAudience
		if on {
			aud = IdentityBindingAudience
		}
		if len(src) == 0 || src[0].ServiceAccountToken.Audience != aud || (len(src) == 2) != on {
			t.Errorf("token volume sources %+v, want a token for %s and the CA ConfigMap only with identity binding", src, aud)
		}
		for _, c := range allContainers(pod) {
			if c.Name != AgentContainer && slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return strings.HasPrefix(e.Name, "AZURE_KUBERNETES_") }) {
				t.Errorf("container %s got identity-binding variables", c.Name)
			}
		}
	}

	on, r, err := Inject(testPod(map[string]string{AnnotationIdentityBinding: "true"}), nil, d)
	if err != nil || !r.IdentityBinding {
		t.Fatalf("Inject: %v, report identity binding %t", err, r.IdentityBinding)
	}
	check(t, on, true)
	if got := env(container(t, on.Spec.InitContainers, AgentContainer), "AZURE_KUBERNETES_TOKEN_PROXY"); got != ib.TokenProxy {
		t.Errorf("AZURE_KUBERNETES_TOKEN_PROXY = %q, want the webhook's %q", got, ib.TokenProxy)
	}
	off, _ := mustInject(t, testPod(nil), nil, d)
	check(t, off, false)

	d.IdentityBinding.Default = true
	byDefault, _ := mustInject(t, testPod(nil), nil, d)
	check(t, byDefault, true)
	optOut, _ := mustInject(t, testPod(map[string]string{AnnotationIdentityBinding: "false"}), nil, d)
	check(t, optOut, false)

	// Without a CA ConfigMap the agent trusts its image's roots: no CA file.
	d.IdentityBinding.CAConfigMap = ""
	noCA, _ := mustInject(t, testPod(nil), nil, d)
	if agent := container(t, noCA.Spec.InitContainers, AgentContainer); env(agent, "AZURE_KUBERNETES_CA_FILE") != "" || env(agent, "AZURE_KUBERNETES_TOKEN_PROXY") == "" {
		t.Errorf("without a CA ConfigMap: CA file %q, proxy %q", env(agent, "AZURE_KUBERNETES_CA_FILE"), env(agent, "AZURE_KUBERNETES_TOKEN_PROXY"))
	}

	// A webhook without a proxy denies the pod that asks for one.
	_, _, err = Inject(testPod(map[string]string{AnnotationIdentityBinding: "true"}), nil, Defaults{Image: "img"})
	if err == nil || !strings.Contains(err.Error(), AnnotationIdentityBinding+": this cluster's kvinject has no identity-binding token proxy") {
		t.Errorf("identity binding without a proxy: err = %v", err)
	}
}

func TestCheckDefaultsIdentityBinding(t *testing.T) {
	for _, tc := range []struct {
		ib   IdentityBinding
		want []string
	}{
		{IdentityBinding{}, nil},
		{IdentityBinding{TokenProxy: "https://kubernetes.default.svc", Audience: IdentityBindingAudience}, nil},
		{IdentityBinding{Default: true}, []string{DefaultsIdentityBinding}},
		{IdentityBinding{TokenProxy: "http://proxy", SNIName: "bad name", CAConfigMap: "Bad_CA"},
			[]string{DefaultsTokenProxy, DefaultsSNIName, DefaultsIBCAConfigMap, DefaultsIBAudience}},
		{IdentityBinding{TokenProxy: "https://proxy/?q=1", Audience: "a"}, []string{DefaultsTokenProxy}},
	} {
		var got []string
		for _, p := range CheckDefaults(Defaults{Image: "img", IdentityBinding: tc.ib}) {
			got = append(got, p.Field)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("CheckDefaults(%+v) fields %v, want %v", tc.ib, got, tc.want)
		}
	}
}

// No pod steers where its agent's token goes: the proxy settings a pod's
// own containers carry (as AKS's webhook, or the pod's author, would set
// them) do not reach the agent, and there is no annotation for them.
func TestIdentityBindingNotSteeredByThePod(t *testing.T) {
	d := Defaults{Image: "img", IdentityBinding: IdentityBinding{TokenProxy: "https://kubernetes.default.svc",
		SNIName: "ib.test", CAConfigMap: IdentityBindingCAConfigMap, Audience: IdentityBindingAudience}}
	pod := testPod(map[string]string{AnnotationIdentityBinding: "true"})
	pod.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "AZURE_KUBERNETES_TOKEN_PROXY", Value: "https://attacker.example"},
		{Name: "AZURE_KUBERNETES_SNI_NAME", Value: "attacker.example"},
		{Name: "AZURE_KUBERNETES_CA_FILE", Value: "/attacker/ca.crt"},
	}
	out, _ := mustInject(t, pod, nil, d)
	agent := container(t, out.Spec.InitContainers, AgentContainer)
	for name, want := range map[string]string{
		"AZURE_KUBERNETES_TOKEN_PROXY": d.IdentityBinding.TokenProxy,
		"AZURE_KUBERNETES_SNI_NAME":    d.IdentityBinding.SNIName,
		"AZURE_KUBERNETES_CA_FILE":     TokenDir + "/" + IdentityBindingCAPath,
	} {
		if got := env(agent, name); got != want {
			t.Errorf("agent %s = %q, want the webhook's %q", name, got, want)
		}
	}
	for _, key := range []string{Prefix + "identity-binding-token-proxy", Prefix + "token-proxy", Prefix + "identity-binding-ca-configmap"} {
		_, _, err := Inject(testPod(map[string]string{AnnotationIdentityBinding: "true", key: "https://attacker.example"}), nil, d)
		if err == nil || !strings.Contains(err.Error(), key+": unknown annotation") {
			t.Errorf("%s: err = %v, want it denied as an unknown annotation", key, err)
		}
	}
}
