package injector

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
)

// applyReport applies r.Patch, as the API server does, to doc (a pod's
// encoding) and returns the result decoded into generic JSON values.
func applyReport(t *testing.T, doc []byte, r Report) any {
	t.Helper()
	got := doc
	if r.Patch != nil {
		p, err := jsonpatch.DecodePatch(r.Patch)
		if err != nil {
			t.Fatalf("patch %s: %v", r.Patch, err)
		}
		if got, err = p.Apply(doc); err != nil {
			t.Fatalf("apply %s to %s: %v", r.Patch, doc, err)
		}
	}
	var v any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func jsonValue(t *testing.T, x any) any {
	t.Helper()
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// checkPatch fails unless r.Patch turns in's encoding into out's, and is nil
// exactly when nothing changed.
func checkPatch(t *testing.T, in, out *corev1.Pod, r Report) {
	t.Helper()
	doc, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := jsonValue(t, out)
	if got := applyReport(t, doc, r); !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("the patch %s\ngives %s\n want %s", r.Patch, g, w)
	}
	if (r.Patch == nil) != reflect.DeepEqual(jsonValue(t, in), want) {
		t.Fatalf("patch %s for a pod that changed: %v", r.Patch, r.Patch != nil)
	}
}

// TestPatchTurnsInputIntoOutput checks Report.Patch for every golden case,
// for the shapes reshape makes, and for the reinvocations that follow (none
// to do, then a container another webhook added).
func TestPatchTurnsInputIntoOutput(t *testing.T) {
	inputs, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	type tc struct {
		pod *corev1.Pod
		sa  *corev1.ServiceAccount
	}
	cases := map[string]tc{}
	for _, in := range inputs {
		pod, sa := readCase(t, in)
		cases[strings.TrimSuffix(filepath.Base(in), ".yaml")] = tc{pod, sa}
	}
	for shape := range 64 {
		pod := testPod(nil)
		reshape(pod, uint8(shape))
		cases[fmt.Sprintf("shape-%02d", shape)] = tc{pod: pod}
	}
	stale := testPod(nil)
	stale.Annotations[AnnotationWarnings] = "a warning of the pod this one was copied from"
	cases["stale-warnings"] = tc{pod: stale}
	bare := testPod(nil)
	bare.Spec.Containers[0].VolumeMounts, bare.Spec.Volumes, bare.Spec.ServiceAccountName = nil, nil, ""
	cases["bare"] = tc{pod: bare}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			out, r, err := Inject(c.pod, c.sa, testDefaults())
			if err != nil {
				return // a denial has no patch to check
			}
			checkPatch(t, c.pod, out, r)
			again, r, err := Inject(out, c.sa, testDefaults())
			if err != nil {
				t.Fatal(err)
			}
			checkPatch(t, out, again, r)
			if r.Patch != nil {
				t.Fatalf("reinvoked with nothing to do, patch %s", r.Patch)
			}
			added := out.DeepCopy()
			added.Spec.Containers = append(added.Spec.Containers, corev1.Container{Name: "added-later", Image: "mesh:1"})
			again, r, err = Inject(added, c.sa, testDefaults())
			if err != nil {
				t.Fatal(err)
			}
			checkPatch(t, added, again, r)
		})
	}
}

// TestPatchKeepsUnknownFields applies the patch to the pod as a newer API
// server would encode it, with a field this build does not know on every
// object the injector touches or passes through: every one survives, and the
// rest is the injected pod.
func TestPatchKeepsUnknownFields(t *testing.T) {
	pod := testPod(nil)
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "app:1"}}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "1"}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroups: []int64{1000}}
	pod.Annotations[Prefix+"env-DB_PASSWORD"] = "db-password"
	out, r, err := Inject(pod, nil, testDefaults())
	if err != nil {
		t.Fatal(err)
	}
	// future marks every object of a pod's encoding (not the annotation map,
	// whose members are all annotations).
	var future func(v any, path string, mark bool) any
	future = func(v any, path string, mark bool) any {
		switch v := v.(type) {
		case map[string]any:
			if path == "/metadata/annotations" || path == "/metadata/labels" {
				return v
			}
			if _, ok := v["future"]; ok && !mark {
				delete(v, "future")
			} else if mark {
				v["future"] = path
			}
			for k, e := range v {
				v[k] = future(e, path+"/"+k, mark)
			}
		case []any:
			for i, e := range v {
				v[i] = future(e, path+"/*", mark)
			}
		}
		return v
	}
	stored, err := json.Marshal(future(jsonValue(t, pod), "", true))
	if err != nil {
		t.Fatal(err)
	}
	got := applyReport(t, stored, r)
	gotJSON, _ := json.Marshal(got)
	for _, path := range []string{"", "/metadata", "/spec", "/spec/securityContext", "/spec/initContainers/*", "/spec/containers/*",
		"/spec/containers/*/env/*", "/spec/containers/*/volumeMounts/*", "/spec/volumes/*"} {
		if !strings.Contains(string(gotJSON), `"future":"`+path+`"`) {
			t.Errorf("the field at %s is lost: %s", path, gotJSON)
		}
	}
	if want := jsonValue(t, out); !reflect.DeepEqual(future(got, "", false), want) {
		w, _ := json.Marshal(want)
		t.Errorf("without the unknown fields\n got %s\nwant %s", gotJSON, w)
	}
}
