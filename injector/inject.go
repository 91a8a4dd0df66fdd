// Package injector turns an annotated pod into one that gets its Key Vault
// objects from a kvinject agent. It is pure: pod, ServiceAccount and defaults
// in, pod and warnings out. No clients, no clocks, no globals, no I/O.
package injector

import (
	"errors"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/agent/config"
)

// Defaults are what the webhook (or `kvinject inject`) supplies for anything a
// pod does not set itself. Every field is a webhook flag with an env-var twin.
type Defaults struct {
	// Image is the agent image: the same image as the webhook.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Vault is the default vault, a name or a URL.
	Vault string
	// ClientID and TenantID are used when neither the pod nor its ServiceAccount sets them.
	ClientID string
	TenantID string
	// Cloud gives the authority host and vault DNS suffix.
	Cloud config.Cloud
	// Refresh is the default refresh interval; zero means fetch once.
	Refresh config.Duration
	// Sidecar is "native" or "classic".
	Sidecar string
	// MountPath is where app containers see the files.
	MountPath string
	// FileMode is the default mode of written files.
	FileMode int32
	// Resources are the agent's requests and limits.
	Resources corev1.ResourceRequirements
	// VolumeSizeLimit bounds the in-memory volume.
	VolumeSizeLimit resource.Quantity
}

// Inject returns a mutated copy of pod and warnings for the user. pod is never
// modified. A pod without kvinject.io/inject: "true" is returned unchanged.
// sa may be nil when the pod's ServiceAccount is unknown (offline use).
func Inject(pod *corev1.Pod, sa *corev1.ServiceAccount, d Defaults) (*corev1.Pod, []string, error) {
	return nil, nil, errors.New("injector: not yet built")
}
