package webhook

import (
	"crypto/tls"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

// kubeconfig writes a kubeconfig for a loopback API server; loading it
// contacts nothing.
func kubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(p, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func parseFlags(t *testing.T, args ...string) (Options, error) {
	t.Helper()
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := BindFlags(fs)
	if err := f.Parse(append([]string{"--kubeconfig", kubeconfig(t)}, args...)); err != nil {
		return Options{}, err
	}
	return f.Options()
}

func TestFlagDefaults(t *testing.T) {
	o, err := parseFlags(t, "--agent-image", "ghcr.io/kvinject/kvinject:v1")
	if err != nil {
		t.Fatal(err)
	}
	public, _ := config.KnownCloud("AzurePublicCloud")
	d := o.Defaults
	if d.Image != "ghcr.io/kvinject/kvinject:v1" || d.Cloud != public || d.Sidecar != injector.SidecarNative ||
		d.MountPath != injector.DefaultMountPath || d.FileMode != injector.DefaultFileMode || d.Refresh != 0 ||
		d.VolumeSizeLimit.String() != injector.DefaultVolumeSizeLimit || d.NoMetrics ||
		d.IdentityBinding != (injector.IdentityBinding{CAConfigMap: "kube-root-ca.crt", Audience: "api://AKSIdentityBinding"}) {
		t.Errorf("defaults %+v", d)
	}
	want := injector.DefaultResources()
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		gr, gl := d.Resources.Requests[r], d.Resources.Limits[r]
		if gr.Cmp(want.Requests[r]) != 0 || gl.Cmp(want.Limits[r]) != 0 {
			t.Errorf("resources %v, want %v", d.Resources, want)
		}
	}
	if o.Port != 9443 || o.TLSMinVersion != tls.VersionTLS12 || o.MetricsBindAddress != ":8080" ||
		o.HealthProbeBindAddress != ":8081" || o.Config == nil || o.Config.Host != "https://127.0.0.1:6443" {
		t.Errorf("options %+v", o)
	}
}

func TestFlagsAndEnvironmentTwins(t *testing.T) {
	t.Setenv("KVINJECT_AGENT_IMAGE", "from-env:1")
	t.Setenv("KVINJECT_VAULT", "env-vault")
	t.Setenv("KVINJECT_REFRESH", "5m")
	t.Setenv("KVINJECT_CLOUD", "Custom")
	t.Setenv("KVINJECT_AUTHORITY_HOST", "https://127.0.0.1:8443")
	t.Setenv("KVINJECT_VAULT_SUFFIX", "vault.localhost")
	t.Setenv("KVINJECT_CA_CONFIGMAP", "corp-root-ca")
	t.Setenv("KVINJECT_DISABLE_INSTANCE_DISCOVERY", "true")
	t.Setenv("KVINJECT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION", "true")
	t.Setenv("KVINJECT_AGENT_MEMORY_LIMIT", "")
	t.Setenv("KVINJECT_TLS_MIN_VERSION", "1.3")
	t.Setenv("KVINJECT_AGENT_METRICS", "false")
	t.Setenv("KVINJECT_IDENTITY_BINDING", "true")
	t.Setenv("KVINJECT_IDENTITY_BINDING_TOKEN_PROXY", "https://kubernetes.default.svc")
	t.Setenv("KVINJECT_IDENTITY_BINDING_SNI_NAME", "0123abcd.ib.test")
	t.Setenv("KVINJECT_IDENTITY_BINDING_CA_CONFIGMAP", "")
	// The flag wins over its twin.
	o, err := parseFlags(t, "--vault", "flag-vault", "--client-id", "00000000-0000-0000-0000-0000000000c1", "--tenant-id", "tid",
		"--sidecar", "classic", "--mount-path", "/secrets", "--file-mode", "0400", "--agent-cpu-request", "5m",
		"--volume-size-limit", "1Mi", "--agent-image-pull-policy", "IfNotPresent", "--port", "10250")
	if err != nil {
		t.Fatal(err)
	}
	d := o.Defaults
	wantCloud := config.Cloud{Name: "Custom", AuthorityHost: "https://127.0.0.1:8443/", VaultSuffix: "vault.localhost",
		DisableInstanceDiscovery: true, DisableChallengeResourceVerification: true}
	if d.Image != "from-env:1" || d.Vault != "flag-vault" || d.ClientID != "00000000-0000-0000-0000-0000000000c1" || d.TenantID != "tid" ||
		d.Refresh != config.Duration(5*time.Minute) || d.Cloud != wantCloud || d.Sidecar != "classic" ||
		d.MountPath != "/secrets" || d.FileMode != 0o400 || d.ImagePullPolicy != corev1.PullIfNotPresent ||
		d.VolumeSizeLimit.Cmp(resource.MustParse("1Mi")) != 0 || d.CAConfigMap != "corp-root-ca" || !d.NoMetrics {
		t.Errorf("defaults %+v", d)
	}
	if d.IdentityBinding != (injector.IdentityBinding{Default: true, TokenProxy: "https://kubernetes.default.svc", SNIName: "0123abcd.ib.test",
		Audience: "api://AKSIdentityBinding"}) {
		t.Errorf("identity binding %+v", d.IdentityBinding)
	}
	if q := d.Resources.Requests[corev1.ResourceCPU]; q.String() != "5m" {
		t.Errorf("cpu request %v", q.String())
	}
	if _, ok := d.Resources.Limits[corev1.ResourceMemory]; ok {
		t.Errorf("KVINJECT_AGENT_MEMORY_LIMIT= should leave no memory limit: %v", d.Resources.Limits)
	}
	if o.Port != 10250 || o.TLSMinVersion != tls.VersionTLS13 {
		t.Errorf("options %+v", o)
	}
}

func TestBadFlagsNameTheFlagAndTwin(t *testing.T) {
	_, err := parseFlags(t, "--cloud", "Mars", "--authority-host", "https://x/", "--sidecar", "both",
		"--file-mode", "999", "--agent-memory-limit", "lots", "--tls-min-version", "1.1", "--mount-path", "rel",
		"--ca-configmap", "Corp_CA", "--identity-binding")
	if err == nil {
		t.Fatal("bad flags accepted")
	}
	for _, s := range []string{
		"--agent-image (KVINJECT_AGENT_IMAGE): is required",
		`--cloud (KVINJECT_CLOUD): "Mars" is not one of AzurePublicCloud`,
		"--authority-host (KVINJECT_AUTHORITY_HOST): applies only with --cloud=Custom",
		`--sidecar (KVINJECT_SIDECAR): "both"`,
		`--file-mode (KVINJECT_FILE_MODE): "999"`,
		`--agent-memory-limit (KVINJECT_AGENT_MEMORY_LIMIT): "lots"`,
		`--tls-min-version (KVINJECT_TLS_MIN_VERSION): "1.1"`,
		`--mount-path (KVINJECT_MOUNT_PATH): "rel"`,
		`--ca-configmap (KVINJECT_CA_CONFIGMAP): "Corp_CA" is not a ConfigMap name`,
		"--identity-binding (KVINJECT_IDENTITY_BINDING): is on for every pod, but there is no token proxy",
	} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q:\n%v", s, err)
		}
	}

	// What the pods' validators refuse stops the webhook too, naming the flag.
	_, err = parseFlags(t, "--agent-image", "x", "--vault", "my_vault", "--client-id", "cid", "--tenant-id", "a/b",
		"--mount-path", "/etc/secrets", "--agent-cpu-request", "2", "--agent-cpu-limit", "1")
	for _, s := range []string{
		`--vault (KVINJECT_VAULT): vault "my_vault" is not a vault name`,
		`--client-id (KVINJECT_CLIENT_ID): "cid" is not a valid client ID`,
		`--tenant-id (KVINJECT_TENANT_ID): "a/b" is not a valid tenant ID`,
		`--mount-path (KVINJECT_MOUNT_PATH): "/etc/secrets" is in the system directory /etc`,
		`--agent-cpu-request (KVINJECT_AGENT_CPU_REQUEST): cpu request 2 is above the limit 1`,
	} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q:\n%v", s, err)
		}
	}

	_, err = parseFlags(t, "--agent-image", "x", "--identity-binding-token-proxy", "http://kubernetes.default.svc",
		"--identity-binding-sni-name", "a b", "--identity-binding-ca-configmap", "Kube_CA", "--identity-binding-audience", "")
	for _, s := range []string{
		`--identity-binding-token-proxy (KVINJECT_IDENTITY_BINDING_TOKEN_PROXY): "http://kubernetes.default.svc" is not an https:// URL`,
		`--identity-binding-sni-name (KVINJECT_IDENTITY_BINDING_SNI_NAME): "a b" is not a TLS server name`,
		`--identity-binding-ca-configmap (KVINJECT_IDENTITY_BINDING_CA_CONFIGMAP): "Kube_CA" is not a ConfigMap name`,
		`--identity-binding-audience (KVINJECT_IDENTITY_BINDING_AUDIENCE): is empty; AKS's is api://AKSIdentityBinding`,
	} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q:\n%v", s, err)
		}
	}

	_, err = parseFlags(t, "--agent-image", "x", "--cloud", "Custom")
	if err == nil || !strings.Contains(err.Error(), "--authority-host (KVINJECT_AUTHORITY_HOST): is required with --cloud=Custom") ||
		!strings.Contains(err.Error(), "--vault-suffix (KVINJECT_VAULT_SUFFIX): is required") {
		t.Errorf("custom cloud without endpoints: %v", err)
	}

	t.Setenv("KVINJECT_REFRESH", "soon")
	_, err = parseFlags(t)
	if err == nil || !strings.Contains(err.Error(), `KVINJECT_REFRESH="soon" (--refresh)`) {
		t.Errorf("bad environment twin: %v", err)
	}
}

func TestEveryFlagDocumentsItsTwin(t *testing.T) {
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	BindFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasSuffix(f.Usage, "[$"+EnvName(f.Name)+"]") {
			t.Errorf("--%s usage %q does not name %s", f.Name, f.Usage, EnvName(f.Name))
		}
	})
}

func TestSelfManagedTLSFlags(t *testing.T) {
	_, err := parseFlags(t, "--agent-image", "x", "--self-managed-tls", "--service", "Web_hook")
	for _, s := range []string{
		`--namespace (KVINJECT_NAMESPACE): "" is not a name`,
		`--service (KVINJECT_SERVICE): "Web_hook" is not a name`,
	} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error does not say %q:\n%v", s, err)
		}
	}

	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	f := BindFlags(fs)
	t.Setenv("KVINJECT_NAMESPACE", "kvinject-system")
	t.Setenv("KVINJECT_SELF_MANAGED_TLS", "true")
	if err := f.Parse([]string{"--kubeconfig", kubeconfig(t), "--agent-image", "x", "--webhook-configuration", "kvi"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Options(); err != nil {
		t.Fatal(err)
	}
	got := f.SelfManagedTLS()
	want := SelfManagedTLS{Enabled: true, Namespace: "kvinject-system", SecretName: "kvinject-webhook-tls", Configuration: "kvi", Service: "kvinject-webhook"}
	if got != want {
		t.Errorf("SelfManagedTLS() = %+v; want %+v", got, want)
	}
	if n := got.DNSNames(); n[0] != "kvinject-webhook.kvinject-system.svc" || n[1] != "kvinject-webhook.kvinject-system.svc.cluster.local" {
		t.Errorf("DNSNames() = %q", n)
	}
}
