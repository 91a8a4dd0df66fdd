package injector

import "testing"

// BenchmarkInject is the webhook's per-pod cost: parse, validate and mutate a
// pod with a few objects, a template and a refresh.
func BenchmarkInject(b *testing.B) {
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
		if _, _, err := Inject(pod, nil, d); err != nil {
			b.Fatal(err)
		}
	}
}
