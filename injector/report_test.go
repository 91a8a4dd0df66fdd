package injector

import (
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kvinject/kvinject/agent/config"
)

// TestReportIsWhatTheAgentReads holds Inject's Report to the pod it returns,
// for every golden input Inject accepts: the objects and vaults are those of
// the agent's configuration as config.Load reads it, the mode is the agent
// containers the pod got, and a second Inject reports ModeReinvoked.
func TestReportIsWhatTheAgentReads(t *testing.T) {
	inputs, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	modes := map[string]bool{}
	for _, in := range inputs {
		pod, sa := readCase(t, in)
		out, r, err := Inject(pod, sa, testDefaults())
		if err != nil || r.Mode == "" {
			continue
		}
		name := filepath.Base(in)
		modes[r.Mode] = true

		raw := agentEnv(out, config.EnvVar)
		c, err := config.Load([]byte(raw))
		if err != nil {
			t.Fatalf("%s: agent config: %v", name, err)
		}
		var vaults, objects []string
		for _, f := range c.Files {
			if f.Object == nil {
				continue
			}
			u, err := url.Parse(f.Object.Vault)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			id := u.Host + "/" + string(f.Object.Kind) + "/" + f.Object.Name
			if f.Object.Version != "" {
				id += "@" + f.Object.Version
			}
			if !slices.Contains(vaults, f.Object.Vault) {
				vaults = append(vaults, f.Object.Vault)
			}
			if !slices.Contains(objects, id) {
				objects = append(objects, id)
			}
		}
		if !slices.Equal(r.Vaults, vaults) || !slices.Equal(r.Objects, objects) {
			t.Errorf("%s: report vaults %q objects %q, the agent reads %q %q", name, r.Vaults, r.Objects, vaults, objects)
		}
		if want := agentMode(out); r.Mode != want {
			t.Errorf("%s: report mode %q, the pod has a %s agent", name, r.Mode, want)
		}
		if r.ClientIDFrom == "" || r.TenantIDFrom == "" {
			t.Errorf("%s: report names no identity source: %+v", name, r)
		}
		if _, again, err := Inject(out, sa, testDefaults()); err != nil || again.Mode != ModeReinvoked || again.Objects != nil {
			t.Errorf("%s: second Inject reports %+v, %v; want mode %s and no objects", name, again, err, ModeReinvoked)
		}
	}
	for _, m := range []string{ModeInit, ModeSidecar, ModeClassic} {
		if !modes[m] {
			t.Errorf("no golden input reports mode %s", m)
		}
	}
}

// TestReportIdentitySource: the report names the field the identity came from.
func TestReportIdentitySource(t *testing.T) {
	_, r, err := Inject(testPod(nil), nil, testDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if r.ClientIDFrom != AnnotationClientID || r.TenantIDFrom != AnnotationTenantID {
		t.Errorf("identity from %q, %q; want the pod annotations", r.ClientIDFrom, r.TenantIDFrom)
	}
	sa := &corev1.ServiceAccount{}
	sa.Annotations = map[string]string{WorkloadIdentityClientID: clientB}
	_, r, err = Inject(testPod(map[string]string{AnnotationClientID: "-"}), sa, testDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.ClientIDFrom, "ServiceAccount shop/shop") {
		t.Errorf("client ID from %q, want the ServiceAccount", r.ClientIDFrom)
	}
	_, r, _ = Inject(testPod(map[string]string{AnnotationInject: "false"}), nil, testDefaults())
	if r.Mode != "" || r.Objects != nil {
		t.Errorf("a pod not opted in reports %+v", r)
	}
}

// agentEnv is the value of the agent container's environment variable name.
func agentEnv(pod *corev1.Pod, name string) string {
	for _, c := range allContainers(pod) {
		for _, e := range c.Env {
			if e.Name == name && (c.Name == AgentContainer || c.Name == InitContainer) {
				return e.Value
			}
		}
	}
	return ""
}

// agentMode is the mode of the agent containers pod carries.
func agentMode(pod *corev1.Pod) string {
	for _, c := range pod.Spec.Containers {
		if c.Name == AgentContainer {
			return ModeClassic
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == AgentContainer && c.RestartPolicy != nil {
			return ModeSidecar
		}
	}
	return ModeInit
}
