package offline

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

func defaults() injector.Defaults {
	c, _ := config.KnownCloud("AzurePublicCloud")
	return injector.Defaults{Image: "example.com/kvinject:1", Cloud: c}
}

const stream = `# a comment kept as it is
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}   # odd spacing kept too
data: {a: "1"}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
  namespace: shop
  annotations:
    azure.workload.identity/client-id: 00000000-0000-0000-0000-0000000000aa
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        kvinject.io/inject: "true"
        kvinject.io/secret-db: shop-kv/db
    spec:
      serviceAccountName: web
      containers: [{name: app, image: example.com/app:1}]
`

// Documents it does not change pass through byte for byte; a Deployment's
// template is injected with the identity of the ServiceAccount in the same
// stream, and the tenant from the stand-in.
func TestDocuments(t *testing.T) {
	out, warnings, problems := Documents([]byte(stream), Options{TenantID: "contoso.example", Defaults: defaults()})
	if len(problems) != 0 || len(warnings) != 0 {
		t.Fatalf("problems %v, warnings %v", problems, warnings)
	}
	docs := strings.Split(string(out), "---\n")
	in := strings.Split(stream, "---\n")
	if len(docs) != 3 || docs[0] != in[0] || docs[1] != in[1] {
		t.Fatalf("untouched documents changed:\n%s", out)
	}
	var dep appsv1.Deployment
	if err := yaml.Unmarshal([]byte(docs[2]), &dep); err != nil {
		t.Fatal(err)
	}
	spec := dep.Spec.Template.Spec
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != injector.AgentContainer {
		t.Fatalf("template not injected: %+v", spec.InitContainers)
	}
	env := map[string]string{}
	for _, e := range spec.InitContainers[0].Env {
		env[e.Name] = e.Value
	}
	if env["AZURE_CLIENT_ID"] != "00000000-0000-0000-0000-0000000000aa" || env["AZURE_TENANT_ID"] != "contoso.example" {
		t.Errorf("identity %q/%q, want the stream's ServiceAccount and the stand-in tenant", env["AZURE_CLIENT_ID"], env["AZURE_TENANT_ID"])
	}
}

// An invalid document is named with its index and kind; nothing else is lost.
func TestDocumentsNameTheInvalidOne(t *testing.T) {
	bad := strings.Replace(stream, `kvinject.io/secret-db: shop-kv/db`, `kvinject.io/refresh: soon`, 1)
	_, _, problems := Documents([]byte(bad), Options{TenantID: "contoso.example", Defaults: defaults()})
	if len(problems) != 1 || !strings.HasPrefix(problems[0], "document 3 (Deployment shop/web): kvinject.io/refresh:") {
		t.Errorf("problems %q, want one naming document 3, the Deployment and kvinject.io/refresh", problems)
	}
}
