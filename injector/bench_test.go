package injector

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// benchPod is a pod with a few objects, a template and a refresh: the
// per-pod cost the webhook pays.
func benchPod() (*corev1.Pod, Defaults) {
	return testPod(map[string]string{
		AnnotationRefresh:           "2m",
		Prefix + "cert-tls.pem":     "web-tls",
		Prefix + "key-signing.pub":  "shared-kv/signing",
		Prefix + "template-app.env": `DB_PASSWORD={{ secret "db-password" | envQuote }}`,
		AnnotationObjects:           "- {objectName: stripe, objectType: secret}",
	}), testDefaults()
}

// BenchmarkInject: parse, validate and mutate.
func BenchmarkInject(b *testing.B) {
	pod, d := benchPod()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Inject(pod, nil, d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseSpec is the annotation parsing and validation part of Inject.
func BenchmarkParseSpec(b *testing.B) {
	pod, d := benchPod()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parseSpec(pod, nil, d); err != nil {
			b.Fatal(err)
		}
	}
}
