package injector

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestErrorMessages has one case per class of mistake: the problem must name
// the field to fix and say how.
func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ann   map[string]string
		pod   func(*corev1.Pod)
		field string
		want  string
	}{
		{name: "unknown annotation", ann: map[string]string{Prefix + "refesh": "2m"},
			field: Prefix + "refesh", want: "did you mean kvinject.io/refresh?"},
		{name: "unknown file family", ann: map[string]string{Prefix + "secrets-db": "db"},
			field: Prefix + "secrets-db", want: "did you mean kvinject.io/secret-db?"},
		{name: "unknown, nothing close", ann: map[string]string{Prefix + "zzzzzzzzzz": "x"},
			field: Prefix + "zzzzzzzzzz", want: "see docs/annotations.md"},
		{name: "inject value", ann: map[string]string{AnnotationInject: "yes"},
			field: AnnotationInject, want: `"yes" is not "true" or "false"`},
		{name: "status set by hand", ann: map[string]string{AnnotationStatus: "done"},
			field: AnnotationStatus, want: "is written by kvinject"},
		{name: "refresh", ann: map[string]string{AnnotationRefresh: "2 minutes"},
			field: AnnotationRefresh, want: `use e.g. "2m"`},
		{name: "negative refresh", ann: map[string]string{AnnotationRefresh: "-1m"},
			field: AnnotationRefresh, want: "is not a duration"},
		{name: "sidecar", ann: map[string]string{AnnotationSidecar: "sidecar", AnnotationRefresh: "1m"},
			field: AnnotationSidecar, want: `use "native" or "classic"`},
		{name: "mount path relative", ann: map[string]string{AnnotationMountPath: "secrets"},
			field: AnnotationMountPath, want: "clean absolute path"},
		{name: "mount path root", ann: map[string]string{AnnotationMountPath: "/"},
			field: AnnotationMountPath, want: "other than /"},
		{name: "inject True", ann: map[string]string{AnnotationInject: "True"},
			field: AnnotationInject, want: `"True" is not "true" or "false"; set "true" to inject`},
		{name: "inject with a space", ann: map[string]string{AnnotationInject: " true"},
			field: AnnotationInject, want: `" true" is not "true" or "false"`},
		{name: "mount path /proc", ann: map[string]string{AnnotationMountPath: "/proc"},
			field: AnnotationMountPath, want: "in the system directory /proc"},
		{name: "mount path under /etc", ann: map[string]string{AnnotationMountPath: "/etc/app"},
			field: AnnotationMountPath, want: "in the system directory /etc"},
		{name: "mount path /sys child", ann: map[string]string{AnnotationMountPath: "/sys/fs/x"},
			field: AnnotationMountPath, want: "in the system directory /sys"},
		{name: "mount path /dev", ann: map[string]string{AnnotationMountPath: "/dev"},
			field: AnnotationMountPath, want: "in the system directory /dev"},
		{name: "mount path over the API token", ann: map[string]string{AnnotationMountPath: "/var/run/secrets/kubernetes.io/serviceaccount"},
			field: AnnotationMountPath, want: "in the system directory /var/run/secrets/kubernetes.io"},
		{name: "mounts the token", pod: func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: TokenVolume, MountPath: "/t", ReadOnly: true}}
		}, field: "spec.containers", want: `container "app" mounts "kvinject-token", the agent's federated token, which no other container may read; remove that volumeMount`},
		{name: "init container mounts the token", pod: func(p *corev1.Pod) {
			p.Spec.InitContainers[0].VolumeMounts = []corev1.VolumeMount{{Name: TokenVolume, MountPath: "/t"}}
		}, field: "spec.containers", want: `container "migrate" mounts "kvinject-token"`},
		{name: "mounts the secrets writable", pod: func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: SecretsVolume, MountPath: "/s"}}
		}, field: "spec.containers", want: `container "app" mounts "kvinject-secrets" writable; only the agent writes it: set readOnly: true`},
		{name: "untargeted container mounts the secrets", ann: map[string]string{AnnotationContainers: "app"}, pod: func(p *corev1.Pod) {
			p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: SecretsVolume, MountPath: "/s", ReadOnly: true}}
		}, field: "spec.containers", want: `container "proxy" mounts "kvinject-secrets" but is not in kvinject.io/containers`},
		{name: "windows node selector", pod: func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "windows"}
		}, field: "spec.nodeSelector", want: "kubernetes.io/os: windows selects windows nodes; kvinject's agent runs on Linux only"},
		{name: "windows node affinity", pod: func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{
					{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/os", Operator: corev1.NodeSelectorOpIn, Values: []string{"windows"}}}},
					{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/os", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"linux"}}}},
				}}}}
		}, field: "spec.affinity.nodeAffinity", want: "admits no linux node; kvinject's agent runs on Linux only"},
		{name: "mount path taken", ann: map[string]string{AnnotationMountPath: "/data"},
			pod: func(p *corev1.Pod) {
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
			},
			field: AnnotationMountPath, want: `container "app" already mounts "data" at /data`},
		{name: "unknown container", ann: map[string]string{AnnotationContainers: "app,web"},
			field: AnnotationContainers, want: `no container "web" in the pod; it has migrate, app, proxy`},
		{name: "agent in containers", ann: map[string]string{AnnotationContainers: "kvinject-agent"},
			field: AnnotationContainers, want: "kvinject's own container"},
		{name: "empty container name", ann: map[string]string{AnnotationContainers: "app,,proxy"},
			field: AnnotationContainers, want: "empty container name"},
		{name: "client id", ann: map[string]string{AnnotationClientID: "my-app"},
			field: AnnotationClientID, want: "not a valid client ID; use the application (client) ID, a GUID"},
		{name: "no client id", ann: map[string]string{AnnotationClientID: "-"},
			field: AnnotationClientID, want: "set kvinject.io/client-id on the pod, azure.workload.identity/client-id on ServiceAccount shop/shop, or the webhook's default"},
		{name: "tenant id", ann: map[string]string{AnnotationTenantID: "contoso/tenant"},
			field: AnnotationTenantID, want: "not a valid tenant ID"},
		{name: "no tenant id", ann: map[string]string{AnnotationTenantID: "-"},
			field: AnnotationTenantID, want: "azure.workload.identity/tenant-id on ServiceAccount shop/shop"},
		{name: "cloud", ann: map[string]string{AnnotationCloud: "AzureGermanCloud"},
			field: AnnotationCloud, want: "use one of AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud"},
		{name: "file mode", ann: map[string]string{AnnotationFileMode: "0999"},
			field: AnnotationFileMode, want: `not an octal permission mode; use e.g. "0440"`},
		{name: "quantity", ann: map[string]string{AnnotationMemoryLimit: "lots"},
			field: AnnotationMemoryLimit, want: `not a positive quantity; use e.g. "128Mi"`},
		{name: "request above limit", ann: map[string]string{AnnotationMemoryRequest: "1Gi"},
			field: AnnotationMemoryRequest, want: "above the limit 64Mi"},
		{name: "vault name", ann: map[string]string{AnnotationVault: "my_vault"},
			field: AnnotationVault, want: "not a vault name (3-24 letters"},
		{name: "vault over http", ann: map[string]string{AnnotationVault: "http://kv.example.com"},
			field: AnnotationVault, want: "https only"},
		{name: "vault URL with path", ann: map[string]string{AnnotationVault: "https://kv.vault.azure.net/secrets"},
			field: AnnotationVault, want: "with no path"},
		{name: "no vault", ann: map[string]string{AnnotationVault: "-"},
			field: Prefix + "secret-db-password", want: `no vault for "db-password"; set kvinject.io/vault, write myvault/db-password`},
		{name: "file name escapes", ann: map[string]string{Prefix + "secret-..data": "db"},
			field: Prefix + "secret-..data", want: `may not start with ".."`},
		{name: "empty file name", ann: map[string]string{Prefix + "secret-": "db"},
			field: Prefix + "secret-", want: "file name is empty"},
		{name: "object name", ann: map[string]string{Prefix + "secret-x": "db_password"},
			field: Prefix + "secret-x", want: "not a valid object name"},
		{name: "version", ann: map[string]string{Prefix + "secret-x": "db@v-1"},
			field: Prefix + "secret-x", want: "not a valid version"},
		{name: "empty reference", ann: map[string]string{Prefix + "secret-x": ""},
			field: Prefix + "secret-x", want: "empty reference"},
		{name: "two slashes", ann: map[string]string{Prefix + "secret-x": "kv1/a/b"},
			field: Prefix + "secret-x", want: "more than one '/'"},
		{name: "URL of the wrong kind", ann: map[string]string{Prefix + "key-x": "https://kv1.vault.azure.net/secrets/sign"},
			field: Prefix + "key-x", want: "not a key URL; use https://<vault host>/keys/<name>"},
		{name: "object URL over http", ann: map[string]string{Prefix + "secret-x": "http://kv1.vault.azure.net/secrets/a"},
			field: Prefix + "secret-x", want: "https only"},
		{name: "template syntax", ann: map[string]string{Prefix + "template-app.env": `{{ secret "db-password" `},
			field: Prefix + "template-app.env", want: "template does not parse"},
		{name: "template function", ann: map[string]string{Prefix + "template-app.env": `{{ secert "db-password" }}`},
			field: Prefix + "template-app.env", want: `function "secert" not defined`},
		{name: "template reference", ann: map[string]string{Prefix + "template-app.env": `{{ secret "db-pasword" }}`},
			field: Prefix + "template-app.env", want: `no file "db-pasword" in this pod`},
		{name: "template kind", ann: map[string]string{Prefix + "template-a": `{{ privateKey "db-password" }}`},
			field: Prefix + "template-a", want: `file "db-password" is a secret, privateKey needs a cert`},
		{name: "template of template", ann: map[string]string{Prefix + "template-a": `x`, Prefix + "template-b": `{{ secret "a" }}`},
			field: Prefix + "template-b", want: "names another template"},
		{name: "empty template", ann: map[string]string{Prefix + "template-a": ""},
			field: Prefix + "template-a", want: "template is empty"},
		{name: "objects not YAML", ann: map[string]string{AnnotationObjects: "- [unclosed"},
			field: AnnotationObjects, want: "not YAML"},
		{name: "objects wrong shape", ann: map[string]string{AnnotationObjects: "objectName: db"},
			field: AnnotationObjects, want: "exactly one key, array"},
		{name: "objects unknown field", ann: map[string]string{AnnotationObjects: "- {objectNme: db, objectType: secret}"},
			field: AnnotationObjects + "[0]", want: `unknown field "objectNme"`},
		{name: "objects type", ann: map[string]string{AnnotationObjects: "- {objectName: db, objectType: blob}"},
			field: AnnotationObjects + "[0] (db)", want: `objectType "blob" is not secret, cert or key`},
		{name: "objects history", ann: map[string]string{AnnotationObjects: "- {objectName: db, objectType: secret, objectVersionHistory: 3}"},
			field: AnnotationObjects + "[0] (db)", want: "objectVersionHistory 3 is not supported"},
		{name: "objects pfx on cert", ann: map[string]string{AnnotationObjects: "- {objectName: tls, objectType: cert, objectFormat: pfx}"},
			field: AnnotationObjects + "[0] (tls)", want: "objectFormat pfx needs objectType secret"},
		{name: "objects encoding on key", ann: map[string]string{AnnotationObjects: "- {objectName: k, objectType: key, objectEncoding: base64}"},
			field: AnnotationObjects + "[0] (k)", want: "applies to objectType secret only"},
		{name: "objects alias escapes", ann: map[string]string{AnnotationObjects: "- {objectName: db, objectType: secret, objectAlias: ../etc/passwd}"},
			field: AnnotationObjects + "[0] (db)", want: `objectAlias: file name "../etc/passwd" may not start with ".."`},
		{name: "objects alias with slash", ann: map[string]string{AnnotationObjects: "- {objectName: db, objectType: secret, objectAlias: a/b}"},
			field: AnnotationObjects + "[0] (db)", want: "one path element, no '/'"},
		{name: "duplicate file", ann: map[string]string{AnnotationObjects: "- {objectName: other, objectType: secret, objectAlias: db-password}"},
			field: AnnotationObjects + "[0] (other)", want: `file "db-password" is already written by kvinject.io/secret-db-password`},
		{name: "nothing requested", ann: map[string]string{Prefix + "secret-db-password": "-"},
			field: AnnotationInject, want: "no objects requested"},
		{name: "volume name taken", pod: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: SecretsVolume}}
		}, field: "spec.volumes", want: `already has a volume "kvinject-secrets"`},
		{name: "API token placeholder name taken", pod: func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: NoAPITokenVolume}}
		}, field: "spec.volumes", want: `already has a volume "kvinject-no-api-token"`},
		{name: "windows pod", pod: func(p *corev1.Pod) {
			p.Spec.OS = &corev1.PodOS{Name: corev1.Windows}
		}, field: "spec.os.name", want: "Linux only"},
		{name: "container name taken", pod: func(p *corev1.Pod) {
			p.Spec.Containers[1].Name = AgentContainer
		}, field: "spec.containers", want: `already has a container "kvinject-agent"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(tc.ann)
			if tc.pod != nil {
				tc.pod(pod)
			}
			_, _, err := Inject(pod, nil, testDefaults())
			var inv *InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("error = %v, want *InvalidError", err)
			}
			for _, p := range inv.Problems {
				if p.Field == tc.field && strings.Contains(p.Message, tc.want) {
					return
				}
			}
			t.Errorf("no problem on %s containing %q in:\n%v", tc.field, tc.want, err)
		})
	}
}

// TestAllProblemsAtOnce checks that one denial lists every mistake.
func TestAllProblemsAtOnce(t *testing.T) {
	_, _, err := Inject(testPod(map[string]string{
		AnnotationRefresh: "soon", AnnotationSidecar: "both", AnnotationFileMode: "rw",
	}), nil, testDefaults())
	var inv *InvalidError
	if !errors.As(err, &inv) || len(inv.Problems) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	if !strings.HasPrefix(err.Error(), "kvinject: 3 problems: kvinject.io/refresh: ") {
		t.Errorf("message = %q", err)
	}
}
