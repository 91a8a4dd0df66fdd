package webhook

import (
	"bytes"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kvinject/kvinject/injector"
)

// podPatch gives, byte for byte, the patch of the two whole encodings: for
// every golden pod and review-web's, as injected, and with edits to fields
// the injector never touches, including the omitempty and omitzero edge
// cases (zero numbers, false, empty against nil, timestamps).
func TestPodPatchIsTheWholePodDiff(t *testing.T) {
	reviewPod, _ := requestPod(t, review(t, nil))
	inputs := append(goldenInputs(t), goldenInput{name: "review-web", pod: reviewPod, sa: webSA})
	edits := map[string]func(*corev1.Pod){
		"as injected":      func(*corev1.Pod) {},
		"label removed":    func(p *corev1.Pod) { p.Labels = nil },
		"label added":      func(p *corev1.Pod) { p.Labels = map[string]string{"new": "1"} },
		"name set":         func(p *corev1.Pod) { p.Name = "renamed" },
		"creation time":    func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(time.Unix(1800000000, 0)) },
		"generation":       func(p *corev1.Pod) { p.Generation = 5 },
		"empty finalizers": func(p *corev1.Pod) { p.Finalizers = []string{} },
		"tolerations empty": func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{}
		},
		"priority zero":  func(p *corev1.Pod) { p.Spec.Priority = ptr.To[int32](0) },
		"host network":   func(p *corev1.Pod) { p.Spec.HostNetwork = !p.Spec.HostNetwork },
		"no grace":       func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = nil },
		"no containers":  func(p *corev1.Pod) { p.Spec.Containers = nil },
		"status phase":   func(p *corev1.Pod) { p.Status.Phase = corev1.PodRunning },
		"kind":           func(p *corev1.Pod) { p.Kind, p.APIVersion = "Pod", "v1" },
		"managed fields": func(p *corev1.Pod) { p.ManagedFields = nil },
		"html in annotation": func(p *corev1.Pod) {
			p.Annotations = map[string]string{"a<b>&": "</script>"}
		},
		"container image": func(p *corev1.Pod) {
			if len(p.Spec.Containers) > 0 {
				p.Spec.Containers[0].Image = "example.com/other:2"
			}
		},
		"container env empty": func(p *corev1.Pod) {
			if len(p.Spec.Containers) > 0 {
				p.Spec.Containers[0].Env = []corev1.EnvVar{}
			}
		},
		"container limits": func(p *corev1.Pod) {
			if len(p.Spec.Containers) > 0 {
				p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}
			}
		},
		"container prepended": func(p *corev1.Pod) {
			p.Spec.Containers = append([]corev1.Container{{Name: "first", Image: "x"}}, p.Spec.Containers...)
		},
		"container appended": func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "last", Image: "x"})
		},
		"volume dropped": func(p *corev1.Pod) {
			if n := len(p.Spec.Volumes); n > 0 {
				p.Spec.Volumes = p.Spec.Volumes[:n-1]
			}
		},
		"no pod security context": func(p *corev1.Pod) { p.Spec.SecurityContext = nil },
		"init container runs as root": func(p *corev1.Pod) {
			if len(p.Spec.InitContainers) > 0 {
				sc := p.Spec.InitContainers[0].SecurityContext
				if sc == nil {
					sc = &corev1.SecurityContext{}
				}
				sc.RunAsUser = ptr.To[int64](0)
				p.Spec.InitContainers[0].SecurityContext = sc
			}
		},
	}
	for _, in := range inputs {
		name, pod := in.name, in.pod
		injected, _, err := injector.Inject(pod, in.sa, testDefaults())
		if err != nil {
			// The invalid golden: diff it against itself edited.
			injected = pod.DeepCopy()
		}
		for edit, f := range edits {
			// Each edit on either side, so fields are added and removed.
			for _, side := range []string{"mutated", "original"} {
				a, b := pod.DeepCopy(), injected.DeepCopy()
				if side == "mutated" {
					f(b)
				} else {
					f(a)
				}
				got, err := podPatch(a, b)
				if err != nil {
					t.Fatalf("%s, %s on the %s pod: %v", name, edit, side, err)
				}
				want, err := wholePatch(a, b)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s, %s on the %s pod:\n got %s\nwant %s", name, edit, side, got, want)
				}
			}
		}
	}
}

// The pod's metadata, spec and containers are walked field by field, so a
// review encodes only what changed. (A volume embeds its VolumeSource and
// is encoded whole.)
func TestPodWalkModelsThePod(t *testing.T) {
	names := map[string]*walkType{}
	for _, f := range podType.fields {
		names[f.name] = f.typ
	}
	spec := map[string]*walkType{}
	for _, f := range names["spec"].fields {
		spec[f.name] = f.typ
	}
	for name, w := range map[string]*walkType{
		"metadata": names["metadata"], "spec": names["spec"],
		"containers[]": spec["containers"].elem, "initContainers[]": spec["initContainers"].elem,
	} {
		if w == nil || w.fields == nil {
			t.Errorf("%s is not walked field by field", name)
		}
	}
}
