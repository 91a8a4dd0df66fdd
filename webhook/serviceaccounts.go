package webhook

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ServiceAccounts looks up the ServiceAccount a pod runs as. The injector reads
// only its metadata (the azure.workload.identity/* annotations).
type ServiceAccounts interface {
	// ServiceAccount returns the named ServiceAccount, or an error for which
	// apierrors.IsNotFound is true. The caller must not modify the result.
	ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
}

// serviceAccountGVK is the kind of the metadata-only objects in the cache.
var serviceAccountGVK = corev1.SchemeGroupVersion.WithKind("ServiceAccount")

// newServiceAccountMeta returns an empty metadata-only ServiceAccount, the
// shape the cache stores: annotations are all the injector needs, so the
// webhook does not hold secrets lists or image pull secrets in memory.
func newServiceAccountMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(serviceAccountGVK)
	return m
}

// cachedServiceAccounts reads from the informer cache and, on a miss only,
// from the API server. The miss path covers the informer's lag when a
// ServiceAccount is created right before its pod, as the API server's own
// ServiceAccount admission does; every other review is served from memory.
type cachedServiceAccounts struct {
	cache client.Reader
	live  client.Reader
}

func (s cachedServiceAccounts) ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	m := newServiceAccountMeta()
	err := s.cache.Get(ctx, key, m)
	if apierrors.IsNotFound(err) && s.live != nil {
		err = s.live.Get(ctx, key, m)
	}
	if err != nil {
		return nil, fmt.Errorf("get serviceaccount %s/%s: %w", namespace, name, err)
	}
	return &corev1.ServiceAccount{ObjectMeta: m.ObjectMeta}, nil
}
