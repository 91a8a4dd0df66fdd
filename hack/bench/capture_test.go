package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/webhook"
)

// TestCapturedReview checks the bench's review body: an admission.k8s.io/v1
// CREATE of the template's pod as the API server sent it, with the
// ServiceAccount plugin's kube-api-access volume mounted in every container,
// and the webhook patches it, also with that volume's suffix varied as the
// distinct-pods runs vary it. Regenerate it with go run ./hack/bench -capture.
func TestCapturedReview(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", filepath.Base(capturedReview)))
	if err != nil {
		t.Fatalf("%v (go run ./hack/bench -capture)", err)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		t.Fatal(err)
	}
	req := review.Request
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || req == nil ||
		req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.UID == "" {
		t.Fatalf("not a pod CREATE review: %s", body[:min(len(body), 300)])
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		t.Fatal(err)
	}
	suffix, err := accessSuffix(body)
	if err != nil {
		t.Fatal(err)
	}
	volume := "kube-api-access-" + suffix
	var projected bool
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume && v.Projected != nil && len(v.Projected.Sources) > 0 && v.Projected.Sources[0].ServiceAccountToken != nil {
			projected = true
		}
	}
	if !projected {
		t.Errorf("no projected token volume %s in %v", volume, pod.Spec.Volumes)
	}
	for _, c := range pod.Spec.Containers {
		if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].Name != volume {
			t.Errorf("container %s mounts %v, want only %s", c.Name, c.VolumeMounts, volume)
		}
	}
	if pod.Spec.ServiceAccountName == "" || pod.Annotations[injector.AnnotationInject] != "true" {
		t.Errorf("pod names no ServiceAccount or does not opt in: %+v", pod.ObjectMeta)
	}

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pod.Spec.ServiceAccountName, Namespace: req.Namespace, Annotations: map[string]string{
		"azure.workload.identity/client-id": "6f1d2e3c-4b5a-4978-8a9b-0c1d2e3f4a5b",
		"azure.workload.identity/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
	}}}
	h := &webhook.Handler{Defaults: injector.Defaults{Image: "ghcr.io/kvinject/kvinject:bench"}, ServiceAccounts: oneServiceAccount{sa}, Log: slog.New(slog.DiscardHandler)}
	for _, b := range [][]byte{body, bytes.ReplaceAll(body, []byte(suffix), []byte("00042"))} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(b)).WithContext(context.Background()))
		var answer admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.Response == nil {
			t.Fatalf("answer %s: %v", rec.Body.Bytes(), err)
		}
		if r := answer.Response; !r.Allowed || r.PatchType == nil || !strings.Contains(string(r.Patch), "kvinject-agent") {
			t.Errorf("review not patched: %s", rec.Body.Bytes())
		}
	}
}

type oneServiceAccount struct{ sa *corev1.ServiceAccount }

func (s oneServiceAccount) ServiceAccount(_ context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	if namespace != s.sa.Namespace || name != s.sa.Name {
		return nil, apierrors.NewNotFound(corev1.Resource("serviceaccounts"), name)
	}
	return s.sa, nil
}
