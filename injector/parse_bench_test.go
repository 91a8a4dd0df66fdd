package injector

import "testing"

// BenchmarkParseSpec is the annotation parsing and validation part of
// Inject, for the same pod as BenchmarkInject.
func BenchmarkParseSpec(b *testing.B) {
	pod := testPod(map[string]string{
		AnnotationRefresh:           "2m",
		Prefix + "cert-tls.pem":     "web-tls",
		Prefix + "key-signing.pub":  "shared-kv/signing",
		Prefix + "template-app.env": `DB_PASSWORD={{ secret "db-password" | envQuote }}`,
		AnnotationObjects:           "- {objectName: stripe, objectType: secret}",
	})
	d := testDefaults()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parseSpec(pod, nil, d); err != nil {
			b.Fatal(err)
		}
	}
}
