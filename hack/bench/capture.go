package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kvinject/kvinject/e2e/cluster"
)

// capturedReview is the bench's review body: what a real kube-apiserver, with
// the ServiceAccount admission plugin on, sent a webhook for the pod of
// webhook/testdata/review-web.json. go run ./hack/bench -capture rewrites it;
// TestCapturedReview checks it.
const capturedReview = "hack/bench/testdata/review-captured.json"

// apiAccessVolume matches the ServiceAccount plugin's volume name; its
// random suffix is what differs between two replicas of a Deployment.
var apiAccessVolume = regexp.MustCompile(`"kube-api-access-([a-z0-9]{5})"`)

// accessSuffix returns the kube-api-access volume's suffix in a review body.
func accessSuffix(body []byte) (string, error) {
	m := apiAccessVolume.FindSubmatch(body)
	if m == nil {
		return "", fmt.Errorf("no kube-api-access-* volume in the review: was the ServiceAccount admission plugin on?")
	}
	return string(m[1]), nil
}

// capture starts a control plane, registers a recording webhook on
// loopback, creates (dry run) the pod of the template review in it, and
// writes the body the API server sent to out.
func capture(ctx context.Context, template, out string) error {
	raw, err := os.ReadFile(template)
	if err != nil {
		return err
	}
	var tmpl struct {
		Request struct {
			Namespace string     `json:"namespace"`
			Object    corev1.Pod `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal(raw, &tmpl); err != nil {
		return fmt.Errorf("%s: %w", template, err)
	}
	pod := &tmpl.Request.Object
	// What the API server and its ServiceAccount plugin add, it adds again.
	pod.ManagedFields = nil
	pod.Spec.Volumes = slicesDeleteAPIAccess(pod.Spec.Volumes)
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].VolumeMounts = nil
	}

	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return err
	}
	defer c.Stop()
	if err := serviceAccountFor(ctx, c, template); err != nil {
		return err
	}

	var mu sync.Mutex
	var body []byte
	rec := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var review struct {
			Request struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		if err := json.Unmarshal(b, &review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		body = b
		mu.Unlock()
		fmt.Fprintf(w, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":%q,"allowed":true}}`, review.Request.UID)
	}))
	rec.StartTLS()
	defer rec.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rec.Certificate().Raw})
	_, err = c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-recorder"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "recorder.bench.kvinject.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr(rec.URL + "/mutate-pods"), CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy:           ptr(admissionregistrationv1.Fail),
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("register the recording webhook: %w", err)
	}
	// The API server calls a new configuration once its informer has it; a
	// dry run stores nothing.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if _, err := c.Kube.CoreV1().Pods(tmpl.Request.Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			return false, fmt.Errorf("create pod: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		return body != nil, nil
	})
	if err != nil {
		return fmt.Errorf("the API server did not call the recording webhook: %w", err)
	}
	if _, err := accessSuffix(body); err != nil {
		return err
	}
	// The bytes as sent.
	return os.WriteFile(out, body, 0o644)
}

// slicesDeleteAPIAccess drops the ServiceAccount plugin's volume.
func slicesDeleteAPIAccess(vs []corev1.Volume) []corev1.Volume {
	var out []corev1.Volume
	for _, v := range vs {
		if !strings.HasPrefix(v.Name, "kube-api-access-") {
			out = append(out, v)
		}
	}
	return out
}
