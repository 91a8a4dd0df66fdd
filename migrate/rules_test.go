package migrate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	appsv1 "k8s.io/api/apps/v1"
)

// class is a SecretProviderClass of the Azure provider in namespace shop.
func classYAML(name, vault, extraParams, objects, secretObjects string) string {
	return fmt.Sprintf(`apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: %s, namespace: shop}
spec:
  provider: azure
  parameters:
    clientID: 0000000a-0000-0000-0000-00000000000a
    tenantID: 11111111-1111-1111-1111-111111111111
    keyvaultName: %s
%s    objects: |
      array:
%s
%s`, name, vault, extraParams, objects, secretObjects)
}

func objectItem(name string) string {
	return "        - |\n          objectName: " + name + "\n          objectType: secret"
}

const dbClass = `apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: db-kv, namespace: shop}
spec:
  provider: azure
  parameters:
    clientID: 0000000a-0000-0000-0000-00000000000a
    tenantID: 11111111-1111-1111-1111-111111111111
    keyvaultName: shop-kv
    objects: |
      array:
        - |
          objectName: db-password
          objectType: secret
        - |
          objectName: web-cert
          objectType: secret
          objectAlias: web.pem
  secretObjects:
    - secretName: db
      type: Opaque
      data:
        - {objectName: db-password, key: password}
        - {key: user, plainValue: web}
    - secretName: cert
      type: Opaque
      data:
        - {objectName: web.pem, key: pem}
    - secretName: web-tls
      type: kubernetes.io/tls
      data:
        - {objectName: web.pem, key: tls.crt}
        - {objectName: web.pem, key: tls.key}
`

// deploymentYAML is a Deployment shop/name whose containers are given as YAML.
func deploymentYAML(name, containers, volumes string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: shop}
spec:
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      containers:
%s
      volumes:
%s
`, name, name, name, containers, volumes)
}

const csiVolume = "        - {name: kv, csi: {driver: secrets-store.csi.k8s.io, readOnly: true, volumeAttributes: {secretProviderClass: db-kv}}}"

func runDocs(t *testing.T, docs ...string) *Result {
	t.Helper()
	d, err := defaults(t)
	if err != nil {
		t.Fatal(err)
	}
	return Run([]Input{{Name: "in.yaml", Data: []byte(strings.Join(docs, "\n---\n"))}}, Options{Namespace: "default", Defaults: d})
}

func reasons(r *Result) string {
	var b strings.Builder
	_ = r.WriteReport(&b)
	return b.String()
}

// migratedTemplate decodes the one migrated Deployment named name.
func migratedTemplate(t *testing.T, r *Result, name string) *appsv1.Deployment {
	t.Helper()
	for _, doc := range strings.Split(string(r.Files[0].Data), "\n---\n") {
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err == nil && d.Kind == "Deployment" && d.Name == name {
			return &d
		}
	}
	t.Fatalf("no Deployment %s in the output:\n%s", name, r.Files[0].Data)
	return nil
}

func TestRules(t *testing.T) {
	mount := "          volumeMounts: [{name: kv, mountPath: /mnt/kv, readOnly: true}]"
	for _, tc := range []struct {
		name string
		docs []string
		// want are substrings of the report; migrated says whether the
		// workload web migrates.
		want     []string
		migrated bool
		check    func(t *testing.T, d *appsv1.Deployment)
	}{
		{
			name: "plainValue becomes a literal, a secretKeyRef an annotation, env wins over envFrom",
			docs: []string{dbClass, deploymentYAML("web", `        - name: app
          image: app
          env:
            - {name: USER, value: admin}
            - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
          envFrom: [{secretRef: {name: db}}]
`+mount, csiVolume)},
			migrated: true,
			check: func(t *testing.T, d *appsv1.Deployment) {
				a := d.Spec.Template.Annotations
				if a["kvinject.io/env-DB_PASSWORD"] != "db-password" || a["kvinject.io/env-password"] != "db-password" || a["kvinject.io/env-user"] != "" {
					t.Errorf("annotations %v", a)
				}
				env := d.Spec.Template.Spec.Containers[0].Env
				if len(env) != 2 || env[0].Name != "USER" || env[0].Value != "admin" || env[1].Name != "user" || env[1].Value != "web" {
					t.Errorf("env %+v", env)
				}
				if len(d.Spec.Template.Spec.Containers[0].EnvFrom) != 0 {
					t.Errorf("envFrom kept: %+v", d.Spec.Template.Spec.Containers[0].EnvFrom)
				}
			},
		},
		{
			name: "a container that only reads variables is targeted, and told",
			docs: []string{dbClass, deploymentYAML("web", `        - name: app
          image: app
`+mount+`
        - name: worker
          image: worker
          env: [{name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}]`, csiVolume)},
			want:     []string{"container worker did not mount the CSI volume; it now also sees the files", "container app now also gets variable(s) DB_PASSWORD"},
			migrated: true,
			check: func(t *testing.T, d *appsv1.Deployment) {
				if c := d.Spec.Template.Annotations["kvinject.io/containers"]; c != "app,worker" {
					t.Errorf("containers %q", c)
				}
			},
		},
		{
			name: "a kubernetes.io/tls Secret in a variable",
			docs: []string{dbClass, deploymentYAML("web", `        - name: app
          image: app
          env: [{name: CERT, valueFrom: {secretKeyRef: {name: web-tls, key: tls.crt}}}]
`+mount, csiVolume)},
			want: []string{"spec.template.spec.containers[0].env[0] (CERT): Secret web-tls (synced by SecretProviderClass shop/db-kv) is of type kubernetes.io/tls"},
		},
		{
			name: "a key the class does not sync",
			docs: []string{dbClass, deploymentYAML("web", `        - name: app
          image: app
          env: [{name: X, valueFrom: {secretKeyRef: {name: db, key: nope}}}]
`+mount, csiVolume)},
			want: []string{`key "nope" is not in the data of Secret db`},
		},
		{
			name: "$(NAME) of a migrated variable",
			docs: []string{dbClass, deploymentYAML("web", `        - name: app
          image: app
          env:
            - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
            - {name: DSN, value: "postgres://web:$(DB_PASSWORD)@db"}
`+mount, csiVolume)},
			want: []string{"env[1] (DSN) refers to $(DB_PASSWORD)"},
		},
		{
			name: "one variable from two files",
			docs: []string{dbClass, deploymentYAML("web", `        - name: app
          image: app
          env: [{name: V, valueFrom: {secretKeyRef: {name: db, key: password}}}]
`+mount+`
        - name: worker
          image: worker
          env: [{name: V, valueFrom: {secretKeyRef: {name: cert, key: pem}}}]`, csiVolume)},
			want: []string{"spec.template.spec.containers[1].env[0] (V): variable V comes from file web.pem here and db-password in another container"},
		},
		{
			name: "subPath",
			docs: []string{dbClass, deploymentYAML("web", `        - name: app
          image: app
          volumeMounts: [{name: kv, mountPath: /mnt/kv/db-password, subPath: db-password}]`, csiVolume)},
			want: []string{"volumeMounts[0]: mounts one file of CSI volume kv with subPath"},
		},
		{
			name: "two classes at one path in two containers: each object names its vault",
			docs: []string{dbClass,
				classYAML("other-kv", "other-kv", "", objectItem("token"), ""),
				deploymentYAML("web", `        - name: app
          image: app
`+mount+`
        - name: worker
          image: worker
          volumeMounts: [{name: other, mountPath: /mnt/kv}]`, csiVolume+"\n        - {name: other, csi: {driver: secrets-store.csi.k8s.io, volumeAttributes: {secretProviderClass: other-kv}}}")},
			want:     []string{"the files of 2 classes share one directory, /mnt/kv"},
			migrated: true,
			check: func(t *testing.T, d *appsv1.Deployment) {
				a := d.Spec.Template.Annotations
				want := "- objectName: db-password\n  objectType: secret\n  vault: shop-kv\n- objectName: web-cert\n  objectAlias: web.pem\n  objectType: secret\n  vault: shop-kv\n- objectName: token\n  objectType: secret\n  vault: other-kv\n"
				if a["kvinject.io/objects"] != want || a["kvinject.io/vault"] != "" {
					t.Errorf("objects %q, vault %q", a["kvinject.io/objects"], a["kvinject.io/vault"])
				}
			},
		},
		{
			name: "two classes with different identities",
			docs: []string{dbClass,
				strings.Replace(classYAML("other-kv", "other-kv", "", objectItem("token"), ""), "0000000a-0000-0000-0000-00000000000a", "0000000b-0000-0000-0000-00000000000b", 1),
				deploymentYAML("web", `        - name: app
          image: app
`+mount+`
        - name: worker
          image: worker
          volumeMounts: [{name: other, mountPath: /mnt/kv}]`, csiVolume+"\n        - {name: other, csi: {driver: secrets-store.csi.k8s.io, volumeAttributes: {secretProviderClass: other-kv}}}")},
			want: []string{"the classes sign in with different clientIDs (0000000a-0000-0000-0000-00000000000a, 0000000b-0000-0000-0000-00000000000b)"},
		},
		{
			name: "another workload reads the synced Secret without mounting the class",
			docs: []string{dbClass,
				deploymentYAML("web", "        - name: app\n          image: app\n"+mount, csiVolume),
				"apiVersion: v1\nkind: Pod\nmetadata: {name: reader, namespace: shop}\nspec:\n  containers: [{name: c, image: c, envFrom: [{secretRef: {name: db}}]}]"},
			want: []string{"syncs Secret shop/db, which Pod shop/reader uses at spec.containers[0].envFrom[0].secretRef.name (environment variable)"},
		},
		{
			name: "a Secret volume of a synced Secret",
			docs: []string{dbClass, deploymentYAML("web", "        - name: app\n          image: app\n          volumeMounts: [{name: kv, mountPath: /mnt/kv}, {name: db, mountPath: /etc/db}]",
				csiVolume+"\n        - {name: db, secret: {secretName: db}}")},
			want: []string{"syncs Secret shop/db, which Deployment shop/web uses at spec.template.spec.volumes[1].secret.secretName (a Secret volume, which migrate does not turn into files"},
		},
		{
			name: "a CSI volume no container mounts",
			docs: []string{dbClass, deploymentYAML("web", "        - name: app\n          image: app", csiVolume)},
			want: []string{"no container mounts the CSI volume or reads a synced Secret"},
		},
		{
			name: "a workload that stays on the driver keeps the Secret alive",
			docs: []string{dbClass,
				deploymentYAML("web", "        - name: app\n          image: app\n"+mount, csiVolume),
				deploymentYAML("legacy", "        - name: app\n          image: app\n          volumeMounts: [{name: kv, mountPath: /etc/kv}]", csiVolume),
				"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: shop}\nspec:\n  tls: [{secretName: web-tls}]"},
			want:     []string{"Deployment shop/legacy (SecretProviderClass shop/db-kv):\n    - the webhook would deny the migrated pod: kvinject.io/mount-path: \"/etc/kv\""},
			migrated: true,
		},
		{
			name: "a kvinject annotation the template already has",
			docs: []string{dbClass, strings.Replace(deploymentYAML("web", "        - name: app\n          image: app\n"+mount, csiVolume),
				"metadata: {labels: {app: web}}", "metadata: {labels: {app: web}, annotations: {kvinject.io/vault: x, kvinject.io/refresh: 5m}}", 1)},
			want: []string{"metadata.annotations: kvinject.io/vault is already set"},
		},
		{
			name: "cloudName, case-insensitive as the provider reads it; tenantID before tenantId",
			docs: []string{strings.Replace(strings.Replace(dbClass, "    keyvaultName: shop-kv\n", "    keyvaultName: shop-kv\n    cloudName: azurechinacloud\n    tenantId: 22222222-2222-2222-2222-222222222222\n", 1), "secretObjects:", "secretObjectsX:", 0),
				deploymentYAML("web", "        - name: app\n          image: app\n"+mount, csiVolume)},
			migrated: true,
			check: func(t *testing.T, d *appsv1.Deployment) {
				a := d.Spec.Template.Annotations
				if a["kvinject.io/cloud"] != "AzureChinaCloud" || a["kvinject.io/tenant-id"] != "11111111-1111-1111-1111-111111111111" {
					t.Errorf("cloud %q tenant %q", a["kvinject.io/cloud"], a["kvinject.io/tenant-id"])
				}
			},
		},
		{
			name: "an unknown cloud and an unknown object field",
			docs: []string{strings.Replace(strings.Replace(dbClass, "    keyvaultName: shop-kv\n", "    keyvaultName: shop-kv\n    cloudName: AzureStackCloud\n", 1), "objectType: secret\n        - |", "objectType: secret\n          objectTyp: secret\n        - |", 1),
				deploymentYAML("web", "        - name: app\n          image: app\n"+mount, csiVolume)},
			want: []string{`parameters.cloudName "AzureStackCloud": kvinject knows AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud`, `parameters.objects array[0]: error unmarshaling JSON: while decoding JSON: json: unknown field "objectTyp"`},
		},
		{
			name:     "a List, as kubectl get -o yaml prints",
			docs:     []string{"apiVersion: v1\nkind: List\nitems:\n" + indent(dbClass) + indent(deploymentYAML("web", "        - name: app\n          image: app\n"+mount, csiVolume))},
			migrated: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runDocs(t, tc.docs...)
			report := reasons(r)
			for _, w := range tc.want {
				if !strings.Contains(report, w) {
					t.Errorf("the report lacks %q:\n%s", w, report)
				}
			}
			migrated := false
			for _, m := range r.Migrated {
				migrated = migrated || m.Name == "Deployment shop/web"
			}
			if migrated != tc.migrated {
				t.Errorf("web migrated: %v, want %v:\n%s", migrated, tc.migrated, report)
			}
			if len(r.Problems) > 0 {
				t.Errorf("problems: %v", r.Problems)
			}
			if tc.check != nil && migrated {
				tc.check(t, migratedTemplate(t, r, "web"))
			}
		})
	}
}

// indent makes a document an item of a List.
func indent(doc string) string {
	lines := strings.Split(strings.TrimRight(doc, "\n"), "\n")
	for i, l := range lines {
		if i == 0 {
			lines[i] = "- " + l
		} else {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// Classes and workloads in separate files, written into a directory.
func TestFilesAndDirectory(t *testing.T) {
	dir := t.TempDir()
	classes := filepath.Join(dir, "classes.yaml")
	apps := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(classes, []byte(dbClass), 0o644); err != nil {
		t.Fatal(err)
	}
	app := deploymentYAML("web", "        - name: app\n          image: app\n          volumeMounts: [{name: kv, mountPath: /mnt/kv}]", csiVolume)
	if err := os.WriteFile(apps, []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	stdout, stderr, code := run(t, "-o", out, "-f", classes, apps)
	if code != 0 || len(stdout) != 0 {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	c, err := os.ReadFile(filepath.Join(out, "classes.yaml"))
	if err != nil || string(c) != dbClass {
		t.Errorf("classes.yaml is not copied byte for byte (%v):\n%s", err, c)
	}
	a, err := os.ReadFile(filepath.Join(out, "apps.yaml"))
	if err != nil || !strings.Contains(string(a), "kvinject.io/mount-path: /mnt/kv") || strings.Contains(string(a), "csi") {
		t.Errorf("apps.yaml is not migrated (%v):\n%s", err, a)
	}
	if _, _, code := run(t, "-o", out, "-f", classes, classes); code != 2 {
		t.Errorf("two inputs with one base name into a directory: exit %d, want 2", code)
	}
	if _, stderr, code := run(t, "--rotation-poll-interval", "soon", classes); code != 2 || !strings.Contains(string(stderr), "--rotation-poll-interval") {
		t.Errorf("a bad --rotation-poll-interval: exit %d, %s", code, stderr)
	}
	if _, _, code := run(t); code != 2 {
		t.Errorf("no input: exit %d, want 2", code)
	}
}
