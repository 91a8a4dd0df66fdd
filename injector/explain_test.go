package injector

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/agent/config"
)

// Explain's plan is the spec Inject wrote into the agent, with where the
// identity came from.
func TestExplainIdentitySources(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "shop",
		Annotations: map[string]string{WorkloadIdentityClientID: clientB}}}
	d := testDefaults()
	d.ClientID, d.TenantID = clientC, tenant
	for _, tc := range []struct {
		name           string
		pod            string
		sa             *corev1.ServiceAccount
		want, wantFrom string
	}{
		{"pod annotation", clientA, sa, clientA, AnnotationClientID},
		{"ServiceAccount", "-", sa, clientB, "ServiceAccount shop/shop annotation " + WorkloadIdentityClientID},
		{"default", "-", nil, clientC, DefaultsClientID},
	} {
		pod := testPod(map[string]string{AnnotationClientID: tc.pod, AnnotationTenantID: "-"})
		plan, _, err := Explain(pod, tc.sa, d)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if plan.ClientID != tc.want || plan.ClientIDFrom != tc.wantFrom {
			t.Errorf("%s: client %s from %q, want %s from %q", tc.name, plan.ClientID, plan.ClientIDFrom, tc.want, tc.wantFrom)
		}
		if plan.TenantID != tenant || plan.TenantIDFrom != DefaultsTenantID {
			t.Errorf("%s: tenant %s from %q, want %s from defaults", tc.name, plan.TenantID, plan.TenantIDFrom, tenant)
		}
		out, _ := mustInject(t, pod, tc.sa, d)
		cfg := agentConfig(t, container(t, out.Spec.InitContainers, AgentContainer))
		if !slices.EqualFunc(plan.Files, cfg.Files, func(a, b config.File) bool { return a.Name == b.Name && *a.Object == *b.Object }) {
			t.Errorf("%s: plan files %+v, agent files %+v", tc.name, plan.Files, cfg.Files)
		}
		if plan.Namespace != "shop" || plan.ServiceAccount != "shop" {
			t.Errorf("%s: subject %s/%s, want shop/shop", tc.name, plan.Namespace, plan.ServiceAccount)
		}
	}
}

// A pod Inject leaves alone has no plan; an invalid one has Inject's error.
func TestExplainNotOptedInAndInvalid(t *testing.T) {
	plan, _, err := Explain(testPod(map[string]string{AnnotationInject: "false"}), nil, testDefaults())
	if plan != nil || err != nil {
		t.Errorf("not opted in: plan %+v, err %v", plan, err)
	}
	_, _, err = Explain(testPod(map[string]string{AnnotationVault: "-"}), nil, testDefaults())
	if err == nil {
		t.Error("a secret without a vault explained without error")
	}
}
