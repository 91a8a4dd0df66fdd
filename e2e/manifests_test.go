package e2e

import (
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// manifests/ installs on the real API server, checked with a server-side dry
// run: every object passes the API server's validation, cert-manager's CRD
// schemas (the pinned release's CRDs are installed) and admission, with no
// warning. A dry run of namespaced objects needs their namespace to exist,
// so the Namespace is applied for real first, as `kubectl apply` would do
// it first on a real install.
func TestManifestsDryRun(t *testing.T) {
	t.Parallel()
	c := testCluster(t)
	ctx := t.Context()

	docs, err := renderManifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ns, ok := docs["Namespace/"+installNamespace]
	if !ok {
		t.Fatalf("manifests/ renders no Namespace %s", installNamespace)
	}
	if _, _, err := kubectl(ctx, c, ns, "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	out, stderr, err := kubectl(ctx, c, nil, "apply", "--server-side", "--dry-run=server", "-k", manifestsDir)
	if err != nil {
		t.Fatal(err)
	}
	var applied []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if obj, ok := strings.CutSuffix(line, " serverside-applied (server dry run)"); ok {
			applied = append(applied, obj)
		} else {
			t.Errorf("kubectl apply: unexpected line %q", line)
		}
	}
	var want []string
	for kind := range docs {
		want = append(want, kind)
	}
	slices.Sort(want)
	if len(applied) != len(docs) {
		t.Errorf("dry run applied %d objects, manifests/ has %d:\napplied: %s\nrendered: %s", len(applied), len(docs), strings.Join(applied, ", "), strings.Join(want, ", "))
	}
	for _, line := range strings.Split(string(stderr), "\n") {
		// kubectl 1.32 warns about its skew to newer servers; anything else
		// the API server says (deprecations, Pod Security) is a finding.
		if line != "" && !strings.Contains(line, "version difference between client") {
			t.Errorf("kubectl apply warned: %s", line)
		}
	}

	// A dry run creates nothing.
	if _, err := c.Kube.AppsV1().Deployments(installNamespace).Get(ctx, "kvinject-webhook", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("deployment kvinject-webhook after a dry run: %v, want not found", err)
	}
	if _, err := c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "kvinject", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("MutatingWebhookConfiguration kvinject after a dry run: %v, want not found", err)
	}
}
