// Package e2e holds the end-to-end tests: a real kube-apiserver, etcd and
// kube-controller-manager for the API side, and a second cluster with a real
// node (kubelet, containerd, runc) for the pods (see e2e/cluster). Run with
// `make e2e` (as root).
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kvinject/kvinject/e2e/cluster"
)

// shared is the control plane every test in this package uses (starting one
// takes seconds on a loaded machine); tests isolate themselves by namespace.
var (
	shared    *cluster.Cluster
	sharedErr error
)

func TestMain(m *testing.M) {
	// With a node (root, KVINJECT_NODE_ASSETS), everything runs inside
	// namespaces of the run's own: see cluster.Isolate. The tests of the API
	// side share one cluster without a node; those on the node (node_test.go)
	// share another, with its own emulator and webhook.
	if code, done := cluster.Isolate(); done {
		os.Exit(code)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if _, err := cluster.Assets(); err != nil {
		sharedErr = err // each test skips, or fails when KVINJECT_REQUIRE_E2E=1
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	c, err := cluster.Start(ctx, cluster.Options{ControllerManager: true, CertManagerCRDs: true})
	cancel()
	if err != nil {
		sharedErr = fmt.Errorf("start control plane: %w", err)
		return m.Run()
	}
	shared = c
	defer func() {
		stopNode()
		stopStack(sharedStack)
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop control plane: %v\n", err)
		}
	}()
	return m.Run()
}

// testCluster returns the shared cluster, or skips the test (fails it with
// KVINJECT_REQUIRE_E2E=1) when the binaries are missing, or fails it when the
// cluster did not start.
func testCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	if shared != nil {
		return shared
	}
	cluster.SkipOrFailWithoutAssets(t)
	t.Fatal(sharedErr)
	return nil
}

// testNamespace creates a namespace for one test, deleted when it ends.
func testNamespace(t *testing.T, c *cluster.Cluster, labels map[string]string) string {
	t.Helper()
	ns, err := c.CreateNamespace(t.Context(), "e2e", labels)
	if err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount admission plugin (on with a node) admits no pod
	// before the namespace's default ServiceAccount exists.
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.Kube.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s has no default ServiceAccount: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		// Namespace deletion is asynchronous; the cluster dies with the package anyway.
		_ = c.Kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}
