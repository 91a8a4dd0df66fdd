package injector

import (
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/kvinject/kvinject/agent/config"
)

// encodeAnnotations is the fuzz input format: key NUL value NUL key NUL value...
// A key without '/' gets Prefix, so the fuzzer reaches kvinject annotations easily.
func encodeAnnotations(ann map[string]string) string {
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(strings.TrimPrefix(k, Prefix) + "\x00" + ann[k] + "\x00")
	}
	return b.String()
}

func decodeAnnotations(s string) map[string]string {
	parts := strings.Split(s, "\x00")
	ann := map[string]string{}
	for i := 0; i+1 < len(parts); i += 2 {
		k := parts[i]
		if !strings.Contains(k, "/") {
			k = Prefix + k
		}
		ann[k] = parts[i+1]
	}
	return ann
}

// FuzzInject checks, for any annotations: no panic; the input is not
// modified; the result is deterministic; the patch turns the input's
// encoding into the result's; injecting the result again changes nothing;
// and an injected pod has exactly one agent whose config loads.
// The seed corpus runs in plain `go test` (and so in make test).
func FuzzInject(f *testing.F) {
	base := testPod(nil).Annotations
	seeds := []map[string]string{
		base,
		{AnnotationRefresh: "2m"},
		{AnnotationRefresh: "2m", AnnotationSidecar: SidecarClassic},
		{AnnotationContainers: "app", AnnotationMountPath: "/etc/x"},
		{Prefix + "template-app.env": `{{ secret "db-password" | envQuote }}`},
		{Prefix + "cert-tls.pem": "https://kv1.vault.azure.net/certificates/tls/abc123", Prefix + "key-k": "kv1/k@1"},
		{AnnotationObjects: "array:\n  - |\n    objectName: a\n    objectType: secret\n"},
		{AnnotationObjects: "- {objectName: b, objectType: cert, objectAlias: b.pem, filePermission: '0640'}"},
		{AnnotationInject: "yes"},
		{AnnotationStatus: StatusInjected},
		{Prefix + "refesh": "1m"},
		{AnnotationFileMode: "0444", AnnotationCPULimit: "1", AnnotationMemoryRequest: "1Gi"},
	}
	for _, s := range seeds {
		ann := map[string]string{}
		for k, v := range base {
			ann[k] = v
		}
		for k, v := range s {
			ann[k] = v
		}
		f.Add(encodeAnnotations(ann), uint8(0))
	}
	f.Add(encodeAnnotations(base), uint8(0xff))
	f.Fuzz(func(t *testing.T, data string, shape uint8) {
		pod := testPod(nil)
		pod.Annotations = decodeAnnotations(data)
		reshape(pod, shape)
		before := pod.DeepCopy()
		out, r, err := Inject(pod, nil, testDefaults())
		if err != nil && !errors.As(err, new(*InvalidError)) {
			t.Fatalf("error is %T, want *InvalidError: %v", err, err)
		}
		if !apiequality.Semantic.DeepEqual(pod, before) {
			t.Fatal("Inject modified its input")
		}
		out2, r2, err2 := Inject(pod, nil, testDefaults())
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) ||
			strings.Join(r.Warnings, "\n") != strings.Join(r2.Warnings, "\n") || !sameJSON(t, out, out2) {
			t.Fatal("two calls with the same input differ")
		}
		if err != nil {
			return
		}
		checkPatch(t, pod, out, r)
		again, r3, err := Inject(out, nil, testDefaults())
		if err != nil || !sameJSON(t, out, again) || r3.Patch != nil {
			t.Fatalf("injecting the result again: %v, or it changed (patch %s)", err, r3.Patch)
		}
		if out.Annotations[AnnotationStatus] != StatusInjected || before.Annotations[AnnotationStatus] == StatusInjected {
			return
		}
		agents := 0
		for _, c := range allContainers(out) {
			if c.Name == AgentContainer {
				agents++
				if _, err := config.Load([]byte(env(&c, config.EnvVar))); err != nil {
					t.Fatalf("agent config does not load: %v", err)
				}
			}
		}
		if agents != 1 {
			t.Fatalf("%d agent containers", agents)
		}
	})
}

// reshape varies the pod in ways that change what Inject does, one bit each.
func reshape(pod *corev1.Pod, shape uint8) {
	if shape&1 != 0 {
		pod.Spec.HostNetwork = true
	}
	if shape&2 != 0 {
		g := int64(3000)
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: &g}
	}
	if shape&4 != 0 {
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	if shape&8 != 0 {
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: DefaultMountPath}}
	}
	if shape&16 != 0 {
		pod.Spec.InitContainers = nil
	}
	if shape&32 != 0 {
		pod.Labels = map[string]string{workloadIdentityUse: "true"}
	}
}

func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}
