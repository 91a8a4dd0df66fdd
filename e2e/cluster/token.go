package cluster

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodToken issues a service-account token bound to pod, as the kubelet does
// for a projected serviceAccountToken volume: TokenRequest for the pod's
// ServiceAccount, bound to the pod's name and UID, for audience (usually
// AzureAudience), valid for expiry (the API server's minimum is 10 minutes).
// pod must exist in the API server (it needs its UID) and its ServiceAccount too.
func (c *Cluster) PodToken(ctx context.Context, pod *corev1.Pod, audience string, expiry time.Duration) (*authenticationv1.TokenRequestStatus, error) {
	if pod.UID == "" {
		return nil, fmt.Errorf("pod %s/%s has no UID: read it back from the API server first", pod.Namespace, pod.Name)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	seconds := int64(expiry / time.Second)
	tr, err := c.Kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: &seconds,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind:       "Pod",
				APIVersion: "v1",
				Name:       pod.Name,
				UID:        pod.UID,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token request for service account %s/%s bound to pod %s: %w", pod.Namespace, sa, pod.Name, err)
	}
	return &tr.Status, nil
}
