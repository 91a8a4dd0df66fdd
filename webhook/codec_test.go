package webhook

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/injector"
)

// TestCodecDecodesLikeEncodingJSON proves the review decoder a drop-in for
// encoding/json on the reviews we serve: review-web.json as the API server
// sends it, and reviews of every golden pod (before and after injection) and
// of a pod with what those lack (custom unmarshalers of Quantity, Time and
// IntOrString, escaped strings).
func TestCodecDecodesLikeEncodingJSON(t *testing.T) {
	body, err := os.ReadFile("testdata/review-web.json")
	if err != nil {
		t.Fatal(err)
	}
	var std podReview
	if err := json.Unmarshal(body, &std); err != nil {
		t.Fatal(err)
	}
	var fast podReview
	if err := decodeReview(body, &fast); err != nil {
		t.Fatal(err)
	}
	if !fast.valid() || !apiequality.Semantic.DeepEqual(fast, std) {
		t.Fatalf("testdata/review-web.json decodes differently:\n fast %+v\n  std %+v", fast.Request, std.Request)
	}

	pods := map[string]*corev1.Pod{"review-web.json": std.Request.Object, "edge cases": edgePod()}
	web := std.Request.Object.DeepCopy()
	web.Namespace = "shop"
	injected, _, err := injector.Inject(web, webSA, testDefaults())
	if err != nil {
		t.Fatal(err)
	}
	pods["review-web.json injected"] = injected
	files, err := filepath.Glob("../injector/testdata/golden/*.*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden pods: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// A .golden file is comments then the injected pod; a .yaml file
		// is the pod, maybe followed by its ServiceAccount.
		doc := strings.Split(string(data), "\n---\n")[0]
		var pod corev1.Pod
		if err := yaml.Unmarshal([]byte(doc), &pod); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if pod.Kind != "" {
			pods[filepath.Base(f)] = &pod
		}
	}
	if len(pods) < 10 {
		t.Fatalf("only %d pods to compare", len(pods))
	}

	for name, pod := range pods {
		podJSON, err := json.Marshal(pod)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// Decode the pod inside a review, as the API server sends it.
		var review map[string]any
		if err := json.Unmarshal(body, &review); err != nil {
			t.Fatal(err)
		}
		review["request"].(map[string]any)["object"] = json.RawMessage(podJSON)
		b, err := json.Marshal(review)
		if err != nil {
			t.Fatal(err)
		}
		var std, fast podReview
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := decodeReview(b, &fast); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !apiequality.Semantic.DeepEqual(fast, std) {
			t.Errorf("%s: decodes differently: %s", name, diff.Diff(std, fast))
		}
	}
}

// edgePod has what the golden pods lack: set timestamps, named and numbered
// ports, every quantity form, characters encoding/json escapes, and empty
// but non-nil collections.
func edgePod() *corev1.Pod {
	now := metav1.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC)
	grace := int64(30)
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "edge", Namespace: "shop", CreationTimestamp: now, DeletionTimestamp: &now, DeletionGracePeriodSeconds: &grace,
			Labels:      map[string]string{},
			Annotations: map[string]string{"html": `<a href="x">&amp;</a>`, "unicode": "é\u2028\u2029\x01\x7f\"\\", "z": "", "a/b~c": "1"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m", Time: &now, FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{}}}`)}}},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "app", Image: "app:1", Args: []string{}, Env: []corev1.EnvVar{{Name: "E", Value: "<>&"}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0.1"), corev1.ResourceMemory: resource.MustParse("1.5Gi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1e9")},
				},
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}},
			}},
			Overhead: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
		},
		Status: corev1.PodStatus{StartTime: &now, Conditions: []corev1.PodCondition{{Type: "Ready", Status: "True", LastTransitionTime: now}}},
	}
}

// FuzzDecodeReview: on any body, the codec must not panic, and when both it
// and encoding/json accept a review they must agree on it.
func FuzzDecodeReview(f *testing.F) {
	body, err := os.ReadFile("testdata/review-web.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"metadata":{"annotations":{"a":"\u003c"}},"spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":"1.5"}}}]}}}}`))
	f.Add([]byte(`{"request":{"object":null,"oldObject":{"x":1},"dryRun":true}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var std, fast podReview
		stdErr := json.Unmarshal(body, &std)
		fastErr := decodeReview(body, &fast)
		if stdErr == nil && fastErr == nil && !apiequality.Semantic.DeepEqual(fast, std) {
			t.Fatalf("%s decodes differently: %s", body, diff.Diff(std, fast))
		}
	})
}
