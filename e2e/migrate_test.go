package e2e

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/migrate"
)

// migrateClass is a SecretProviderClass in the shape of the CSI provider's
// documentation: two secrets (one with an alias and a file mode) and a
// synced Opaque Secret.
const migrateClass = `apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: web-kv
spec:
  provider: azure
  parameters:
    clientID: "CLIENT"
    keyvaultName: shop-kv
    tenantID: "TENANT"
    objects: |
      array:
        - |
          objectName: migrate-db
          objectType: secret
        - |
          objectName: migrate-api
          objectType: secret
          objectAlias: api-key
          filePermission: "0440"
  secretObjects:
    - secretName: web-env
      type: Opaque
      data:
        - objectName: migrate-db
          key: DB_PASSWORD
`

// A Deployment on the CSI driver, migrated by the migrate package and
// applied on the real node: its app sees the files the provider would write,
// at the path it mounted the CSI volume, and the variable it read from the
// synced Secret, which the webhook injects from the agent's env file.
func TestNodeMigrate(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e201"
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "migrate-db", "db-pass-1")
	s.secretFor(t, clientID, "migrate-api", "api-key-1")

	// The app as it ran on the driver (the emulator's CA is the cluster's
	// own setting, kept by migrate).
	tmpl := nodePodSpec("web", nil, "-dir", "/srv/secrets-store", "-env", "DB_PASSWORD")
	delete(tmpl.Annotations, injector.AnnotationInject)
	app := &tmpl.Spec.Containers[0]
	app.Env = []corev1.EnvVar{{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "web-env"}, Key: "DB_PASSWORD"}}}}
	app.VolumeMounts = []corev1.VolumeMount{{Name: "secrets-store", MountPath: "/srv/secrets-store", ReadOnly: true}}
	tmpl.Spec.Volumes = []corev1.Volume{{Name: "secrets-store", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: "secrets-store.csi.k8s.io", ReadOnly: ptr.To(true), VolumeAttributes: map[string]string{"secretProviderClass": "web-kv"}}}}}
	d := deployment("web", tmpl)
	d.TypeMeta = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
	d.Namespace = ns
	dy, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	class := strings.NewReplacer("CLIENT", clientID, "TENANT", s.srv.TenantID()).Replace(migrateClass)
	in := class + "---\n" + string(dy)

	// As kvinject migrate would by default: the newest release, which this
	// cluster runs (the webhook reads its own server's).
	defaults := s.defaults
	defaults.Server = injector.Server{Version: injector.Newest}
	r := migrate.Run([]migrate.Input{{Name: "app.yaml", Data: []byte(in)}}, migrate.Options{Namespace: ns, Defaults: defaults})
	if !r.OK() || len(r.Migrated) != 1 {
		var b strings.Builder
		_ = r.WriteReport(&b)
		t.Fatalf("migrate did not migrate the Deployment:\n%s", b.String())
	}
	var out appsv1.Deployment
	docs := strings.Split(string(r.Files[0].Data), "\n---\n")
	if err := yaml.UnmarshalStrict([]byte(docs[len(docs)-1]), &out); err != nil {
		t.Fatalf("decode the migrated Deployment: %v\n%s", err, r.Files[0].Data)
	}
	// The one change the test makes: the emulator serves shop-kv at a
	// loopback URL, not at the vault name's DNS host.
	if v := out.Spec.Template.Annotations[injector.AnnotationVault]; v != vaultName {
		t.Fatalf("%s = %q, want the class's keyvaultName %s", injector.AnnotationVault, v, vaultName)
	}
	out.Spec.Template.Annotations[injector.AnnotationVault] = s.vaultURL

	if _, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, &out, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, s, ns, "app=web", running)
	for _, v := range pod.Spec.Volumes {
		if v.CSI != nil {
			t.Errorf("the migrated pod still has CSI volume %s", v.Name)
		}
	}
	rep := waitReport(t, s, ns, pod.Name, time.Minute, func(appReport) bool { return true })
	want := map[string]struct{ content, mode string }{
		"migrate-db": {"db-pass-1", "0440"},
		"api-key":    {"api-key-1", "0440"},
	}
	for name, w := range want {
		f, ok := rep.Files[name]
		if !ok || f.Content != w.content || f.Mode != w.mode {
			t.Errorf("/srv/secrets-store/%s: %+v (present %v), want content %q mode %s", name, f, ok, w.content, w.mode)
		}
	}
	for name := range rep.Files {
		if name == config.EnvFile || strings.HasPrefix(name, "..") {
			delete(rep.Files, name) // kvinject's env file and the atomic writer's own
		}
	}
	if len(rep.Files) != len(want) {
		t.Errorf("the app sees %d files, want only %v: %+v", len(rep.Files), want, rep.Files)
	}
	if got := rep.Env["DB_PASSWORD"]; got != "db-pass-1" {
		t.Errorf("the app's DB_PASSWORD = %q, want the synced Secret's value from migrate-db", got)
	}
}
