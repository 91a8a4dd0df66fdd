package injector

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kvinject/kvinject/agent/config"
)

// Built-in defaults for what neither the pod nor Defaults sets.
const (
	DefaultMountPath       = "/mnt/secrets"
	DefaultFileMode        = 0o440
	DefaultVolumeSizeLimit = "16Mi"
	// MinRefresh is the shortest refresh that does not draw a warning: Key
	// Vault throttles per vault, and every pod polls on its own.
	MinRefresh = 30 * time.Second

	// Agent resources, from make bench (docs/performance.md): an idle
	// sidecar holds about 9 MiB, a fetch of 100 objects peaks near 44 MiB
	// RSS and 0.1 s of CPU, which a 200m limit would stretch about fivefold
	// while the app waits.
	defaultCPURequest    = "10m"
	defaultMemoryRequest = "16Mi"
	defaultCPULimit      = "500m"
	defaultMemoryLimit   = "64Mi"
)

// Sidecar modes.
const (
	SidecarNative  = "native"
	SidecarClassic = "classic"
)

// ServiceAccount annotations of Azure workload identity, read as fallbacks.
const (
	WorkloadIdentityClientID = "azure.workload.identity/client-id"
	WorkloadIdentityTenantID = "azure.workload.identity/tenant-id"
)

// DefaultResources are the agent's requests and limits when Defaults.Resources
// sets neither list.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(defaultCPURequest),
			corev1.ResourceMemory: resource.MustParse(defaultMemoryRequest),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(defaultCPULimit),
			corev1.ResourceMemory: resource.MustParse(defaultMemoryLimit),
		},
	}
}

// spec is a pod's annotations after parsing, validation and defaulting.
type spec struct {
	cloud      config.Cloud
	refresh    time.Duration
	sidecar    string
	mountPath  string
	containers []string // nil: every container
	clientID   string
	tenantID   string
	// clientIDFrom and tenantIDFrom name where each came from, as problems
	// name fields: the pod annotation, the ServiceAccount's, or a default.
	clientIDFrom string
	tenantIDFrom string
	resources    corev1.ResourceRequirements
	files        []config.File // sorted by Name
	// metricsAddr is the sidecar's metrics listener; "" disables it.
	metricsAddr string
	// caConfigMap is the ConfigMap of extra CA certificates; "" for none.
	caConfigMap string
	// env are the targeted containers' variables from files, sorted by Name.
	env []config.Env
	// onChange is config.OnChangeRestart or "".
	onChange string
	// identityBinding: the agent signs in through Defaults.IdentityBinding.
	identityBinding bool
}

// Name rules are small functions rather than regular expressions: counted
// repeats such as {1,253} compile into large programs at start-up, and every
// injected pod's agent runs this binary.

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// each reports whether s has min to max bytes and ok accepts every one.
func each(s string, min, max int, ok func(byte) bool) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// isGUID accepts 8-4-4-4-12 hex digits.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return false
			}
		} else if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// isTenant accepts a GUID or a domain: alphanumerics, dots and hyphens,
// starting with an alphanumeric.
func isTenant(s string) bool {
	return s != "" && isAlnum(s[0]) && each(s, 1, len(s), func(c byte) bool { return isAlnum(c) || c == '.' || c == '-' })
}

// isVaultName follows Azure's vault name rule: 3-24 alphanumerics and hyphens,
// starting with a letter and ending with an alphanumeric.
func isVaultName(s string) bool {
	return each(s, 3, 24, func(c byte) bool { return isAlnum(c) || c == '-' }) &&
		!('0' <= s[0] && s[0] <= '9') && s[0] != '-' && s[len(s)-1] != '-'
}

// isObjectName: Key Vault object names are 1-127 alphanumerics and hyphens.
func isObjectName(s string) bool {
	return each(s, 1, 127, func(c byte) bool { return isAlnum(c) || c == '-' })
}

// isVersion: object versions are up to 64 alphanumerics (32 hex digits in practice).
func isVersion(s string) bool { return each(s, 1, 64, isAlnum) }

// isFileName: one path element of safe characters, so no file escapes the mount.
func isFileName(s string) bool {
	return each(s, 1, 253, func(c byte) bool { return isAlnum(c) || c == '.' || c == '_' || c == '-' })
}

// parser holds the state of parsing one pod.
type parser struct {
	ann      map[string]string
	pod      *corev1.Pod
	sa       *corev1.ServiceAccount
	d        Defaults
	problems problems
	warnings []string

	vault    string // default vault URL; "" when none
	fileMode os.FileMode
	// templates are parsed after every object file is known.
	templates map[string]string
	// fileSource names the annotation each file came from, for duplicate errors.
	fileSource map[string]string
}

func parseSpec(pod *corev1.Pod, sa *corev1.ServiceAccount, d Defaults) (*spec, []string, error) {
	p := &parser{ann: pod.Annotations, pod: pod, sa: sa, d: d,
		templates: map[string]string{}, fileSource: map[string]string{}}
	s := &spec{}

	keys := make([]string, 0, len(p.ann))
	for k := range p.ann {
		if strings.HasPrefix(k, Prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, _, ok := lookup(k); !ok {
			if sg := suggest(k); sg != "" {
				p.problems.add(k, "unknown annotation; did you mean %s?", sg)
			} else {
				p.problems.add(k, "unknown annotation; see docs/annotations.md for the list")
			}
		}
	}
	if v, ok := p.ann[AnnotationStatus]; ok && v != StatusInjected {
		p.problems.add(AnnotationStatus, "is written by kvinject and may only be %q; remove it", StatusInjected)
	}

	s.cloud = p.parseCloud()
	p.vault = p.parseDefaultVault(s.cloud)
	s.refresh = p.parseRefresh()
	s.sidecar = p.parseSidecar(s.refresh)
	s.mountPath = p.parseMountPath()
	s.containers = p.parseContainers()
	s.clientID, s.tenantID, s.clientIDFrom, s.tenantIDFrom = p.parseIdentity()
	p.fileMode = p.parseFileMode()
	s.resources = p.parseResources()
	s.metricsAddr = p.metricsAddr(s.refresh)
	s.caConfigMap = p.parseCAConfigMap()
	s.identityBinding = p.parseIdentityBinding()

	for _, k := range keys {
		a, file, ok := lookup(k)
		if !ok {
			continue
		}
		if _, isFile := a.perFile(); isFile {
			if f, ok := p.parseFileAnnotation(k, a, file, s.cloud); ok {
				s.files = append(s.files, f)
			}
		}
	}
	if v, ok := p.ann[AnnotationObjects]; ok {
		s.files = append(s.files, p.parseObjects(v, s.cloud)...)
	}
	sort.Slice(s.files, func(i, j int) bool { return s.files[i].Name < s.files[j].Name })
	p.checkTemplates(s.files)
	s.env = p.parseEnv(keys, s.files)
	s.onChange = p.parseOnChange(s.refresh, s.sidecar)
	if len(s.files) == 0 && len(p.problems) == 0 {
		p.problems.add(AnnotationInject, "no objects requested; add e.g. %s<file>: <secret name> or %s", Prefix+FileSecret, AnnotationObjects)
	}
	if err := p.problems.err(); err != nil {
		return nil, p.warnings, err
	}
	return s, p.warnings, nil
}

func (p *parser) warn(format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf(format, args...))
}

func (p *parser) parseCloud() config.Cloud {
	if v := p.ann[AnnotationCloud]; v != "" {
		if c, ok := config.KnownCloud(v); ok {
			return c
		}
		if p.d.Cloud.Name == v {
			return p.d.Cloud // a custom cloud the webhook was configured with
		}
		p.problems.add(AnnotationCloud, "unknown cloud %q; use one of %s", v, cloudList())
		c, _ := config.KnownCloud("")
		return c
	}
	c := p.d.Cloud
	if c.AuthorityHost == "" && c.VaultSuffix == "" {
		known, ok := config.KnownCloud(c.Name)
		if !ok {
			p.problems.add(DefaultsCloud, "unknown cloud %q and no endpoints; use one of %s", c.Name, cloudList())
		}
		return known
	}
	if !strings.HasPrefix(c.AuthorityHost, "https://") || c.VaultSuffix == "" {
		p.problems.add(DefaultsCloud, "cloud %q needs an https:// authority host and a vault DNS suffix", c.Name)
	}
	return c
}

func (p *parser) parseDefaultVault(cloud config.Cloud) string {
	if v := p.ann[AnnotationVault]; v != "" {
		u, err := vaultURL(v, cloud)
		if err != nil {
			p.problems.add(AnnotationVault, "%v", err)
		}
		return u
	}
	if p.d.Vault == "" {
		return ""
	}
	u, err := vaultURL(p.d.Vault, cloud)
	if err != nil {
		p.problems.add(DefaultsVault, "%v", err)
	}
	return u
}

func (p *parser) parseRefresh() time.Duration {
	v, ok := p.ann[AnnotationRefresh]
	if !ok {
		return time.Duration(p.d.Refresh)
	}
	if v == "" || v == "0" {
		return 0
	}
	r, err := time.ParseDuration(v)
	if err != nil || r < 0 {
		p.problems.add(AnnotationRefresh, "%q is not a duration; use e.g. \"2m\" or \"1h\", or \"0\" to fetch once", v)
		return 0
	}
	if r > 0 && r < MinRefresh {
		p.warn("%s: %s is shorter than %s; many pods polling often can be throttled by Key Vault", AnnotationRefresh, r, MinRefresh)
	}
	return r
}

func (p *parser) parseSidecar(refresh time.Duration) string {
	v, set := p.ann[AnnotationSidecar]
	if !set || v == "" {
		v = p.d.Sidecar
	}
	if v == "" {
		v = SidecarNative
	}
	if v != SidecarNative && v != SidecarClassic {
		field := AnnotationSidecar
		if !set {
			field = DefaultsSidecar
		}
		p.problems.add(field, "%q is not a sidecar mode; use %q or %q", v, SidecarNative, SidecarClassic)
		return SidecarNative
	}
	if set && refresh == 0 {
		p.warn("%s has no effect without %s: the agent fetches once in an init container", AnnotationSidecar, AnnotationRefresh)
	}
	if v == SidecarClassic && refresh > 0 && p.pod.Spec.RestartPolicy != "" && p.pod.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		p.warn("%s: a classic sidecar never exits, so a pod with restartPolicy %s never completes; use %q", AnnotationSidecar, p.pod.Spec.RestartPolicy, SidecarNative)
	}
	return v
}

// metricsAddr is config.DefaultMetricsAddr for a sidecar, unless the pod
// turns metrics off (AnnotationMetrics) or the port could collide: a
// hostNetwork pod shares the node's network with every other such pod (and
// would expose the port on the node), and a container may declare the port
// or its name itself.
func (p *parser) metricsAddr(refresh time.Duration) string {
	switch v, set := p.ann[AnnotationMetrics]; v {
	case "false":
		return ""
	case "true":
		if refresh == 0 {
			p.warn("%s has no effect without %s: an init container serves no metrics", AnnotationMetrics, AnnotationRefresh)
		}
	default:
		if set {
			p.problems.add(AnnotationMetrics, "%q is not \"true\" or \"false\"", v)
			return ""
		}
		if p.d.NoMetrics {
			return ""
		}
	}
	if refresh == 0 {
		return ""
	}
	if p.pod.Spec.HostNetwork {
		p.warn("agent metrics are off: a hostNetwork pod shares the node's network, where port %d may be taken; set %s: \"false\" to say so", config.MetricsPort, AnnotationMetrics)
		return ""
	}
	for _, c := range slices.Concat(p.pod.Spec.InitContainers, p.pod.Spec.Containers) {
		for _, cp := range c.Ports {
			if cp.ContainerPort == config.MetricsPort || cp.Name == MetricsPortName {
				p.warn("agent metrics are off: container %q uses port %d or the port name %s; set %s: \"false\" to say so", c.Name, config.MetricsPort, MetricsPortName, AnnotationMetrics)
				return ""
			}
		}
	}
	return config.DefaultMetricsAddr
}

func (p *parser) parseMountPath() string {
	v := p.ann[AnnotationMountPath]
	field := AnnotationMountPath
	if v == "" {
		v, field = p.d.MountPath, DefaultsMountPath
	}
	if v == "" {
		return DefaultMountPath
	}
	if err := CheckMountPath(v); err != nil {
		p.problems.add(field, "%v", err)
	}
	return v
}

// systemDirs are where a mount would hide or replace what the container's
// system needs, or the API server's own ServiceAccount token.
var systemDirs = []string{"/proc", "/sys", "/dev", "/etc", "/var/run/secrets/kubernetes.io", "/run/secrets/kubernetes.io"}

// CheckMountPath validates a mount path of the secrets volume: a clean
// absolute path without ':', not / and not in a system directory.
func CheckMountPath(v string) error {
	if !path.IsAbs(v) || path.Clean(v) != v || v == "/" || strings.Contains(v, ":") {
		return fmt.Errorf("%q must be a clean absolute path other than / without ':', e.g. %s", v, DefaultMountPath)
	}
	for _, d := range systemDirs {
		if v == d || strings.HasPrefix(v, d+"/") {
			return fmt.Errorf("%q is in the system directory %s, which the mount would hide; use e.g. %s", v, d, DefaultMountPath)
		}
	}
	return nil
}

func (p *parser) parseContainers() []string {
	v, ok := p.ann[AnnotationContainers]
	if !ok {
		return nil
	}
	exists := map[string]bool{}
	var all []string
	for _, c := range p.pod.Spec.InitContainers {
		exists[c.Name] = true
		all = append(all, c.Name)
	}
	for _, c := range p.pod.Spec.Containers {
		exists[c.Name] = true
		all = append(all, c.Name)
	}
	var names []string
	seen := map[string]bool{}
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			p.problems.add(AnnotationContainers, "empty container name in %q; list names separated by commas", v)
		case n == AgentContainer || n == InitContainer:
			p.problems.add(AnnotationContainers, "%q is kvinject's own container; list only your containers", n)
		case !exists[n]:
			p.problems.add(AnnotationContainers, "no container %q in the pod; it has %s", n, strings.Join(all, ", "))
		case !seen[n]:
			seen[n] = true
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// parseIdentity resolves client and tenant ID: pod annotation, then the
// ServiceAccount's workload-identity annotations, then Defaults; and where
// each came from.
func (p *parser) parseIdentity() (clientID, tenantID, clientFrom, tenantFrom string) {
	sa := ServiceAccountName(p.pod)
	saRef := fmt.Sprintf("ServiceAccount %s", sa)
	if p.pod.Namespace != "" {
		saRef = fmt.Sprintf("ServiceAccount %s/%s", p.pod.Namespace, sa)
	}
	resolve := func(podKey, saKey, def, what string, valid func(string) bool, hint string) (string, string) {
		var v, field string
		switch {
		case p.ann[podKey] != "":
			v, field = p.ann[podKey], podKey
		case p.sa != nil && p.sa.Annotations[saKey] != "":
			v, field = p.sa.Annotations[saKey], saRef+" annotation "+saKey
		case def != "":
			v, field = def, "defaults: "+what // DefaultsClientID, DefaultsTenantID
		default:
			p.problems.add(podKey, "no %s for the agent: set %s on the pod, %s on %s, or the webhook's default", what, podKey, saKey, saRef)
			return "", ""
		}
		if !valid(v) {
			p.problems.add(field, "%q is not a valid %s; %s", v, what, hint)
		}
		return v, field
	}
	clientID, clientFrom = resolve(AnnotationClientID, WorkloadIdentityClientID, p.d.ClientID, "client ID",
		isGUID, "use the application (client) ID, a GUID like 00000000-0000-0000-0000-000000000000")
	tenantID, tenantFrom = resolve(AnnotationTenantID, WorkloadIdentityTenantID, p.d.TenantID, "tenant ID",
		isTenant, "use the directory (tenant) ID GUID or a domain like contoso.onmicrosoft.com")
	return clientID, tenantID, clientFrom, tenantFrom
}

// parseIdentityBinding reads kvinject.io/identity-binding, defaulting to
// the webhook's; the proxy itself is the webhook's (Defaults.IdentityBinding).
func (p *parser) parseIdentityBinding() bool {
	v, set := p.ann[AnnotationIdentityBinding]
	on := p.d.IdentityBinding.Default
	switch {
	case !set:
	case v == "true" || v == "false":
		on = v == "true"
	default:
		p.problems.add(AnnotationIdentityBinding, "%q is not \"true\" or \"false\"", v)
		return false
	}
	if on && p.d.IdentityBinding.TokenProxy == "" {
		// Only a pod can get here: a webhook with the default on and no
		// proxy does not start (CheckDefaults).
		p.problems.add(AnnotationIdentityBinding, "this cluster's kvinject has no identity-binding token proxy: its platform team sets the webhook's --identity-binding-token-proxy (see Identity bindings in docs/azure.md); or remove the annotation to sign in with a federated credential")
		return false
	}
	return on
}

func (p *parser) parseCAConfigMap() string {
	v, field := p.ann[AnnotationCAConfigMap], AnnotationCAConfigMap
	if _, ok := p.ann[AnnotationCAConfigMap]; !ok {
		v, field = p.d.CAConfigMap, "defaults: CA ConfigMap"
	}
	if v == "" {
		return ""
	}
	// Kubernetes' own rule for ConfigMap names (already linked in: the API types use it).
	if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
		p.problems.add(field, "%q is not a ConfigMap name (%s); e.g. corp-root-ca", v, strings.Join(errs, "; "))
		return ""
	}
	return v
}

func (p *parser) parseFileMode() os.FileMode {
	if v, ok := p.ann[AnnotationFileMode]; ok {
		m, err := parseMode(v)
		if err != nil {
			p.problems.add(AnnotationFileMode, "%v", err)
			return DefaultFileMode
		}
		p.checkMode(AnnotationFileMode, m)
		return m
	}
	if p.d.FileMode != 0 {
		if p.d.FileMode < 0 || p.d.FileMode > 0o777 {
			p.problems.add(DefaultsFileMode, "%#o is not a permission mode between 0 and 0777", p.d.FileMode)
			return DefaultFileMode
		}
		return os.FileMode(p.d.FileMode)
	}
	return DefaultFileMode
}

func parseMode(v string) (os.FileMode, error) {
	m, err := strconv.ParseUint(v, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal permission mode; use e.g. \"0440\"", v)
	}
	return os.FileMode(m), nil
}

// checkMode warns about modes that do what the user probably did not mean.
func (p *parser) checkMode(field string, m os.FileMode) {
	if m&0o040 == 0 {
		p.warn("%s: mode %#o has no group read bit; app containers read the files through their group (see docs/annotations.md#file-ownership)", field, m)
	}
	if m&0o007 != 0 {
		p.warn("%s: mode %#o gives other users access; %#o is enough for app containers", field, m, DefaultFileMode)
	}
}

func (p *parser) parseResources() corev1.ResourceRequirements {
	r := *p.d.Resources.DeepCopy()
	// Lists that are set, even empty, are the webhook's choice (none).
	if r.Requests == nil && r.Limits == nil {
		r = DefaultResources()
	}
	set := func(key string, list *corev1.ResourceList, name corev1.ResourceName) {
		v, ok := p.ann[key]
		if !ok {
			return
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			p.problems.add(key, "%q is not a positive quantity; use e.g. %q", v, exampleOf(key))
			return
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
	}
	set(AnnotationCPURequest, &r.Requests, corev1.ResourceCPU)
	set(AnnotationMemoryRequest, &r.Requests, corev1.ResourceMemory)
	set(AnnotationCPULimit, &r.Limits, corev1.ResourceCPU)
	set(AnnotationMemoryLimit, &r.Limits, corev1.ResourceMemory)
	for _, c := range []struct {
		name corev1.ResourceName
		req  string
	}{{corev1.ResourceCPU, AnnotationCPURequest}, {corev1.ResourceMemory, AnnotationMemoryRequest}} {
		name, req := c.name, c.req
		rq, hasReq := r.Requests[name]
		lim, hasLim := r.Limits[name]
		if hasReq && hasLim && rq.Cmp(lim) > 0 {
			p.problems.add(req, "request %s is above the limit %s; raise the limit or lower the request", rq.String(), lim.String())
		}
	}
	return r
}

func exampleOf(key string) string {
	a, _, _ := lookup(key)
	return a.Example
}

// parseFileAnnotation parses secret-, cert-, key- and template-<file>.
func (p *parser) parseFileAnnotation(key string, a Annotation, file string, cloud config.Cloud) (config.File, bool) {
	if err := checkFileName(file); err != nil {
		p.problems.add(key, "%v", err)
		return config.File{}, false
	}
	if !p.claim(file, key) {
		return config.File{}, false
	}
	v := p.ann[key]
	f := config.File{Name: file, Mode: config.FileMode(p.fileMode)}
	if a.Name == FileTemplate+"<file>" {
		if v == "" {
			p.problems.add(key, "template is empty; write a Go template such as {{ secret \"db-password\" }}")
			return config.File{}, false
		}
		p.templates[file] = v
		f.Template = v
		return f, true
	}
	kind := map[string]config.Kind{FileSecret + "<file>": config.KindSecret, FileCert + "<file>": config.KindCert,
		FileKey + "<file>": config.KindKey, FilePublicCert + "<file>": config.KindPublicCert}[a.Name]
	obj, err := p.objectRef(v, kind, cloud)
	if err != nil {
		p.problems.add(key, "%v", err)
		return config.File{}, false
	}
	f.Object = obj
	return f, true
}

// parseEnv parses the env-<NAME> annotations; keys are sorted, so the
// variables are sorted by name.
func (p *parser) parseEnv(keys []string, files []config.File) []config.Env {
	var env []config.Env
	for _, k := range keys {
		a, name, ok := lookup(k)
		if !ok || a.Name != EnvPrefix+"<NAME>" {
			continue
		}
		file := p.ann[k]
		if msgs := validation.IsRelaxedEnvVarName(name); len(msgs) > 0 {
			p.problems.add(k, "%q is not a valid environment variable name: %s", name, strings.Join(msgs, "; "))
			continue
		}
		if name == config.EnvCheck {
			p.problems.add(k, "%s is kvinject's own check that the kubelet reads env files; choose another name", name)
			continue
		}
		if !slices.ContainsFunc(files, func(f config.File) bool { return f.Name == file }) {
			p.problems.add(k, "names file %q, which no annotation of this pod writes; name one of the pod's files, e.g. %s<file>: %s and %s: <file>", file, Prefix+FileSecret, exampleOf(Prefix+FileSecret+"x"), k)
			continue
		}
		env = append(env, config.Env{Name: name, File: file})
	}
	if src, taken := p.fileSource[config.EnvFile]; taken && len(env) > 0 {
		p.problems.add(src, "file %q is where kvinject writes the environment variables; give the file another name", config.EnvFile)
	}
	return env
}

// parseOnChange parses kvinject.io/on-change. Restart needs a native sidecar
// that refreshes: only it sees changes, and the kubelet's restart rule is
// set on it.
func (p *parser) parseOnChange(refresh time.Duration, sidecar string) string {
	v, ok := p.ann[AnnotationOnChange]
	hook := strings.HasPrefix(v, "http")
	switch {
	case !ok || v == "none":
		return ""
	case hook && config.CheckHook(v) != nil:
		p.problems.add(AnnotationOnChange, "%v", config.CheckHook(v))
	case !hook && v != config.OnChangeRestart:
		p.problems.add(AnnotationOnChange, "%q is not none, %s or a hook http://127.0.0.1:<port>/<path>", v, config.OnChangeRestart)
	case refresh == 0:
		p.problems.add(AnnotationOnChange, "%s needs a refreshing agent; set %s, e.g. %s", v, AnnotationRefresh, exampleOf(AnnotationRefresh))
	case hook:
		return v
	case sidecar == SidecarClassic:
		p.problems.add(AnnotationOnChange, "restart needs the native sidecar; remove %s: %s", AnnotationSidecar, SidecarClassic)
	default:
		return v
	}
	return ""
}

// claim records that file comes from source, and reports a duplicate.
func (p *parser) claim(file, source string) bool {
	if prev, dup := p.fileSource[file]; dup {
		p.problems.add(source, "file %q is already written by %s; give one of them another file name", file, prev)
		return false
	}
	p.fileSource[file] = source
	return true
}

func checkFileName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("file name is empty; put it after the dash, e.g. %ssecret-db-password", Prefix)
	case strings.HasPrefix(name, ".."):
		return fmt.Errorf("file name %q may not start with \"..\" (reserved for the atomic writer and escaping the mount)", name)
	case name == ".":
		return fmt.Errorf("file name %q is not a file", name)
	case !isFileName(name):
		return fmt.Errorf("file name %q may hold only letters, digits, '.', '_' and '-' (one path element, no '/')", name)
	}
	return nil
}

// objectRef parses `name`, `name@version`, `vault/name[@version]` or an object URL.
func (p *parser) objectRef(v string, kind config.Kind, cloud config.Cloud) (*config.Object, error) {
	if v == "" {
		return nil, fmt.Errorf("empty reference; use a %s name, name@version, vault/name or an object URL", kind)
	}
	lower := strings.ToLower(v)
	if strings.HasPrefix(lower, "http://") {
		return nil, fmt.Errorf("%q: Key Vault is served over https only; use https://", v)
	}
	if strings.HasPrefix(lower, "https://") {
		return objectURL(v, kind)
	}
	rest, version, hasVersion := strings.Cut(v, "@")
	vault := p.vault
	name := rest
	if vn, n, ok := strings.Cut(rest, "/"); ok {
		u, err := vaultURL(vn, cloud)
		if err != nil {
			return nil, err
		}
		if strings.Contains(n, "/") {
			return nil, fmt.Errorf("%q has more than one '/'; use vault/name[@version]", v)
		}
		vault, name = u, n
	}
	if !isObjectName(name) {
		return nil, fmt.Errorf("%q is not a valid object name (1-127 letters, digits and '-')", name)
	}
	if hasVersion && !isVersion(version) {
		return nil, fmt.Errorf("%q is not a valid version (letters and digits, e.g. the 32 hex digits Key Vault shows)", version)
	}
	if vault == "" {
		return nil, fmt.Errorf("no vault for %q; set %s, write myvault/%s, or set the webhook's default vault", name, AnnotationVault, name)
	}
	return &config.Object{Vault: vault, Kind: kind, Name: name, Version: version}, nil
}

// objectURL parses https://<vault host>/<collection>/<name>[/<version>].
func objectURL(v string, kind config.Kind) (*config.Object, error) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q is not an object URL like https://myvault.vault.azure.net/secrets/name[/version]", v)
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	collections := map[config.Kind][]string{
		config.KindSecret:     {"secrets"},
		config.KindCert:       {"certificates", "secrets"},
		config.KindKey:        {"keys"},
		config.KindPublicCert: {"certificates"},
	}[kind]
	if len(parts) < 2 || len(parts) > 3 || !contains(collections, parts[0]) {
		return nil, fmt.Errorf("%q is not a %s URL; use https://<vault host>/%s/<name>[/<version>]", v, kind, collections[0])
	}
	if !isObjectName(parts[1]) {
		return nil, fmt.Errorf("%q is not a valid object name (1-127 letters, digits and '-')", parts[1])
	}
	o := &config.Object{Vault: "https://" + strings.ToLower(u.Host) + "/", Kind: kind, Name: parts[1]}
	if len(parts) == 3 {
		if !isVersion(parts[2]) {
			return nil, fmt.Errorf("%q is not a valid version (letters and digits)", parts[2])
		}
		o.Version = parts[2]
	}
	return o, nil
}

// vaultURL resolves a vault name or https URL to the vault's base URL with a trailing slash.
func vaultURL(v string, cloud config.Cloud) (string, error) {
	lower := strings.ToLower(v)
	if strings.HasPrefix(lower, "http://") {
		return "", fmt.Errorf("vault %q: Key Vault is served over https only; use https://", v)
	}
	if strings.HasPrefix(lower, "https://") {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
			return "", fmt.Errorf("vault %q is not a vault URL; use https://<host>/ with no path", v)
		}
		return "https://" + strings.ToLower(u.Host) + "/", nil
	}
	if !isVaultName(v) || strings.Contains(v, "--") {
		return "", fmt.Errorf("vault %q is not a vault name (3-24 letters, digits and single '-', starting with a letter, ending with a letter or digit) or an https:// URL", v)
	}
	return "https://" + strings.ToLower(v) + "." + cloud.VaultSuffix + "/", nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func cloudList() string {
	return strings.Join(config.KnownCloudNames(), ", ")
}

// ServiceAccountName is the pod's ServiceAccount as the API server resolves
// it: serviceAccountName, else the deprecated serviceAccount, else "default"
// (for clusters without the ServiceAccount admission plugin).
func ServiceAccountName(pod *corev1.Pod) string {
	switch {
	case pod.Spec.ServiceAccountName != "":
		return pod.Spec.ServiceAccountName
	case pod.Spec.DeprecatedServiceAccount != "":
		return pod.Spec.DeprecatedServiceAccount
	}
	return "default"
}

// Fields of the problems CheckDefaults reports: the part of Defaults at fault.
const (
	DefaultsImage     = "defaults: image"
	DefaultsCloud     = "defaults: cloud"
	DefaultsVault     = "defaults: vault"
	DefaultsSidecar   = "defaults: sidecar"
	DefaultsMountPath = "defaults: mount path"
	DefaultsClientID  = "defaults: client ID"
	DefaultsTenantID  = "defaults: tenant ID"
	DefaultsFileMode  = "defaults: file mode"
	DefaultsResources = "defaults: resources"
	// The identity-binding proxy's settings.
	DefaultsIdentityBinding = "defaults: identity binding"
	DefaultsTokenProxy      = "defaults: identity-binding token proxy"
	DefaultsSNIName         = "defaults: identity-binding SNI name"
	DefaultsIBCAConfigMap   = "defaults: identity-binding CA ConfigMap"
	DefaultsIBAudience      = "defaults: identity-binding audience"
)

// CheckDefaults validates d with the validators every pod's annotations go
// through, so that a bad default stops the webhook at start-up instead of
// denying every pod. It parses a pod that sets nothing itself and keeps the
// problems that name a default.
func CheckDefaults(d Defaults) []Problem {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	pod.Annotations = map[string]string{AnnotationInject: "true", Prefix + FileSecret + "x": "x"}
	var ps problems
	if d.Image == "" {
		ps.add(DefaultsImage, "no agent image")
	}
	if _, _, err := parseSpec(pod, nil, d); err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			for _, p := range inv.Problems {
				if strings.HasPrefix(p.Field, "defaults: ") {
					ps = append(ps, p)
				}
			}
		}
	}
	checkIdentityBinding(d.IdentityBinding, &ps)
	r := d.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		rq, hasReq := r.Requests[name]
		lim, hasLim := r.Limits[name]
		if hasReq && hasLim && rq.Cmp(lim) > 0 {
			ps.add(DefaultsResources, "%s request %s is above the limit %s", name, rq.String(), lim.String())
		}
	}
	return ps
}

// checkIdentityBinding checks the identity-binding settings as azidentity
// will (an https URL without user, query or fragment) and as Kubernetes
// names ConfigMaps, so a mistake stops the webhook, not every agent.
func checkIdentityBinding(ib IdentityBinding, ps *problems) {
	if ib.TokenProxy == "" {
		if ib.Default {
			ps.add(DefaultsIdentityBinding, "is on for every pod, but there is no token proxy; set the identity-binding token proxy URL too")
		}
		return
	}
	if u, err := url.Parse(ib.TokenProxy); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		ps.add(DefaultsTokenProxy, "%q is not an https:// URL without user, query or fragment, like the AZURE_KUBERNETES_TOKEN_PROXY that AKS's webhook gives a pod with azure.workload.identity/use-identity-binding", ib.TokenProxy)
	}
	if ib.SNIName != "" && (!each(ib.SNIName, 1, 253, func(c byte) bool { return isAlnum(c) || c == '.' || c == '-' }) || !isAlnum(ib.SNIName[0])) {
		ps.add(DefaultsSNIName, "%q is not a TLS server name (letters, digits, '.' and '-')", ib.SNIName)
	}
	if errs := validation.IsDNS1123Subdomain(ib.CAConfigMap); ib.CAConfigMap != "" && len(errs) > 0 {
		ps.add(DefaultsIBCAConfigMap, "%q is not a ConfigMap name (%s); e.g. %s", ib.CAConfigMap, strings.Join(errs, "; "), IdentityBindingCAConfigMap)
	}
	if ib.Audience == "" {
		ps.add(DefaultsIBAudience, "is empty; AKS's is %s", IdentityBindingAudience)
	}
}
