package injector

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kvinject/kvinject/agent/config"
)

// Plan is what Inject gives a pod's agent, read from the parsed spec, for
// tools that explain a workload or derive its Azure grants (kvinject explain,
// kvinject grants) without a second parser.
type Plan struct {
	// ClientID and TenantID are the identity the agent signs in as.
	ClientID, TenantID string
	// ClientIDFrom and TenantIDFrom name where each came from: the pod
	// annotation key, "ServiceAccount <ns>/<name> annotation <key>", or
	// DefaultsClientID / DefaultsTenantID.
	ClientIDFrom, TenantIDFrom string
	// Namespace and ServiceAccount make the federated credential's subject.
	Namespace, ServiceAccount string
	// IdentityBinding: the agent signs in through the cluster's AKS
	// identity-binding token proxy, which needs no federated credential of
	// the cluster's (Defaults.IdentityBinding).
	IdentityBinding bool
	// Audience is the projected token's audience.
	Audience  string
	Cloud     config.Cloud
	Refresh   time.Duration
	Sidecar   string
	MountPath string
	// Containers get the mount; nil is every container.
	Containers []string
	// Files are sorted by name.
	Files []config.File
}

// Explain returns the plan Inject carries out for pod, with Inject's
// warnings and errors (the same *InvalidError the webhook denies with). A
// pod Inject leaves alone (not opted in, or injected before) has a nil Plan.
func Explain(pod *corev1.Pod, sa *corev1.ServiceAccount, d Defaults) (*Plan, []string, error) {
	out, r, err := Inject(pod, sa, d)
	warnings := r.Warnings
	if err != nil || out.Annotations[AnnotationStatus] == pod.Annotations[AnnotationStatus] {
		return nil, warnings, err
	}
	s, _, err := parseSpec(pod.DeepCopy(), sa, d)
	if err != nil {
		return nil, warnings, err
	}
	return &Plan{
		ClientID: s.clientID, TenantID: s.tenantID,
		ClientIDFrom: s.clientIDFrom, TenantIDFrom: s.tenantIDFrom,
		Namespace: pod.Namespace, ServiceAccount: ServiceAccountName(pod),
		IdentityBinding: s.identityBinding, Audience: s.audience(d),
		Cloud: s.cloud, Refresh: s.refresh, Sidecar: s.sidecar,
		MountPath: s.mountPath, Containers: s.containers, Files: s.files,
	}, warnings, nil
}
