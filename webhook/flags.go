package webhook

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

// EnvPrefix starts every flag's environment twin: --agent-image is
// KVINJECT_AGENT_IMAGE.
const EnvPrefix = "KVINJECT_"

// EnvName is the environment variable that sets flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// DefaultsFlags binds every field of injector.Defaults to a flag.
type DefaultsFlags struct {
	image, pullPolicy              string
	vault, clientID, tenantID      string
	cloud, authorityHost, suffix   string
	noDiscovery, noChallengeVerify bool
	refresh                        time.Duration
	sidecar, mountPath, fileMode   string
	cpuRequest, memoryRequest      string
	cpuLimit, memoryLimit          string
	volumeSizeLimit                string
	caConfigMap                    string
	metrics                        bool
	identityBinding                injector.IdentityBinding
}

// BindDefaultsFlags defines the injector's flags on fs.
func BindDefaultsFlags(fs *flag.FlagSet) *DefaultsFlags {
	f := &DefaultsFlags{}
	res := injector.DefaultResources()
	fs.StringVar(&f.image, "agent-image", "", "agent container image; use the webhook's own image (the manifests set it from the Deployment's image) (required)")
	fs.StringVar(&f.pullPolicy, "agent-image-pull-policy", "", "agent imagePullPolicy: Always, IfNotPresent or Never; empty leaves Kubernetes' default")
	fs.StringVar(&f.vault, "vault", "", "default vault, a name or an https:// URL, for pods that do not set kvinject.io/vault")
	fs.StringVar(&f.clientID, "client-id", "", "default client ID when neither the pod nor its ServiceAccount sets one")
	fs.StringVar(&f.tenantID, "tenant-id", "", "default tenant ID when neither the pod nor its ServiceAccount sets one")
	fs.StringVar(&f.cloud, "cloud", "AzurePublicCloud", "default cloud: "+strings.Join(config.KnownCloudNames(), ", ")+", or "+config.CustomCloud+" with --authority-host and --vault-suffix")
	fs.StringVar(&f.authorityHost, "authority-host", "", "Entra ID authority URL, e.g. https://login.example/ (only with --cloud="+config.CustomCloud+")")
	fs.StringVar(&f.suffix, "vault-suffix", "", "DNS suffix of vault names, e.g. vault.example (only with --cloud="+config.CustomCloud+")")
	fs.BoolVar(&f.noDiscovery, "disable-instance-discovery", false, "agents skip Entra instance discovery (private and disconnected clouds)")
	fs.BoolVar(&f.noChallengeVerify, "disable-challenge-resource-verification", false, "agents accept a Key Vault challenge whose resource does not match the vault host (private clouds)")
	fs.DurationVar(&f.refresh, "refresh", 0, "default refresh interval; 0 fetches once at pod start")
	fs.StringVar(&f.sidecar, "sidecar", injector.SidecarNative, "default refreshing agent kind: native or classic")
	fs.StringVar(&f.mountPath, "mount-path", injector.DefaultMountPath, "default path of the secrets volume in app containers")
	fs.StringVar(&f.fileMode, "file-mode", fmt.Sprintf("%04o", injector.DefaultFileMode), "default mode of written files, octal")
	fs.StringVar(&f.cpuRequest, "agent-cpu-request", quantity(res.Requests, corev1.ResourceCPU), "agent CPU request; empty for none")
	fs.StringVar(&f.memoryRequest, "agent-memory-request", quantity(res.Requests, corev1.ResourceMemory), "agent memory request; empty for none")
	fs.StringVar(&f.cpuLimit, "agent-cpu-limit", quantity(res.Limits, corev1.ResourceCPU), "agent CPU limit; empty for none")
	fs.StringVar(&f.memoryLimit, "agent-memory-limit", quantity(res.Limits, corev1.ResourceMemory), "agent memory limit; empty for none")
	fs.StringVar(&f.volumeSizeLimit, "volume-size-limit", injector.DefaultVolumeSizeLimit, "size limit of the in-memory secrets volume")
	fs.StringVar(&f.caConfigMap, "ca-configmap", "", "default ConfigMap (in each pod's namespace) of extra PEM CA certificates the agent trusts besides its image's bundle; empty for none")
	fs.BoolVar(&f.metrics, "agent-metrics", true, "sidecars serve Prometheus metrics on the pod IP unless a pod sets kvinject.io/metrics: \"false\"; false turns them off for every pod that does not set it to \"true\"")
	ib := &f.identityBinding
	fs.BoolVar(&ib.Default, "identity-binding", false, "agents sign in through the AKS identity-binding token proxy unless a pod sets kvinject.io/identity-binding: \"false\" (needs --identity-binding-token-proxy)")
	fs.StringVar(&ib.TokenProxy, "identity-binding-token-proxy", "", "https URL of the cluster's AKS identity-binding token proxy, the AZURE_KUBERNETES_TOKEN_PROXY that AKS's webhook gives a pod with azure.workload.identity/use-identity-binding; empty: pods cannot use identity bindings")
	fs.StringVar(&ib.SNIName, "identity-binding-sni-name", "", "TLS server name of the token proxy (AKS's AZURE_KUBERNETES_SNI_NAME); empty sends the URL's host")
	fs.StringVar(&ib.CAConfigMap, "identity-binding-ca-configmap", injector.IdentityBindingCAConfigMap, "ConfigMap in each pod's namespace whose key "+injector.IdentityBindingCAKey+" is the token proxy's CA; empty trusts the agent image's roots")
	fs.StringVar(&ib.Audience, "identity-binding-audience", injector.IdentityBindingAudience, "audience of the agent's service-account token in identity-binding mode")
	return f
}

func quantity(l corev1.ResourceList, name corev1.ResourceName) string {
	if q, ok := l[name]; ok {
		return q.String()
	}
	return ""
}

// Defaults validates the flags and returns the injector's defaults. Every
// error names the flag and its environment twin.
func (f *DefaultsFlags) Defaults() (injector.Defaults, error) {
	var errs []error
	flagged := map[string]bool{}
	bad := func(flag, format string, args ...any) {
		flagged[flag] = true
		errs = append(errs, fmt.Errorf("--%s (%s): %s", flag, EnvName(flag), fmt.Sprintf(format, args...)))
	}
	d := injector.Defaults{
		Image:           f.image,
		ImagePullPolicy: corev1.PullPolicy(f.pullPolicy),
		Vault:           f.vault,
		ClientID:        f.clientID,
		TenantID:        f.tenantID,
		Refresh:         config.Duration(f.refresh),
		Sidecar:         f.sidecar,
		MountPath:       f.mountPath,
		CAConfigMap:     f.caConfigMap,
		NoMetrics:       !f.metrics,
		IdentityBinding: f.identityBinding,
	}
	if d.Image == "" {
		bad("agent-image", "is required: the agent runs from the webhook's own image, e.g. ghcr.io/kvinject/kvinject:v1.0.0")
	}
	switch d.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		bad("agent-image-pull-policy", "%q is not Always, IfNotPresent or Never", f.pullPolicy)
	}
	if f.cloud == config.CustomCloud {
		d.Cloud = config.Cloud{Name: config.CustomCloud, VaultSuffix: strings.Trim(f.suffix, ".")}
		u, err := url.Parse(f.authorityHost)
		switch {
		case f.authorityHost == "":
			bad("authority-host", "is required with --cloud=%s", config.CustomCloud)
		case err != nil || u.Scheme != "https" || u.Host == "":
			bad("authority-host", "%q is not an https:// URL", f.authorityHost)
		default:
			d.Cloud.AuthorityHost = strings.TrimSuffix(f.authorityHost, "/") + "/"
		}
		if d.Cloud.VaultSuffix == "" {
			bad("vault-suffix", "is required with --cloud=%s", config.CustomCloud)
		}
	} else {
		c, ok := config.KnownCloud(f.cloud)
		if !ok {
			bad("cloud", "%q is not one of %s, %s", f.cloud, strings.Join(config.KnownCloudNames(), ", "), config.CustomCloud)
		}
		d.Cloud = c
		if f.authorityHost != "" {
			bad("authority-host", "applies only with --cloud=%s; %s has its own", config.CustomCloud, c.Name)
		}
		if f.suffix != "" {
			bad("vault-suffix", "applies only with --cloud=%s; %s has its own", config.CustomCloud, c.Name)
		}
	}
	d.Cloud.DisableInstanceDiscovery = f.noDiscovery
	d.Cloud.DisableChallengeResourceVerification = f.noChallengeVerify
	if f.refresh < 0 {
		bad("refresh", "%s is negative; use 0 to fetch once", f.refresh)
	}
	if f.sidecar != injector.SidecarNative && f.sidecar != injector.SidecarClassic {
		bad("sidecar", "%q is not %s or %s", f.sidecar, injector.SidecarNative, injector.SidecarClassic)
	}
	if m, err := strconv.ParseUint(f.fileMode, 8, 32); err != nil || m > 0o777 {
		bad("file-mode", "%q is not an octal mode like 0440", f.fileMode)
	} else {
		d.FileMode = int32(m)
	}
	for _, r := range []struct {
		flag, value string
		list        *corev1.ResourceList
		name        corev1.ResourceName
	}{
		{"agent-cpu-request", f.cpuRequest, &d.Resources.Requests, corev1.ResourceCPU},
		{"agent-memory-request", f.memoryRequest, &d.Resources.Requests, corev1.ResourceMemory},
		{"agent-cpu-limit", f.cpuLimit, &d.Resources.Limits, corev1.ResourceCPU},
		{"agent-memory-limit", f.memoryLimit, &d.Resources.Limits, corev1.ResourceMemory},
	} {
		// Empty is none: the lists are set, so the injector's built-in
		// resources do not apply.
		if *r.list == nil {
			*r.list = corev1.ResourceList{}
		}
		if r.value == "" {
			continue
		}
		q, err := resource.ParseQuantity(r.value)
		if err != nil || q.Sign() <= 0 {
			bad(r.flag, "%q is not a positive quantity like 100m or 64Mi; empty for none", r.value)
			continue
		}
		(*r.list)[r.name] = q
	}
	if errs := validation.IsDNS1123Subdomain(f.caConfigMap); f.caConfigMap != "" && len(errs) > 0 {
		bad("ca-configmap", "%q is not a ConfigMap name (%s); e.g. corp-root-ca", f.caConfigMap, strings.Join(errs, "; "))
	}
	if q, err := resource.ParseQuantity(f.volumeSizeLimit); err != nil || q.Sign() <= 0 {
		bad("volume-size-limit", "%q is not a positive quantity like 16Mi", f.volumeSizeLimit)
	} else {
		d.VolumeSizeLimit = q
	}
	// The same validators every pod's annotations go through, for what the
	// checks above let through.
	for _, p := range injector.CheckDefaults(d) {
		if f := defaultsFlag[p.Field]; !flagged[f] {
			bad(f, "%s", p.Message)
		}
	}
	return d, errors.Join(errs...)
}

// defaultsFlag is the flag that sets each part of injector.Defaults.
var defaultsFlag = map[string]string{
	injector.DefaultsImage:     "agent-image",
	injector.DefaultsCloud:     "cloud",
	injector.DefaultsVault:     "vault",
	injector.DefaultsSidecar:   "sidecar",
	injector.DefaultsMountPath: "mount-path",
	injector.DefaultsClientID:  "client-id",
	injector.DefaultsTenantID:  "tenant-id",
	injector.DefaultsFileMode:  "file-mode",
	injector.DefaultsResources: "agent-cpu-request",

	injector.DefaultsIdentityBinding: "identity-binding",
	injector.DefaultsTokenProxy:      "identity-binding-token-proxy",
	injector.DefaultsSNIName:         "identity-binding-sni-name",
	injector.DefaultsIBCAConfigMap:   "identity-binding-ca-configmap",
	injector.DefaultsIBAudience:      "identity-binding-audience",
}

// Flags are every flag of `kvinject webhook`.
type Flags struct {
	fs              *flag.FlagSet
	defaults        *DefaultsFlags
	host            string
	port            int
	certDir         string
	tlsMinVersion   string
	metricsAddr     string
	healthAddr      string
	shutdownTimeout time.Duration
	kubeconfig      string
	selfTLS         SelfManagedTLS
}

// SelfManagedTLS are the flags of the mode in which the webhook keeps its
// own serving certificate and caBundle (package servingcert).
type SelfManagedTLS struct {
	Enabled       bool
	Namespace     string
	SecretName    string
	Configuration string
	Service       string
}

// DNSNames are the names the API server reaches the Service by.
func (s SelfManagedTLS) DNSNames() []string {
	svc := s.Service + "." + s.Namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// BindFlags defines the webhook's flags on fs and notes each one's
// environment twin in its usage.
func BindFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs, defaults: BindDefaultsFlags(fs)}
	fs.StringVar(&f.host, "host", "", "address the HTTPS server listens on; empty is every address")
	fs.IntVar(&f.port, "port", 9443, "HTTPS port of the admission server")
	fs.StringVar(&f.certDir, "cert-dir", "/etc/kvinject/tls", "directory with tls.crt and tls.key, reloaded when they change")
	fs.StringVar(&f.tlsMinVersion, "tls-min-version", "1.2", "minimum TLS version: 1.2 or 1.3")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&f.healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz; 0 disables them")
	fs.DurationVar(&f.shutdownTimeout, "graceful-shutdown-timeout", 15*time.Second, "how long in-flight reviews may finish after SIGTERM")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses $KUBECONFIG, then the in-cluster config, then ~/.kube/config")
	fs.BoolVar(&f.selfTLS.Enabled, "self-managed-tls", false, "issue the serving certificate into --cert-dir from a CA kept in --self-managed-tls-secret and keep the caBundle of --webhook-configuration, without cert-manager")
	fs.StringVar(&f.selfTLS.Namespace, "namespace", "", "the webhook's namespace, of its Service and --self-managed-tls-secret (with --self-managed-tls; the manifests set it from the pod's namespace)")
	fs.StringVar(&f.selfTLS.SecretName, "self-managed-tls-secret", "kvinject-webhook-tls", "Secret holding the CA and serving certificate (with --self-managed-tls)")
	fs.StringVar(&f.selfTLS.Configuration, "webhook-configuration", "kvinject", "MutatingWebhookConfiguration whose caBundle the webhook keeps (with --self-managed-tls)")
	fs.StringVar(&f.selfTLS.Service, "service", "kvinject-webhook", "Service the API server calls the webhook through, named in the serving certificate (with --self-managed-tls)")
	fs.VisitAll(func(fl *flag.Flag) { fl.Usage += " [$" + EnvName(fl.Name) + "]" })
	return f
}

// Parse parses args, then sets every flag not given in args from its
// environment twin: a flag on the command line wins over the environment.
func (f *Flags) Parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: the webhook takes only flags", f.fs.Args())
	}
	return ApplyEnv(f.fs)
}

// ApplyEnv sets every flag of fs that was not set on the command line from
// its environment twin, if that is set.
func ApplyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	var errs []error
	fs.VisitAll(func(fl *flag.Flag) {
		if given[fl.Name] {
			return
		}
		if v, ok := os.LookupEnv(EnvName(fl.Name)); ok {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q (--%s): %w", EnvName(fl.Name), v, fl.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// SelfManagedTLS is the self-managed TLS mode's settings; Enabled false
// when the serving certificate comes mounted (cert-manager or your own).
func (f *Flags) SelfManagedTLS() SelfManagedTLS { return f.selfTLS }

// Options validates the flags, loads the kubeconfig and returns the
// webhook's options, without a Logger.
func (f *Flags) Options() (Options, error) {
	d, err := f.defaults.Defaults()
	errs := []error{err}
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s (%s): %s", flag, EnvName(flag), fmt.Sprintf(format, args...)))
	}
	o := Options{
		Defaults:                d,
		Host:                    f.host,
		Port:                    f.port,
		CertDir:                 f.certDir,
		MetricsBindAddress:      f.metricsAddr,
		HealthProbeBindAddress:  f.healthAddr,
		GracefulShutdownTimeout: f.shutdownTimeout,
	}
	if f.port < 1 || f.port > 65535 {
		bad("port", "%d is not a TCP port", f.port)
	}
	if f.certDir == "" {
		bad("cert-dir", "is empty; point it at the mounted serving certificate Secret")
	}
	switch f.tlsMinVersion {
	case "1.2":
		o.TLSMinVersion = tls.VersionTLS12
	case "1.3":
		o.TLSMinVersion = tls.VersionTLS13
	default:
		bad("tls-min-version", "%q is not 1.2 or 1.3", f.tlsMinVersion)
	}
	if f.shutdownTimeout <= 0 {
		bad("graceful-shutdown-timeout", "%s is not positive", f.shutdownTimeout)
	}
	if s := f.selfTLS; s.Enabled {
		for _, v := range []struct{ flag, value string }{
			{"namespace", s.Namespace}, {"service", s.Service},
		} {
			if errs := validation.IsDNS1123Label(v.value); len(errs) > 0 {
				bad(v.flag, "%q is not a name (%s); it is needed with --self-managed-tls", v.value, strings.Join(errs, "; "))
			}
		}
		if errs := validation.IsDNS1123Subdomain(s.SecretName); len(errs) > 0 {
			bad("self-managed-tls-secret", "%q is not a Secret name (%s)", s.SecretName, strings.Join(errs, "; "))
		}
		if errs := validation.IsDNS1123Subdomain(s.Configuration); len(errs) > 0 {
			bad("webhook-configuration", "%q is not a MutatingWebhookConfiguration name (%s)", s.Configuration, strings.Join(errs, "; "))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Options{}, err
	}
	if f.kubeconfig != "" {
		o.Config, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		o.Config, err = ctrlconfig.GetConfig()
	}
	if err != nil {
		return Options{}, fmt.Errorf("--kubeconfig (%s): load: %w", EnvName("kubeconfig"), err)
	}
	return o, nil
}
