// Package injector turns an annotated pod into one that gets its Key Vault
// objects from a kvinject agent. It is pure: pod, ServiceAccount and defaults
// in, pod and warnings out. No clients, no clocks, no globals, no I/O.
package injector

import (
	"encoding/json"
	"fmt"
	"iter"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvinject/kvinject/agent/config"
)

// Defaults are what the webhook (or `kvinject inject`) supplies for anything a
// pod does not set itself. Every field is a webhook flag with an env-var twin.
type Defaults struct {
	// Image is the agent image: the same image as the webhook.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Vault is the default vault, a name or a URL.
	Vault string
	// ClientID and TenantID are used when neither the pod nor its ServiceAccount sets them.
	ClientID string
	TenantID string
	// Cloud gives the authority host and vault DNS suffix.
	Cloud config.Cloud
	// Refresh is the default refresh interval; zero means fetch once.
	Refresh config.Duration
	// Sidecar is "native" or "classic".
	Sidecar string
	// MountPath is where app containers see the files.
	MountPath string
	// FileMode is the default mode of written files.
	FileMode int32
	// Resources are the agent's requests and limits.
	Resources corev1.ResourceRequirements
	// VolumeSizeLimit bounds the in-memory volume.
	VolumeSizeLimit resource.Quantity
	// CAConfigMap names a ConfigMap (in each pod's namespace) of extra CA
	// certificates for the agent; "" for none.
	CAConfigMap string
	// NoMetrics turns the sidecars' metrics off unless a pod's
	// kvinject.io/metrics is "true"; the zero value serves them.
	NoMetrics bool
	// Server is what the API server honours; a pod with env-<NAME> or
	// on-change: restart is denied when it would not (checkServer), also
	// when Server is unknown (the zero value).
	Server Server
	// IdentityBinding is the cluster's AKS identity-binding token proxy;
	// the zero value is none.
	IdentityBinding IdentityBinding
}

// IdentityBinding is how agents sign in through AKS identity bindings
// (docs/azure.md, "Identity bindings"): their token requests go to a token
// proxy that AKS runs for the cluster, with a service-account token for
// Audience, instead of to Entra ID, so that the one federated credential
// AKS keeps on an identity serves every cluster bound to it.
//
// Every field is the platform's (webhook flags). A pod only says whether
// its own agent uses the proxy (kvinject.io/identity-binding), never where
// the proxy is, what name it answers to or which CA it has, so no pod's
// author can send another pod's token anywhere.
type IdentityBinding struct {
	// Default is whether pods that do not set kvinject.io/identity-binding
	// use the proxy.
	Default bool
	// TokenProxy is the proxy's https URL (AZURE_KUBERNETES_TOKEN_PROXY);
	// "" when the cluster has none.
	TokenProxy string
	// SNIName is the TLS server name the agent sends the proxy
	// (AZURE_KUBERNETES_SNI_NAME); "" sends the URL's host.
	SNIName string
	// CAConfigMap names a ConfigMap in each pod's namespace whose key
	// IdentityBindingCAKey is the proxy's CA (AZURE_KUBERNETES_CA_FILE);
	// "" trusts the agent image's roots.
	CAConfigMap string
	// Audience is the projected token's audience in proxy mode.
	Audience string
}

// Defaults of the webhook's identity-binding flags: AKS's workload-identity
// webhook projects tokens for api://AKSIdentityBinding, and the cluster's
// CA, in every namespace as kube-root-ca.crt, signs the proxy's certificate
// when the proxy is the API server's address (kubernetes.default.svc).
const (
	IdentityBindingAudience    = "api://AKSIdentityBinding"
	IdentityBindingCAConfigMap = "kube-root-ca.crt"
	// IdentityBindingCAKey is the key of the CA ConfigMap that is read.
	IdentityBindingCAKey = "ca.crt"
	// IdentityBindingCAPath is where the CA lands in the token volume.
	IdentityBindingCAPath = "identity-binding-ca.crt"
)

// Names kvinject adds to a pod. They are fixed so that reinvocation and
// `kubectl describe` are predictable; a pod that already uses one is an error.
const (
	AgentContainer = "kvinject-agent"
	InitContainer  = "kvinject-init" // classic mode only
	// EnvCheckContainer proves that the node's kubelet reads env files
	// (config.EnvCheck); only in pods with environment variables.
	EnvCheckContainer = "kvinject-env-check"
	SecretsVolume     = "kvinject-secrets"
	TokenVolume       = "kvinject-token"
	CAVolume          = "kvinject-ca" // only with a CA ConfigMap
	// NoAPITokenVolume is an empty directory that kvinject's containers
	// mount at KubeAPITokenDir, so the API server's ServiceAccount admission
	// plugin, which skips a container that already has a mount there, gives
	// them no Kubernetes API token: the agent talks only to Entra and Key
	// Vault, and a token it cannot use is one it cannot leak.
	NoAPITokenVolume = "kvinject-no-api-token"
	// KubeAPITokenDir is where that plugin mounts the pod's API token.
	KubeAPITokenDir = "/var/run/secrets/kubernetes.io/serviceaccount"

	// MetricsPortName names the sidecar's metrics port (config.MetricsPort),
	// which the Helm chart's PodMonitor scrapes. An IANA service name: at
	// most 15 characters.
	MetricsPortName = "kvinject-agent"

	// AgentDir is where the agent mounts the secrets volume (config.Config.Dir).
	AgentDir = "/var/run/kvinject/secrets"
	// TokenDir holds the projected token, in the agent only. It differs from
	// the Azure workload-identity webhook's /var/run/secrets/azure/tokens so
	// both can coexist.
	TokenDir       = "/var/run/secrets/kvinject/tokens"
	TokenPath      = "azure-identity-token"
	TokenAudience  = "api://AzureADTokenExchange"
	TokenExpirySec = 3600
	// CADir holds the CA ConfigMap's files, in the agent only. The agent's
	// SSL_CERT_DIR names it: Go's crypto/x509 then loads every PEM file there
	// in addition to the image's bundle. It reads the ConfigMap volume's
	// "<key> -> ..data/<key>" links (they point into a subdirectory) and skips
	// the "..data" link and the timestamped directory behind it.
	CADir = "/var/run/kvinject/ca"

	// AgentUID and AgentGID are the agent's user and group (distroless nonroot).
	AgentUID = 65532
	AgentGID = 65532

	// Binary is the kvinject binary in the image (the webhook).
	Binary = "/kvinject"
	// AgentBinary is the agent's binary in the same image (cmd/kvinject-agent).
	AgentBinary = "/kvinject-agent"
)

// Annotations of the Azure workload-identity webhook that kvinject respects.
const (
	workloadIdentityUse            = "azure.workload.identity/use"
	workloadIdentitySkipContainers = "azure.workload.identity/skip-containers"
)

// Report is what Inject did to a pod, for the webhook's audit line and
// kvinject inject: it comes from the parsed annotations, so nobody reads the
// agent's configuration back out of the pod.
type Report struct {
	// Warnings are for the user (the admission response's warnings).
	Warnings []string
	// Mode is the agent Inject added: ModeInit, ModeSidecar or ModeClassic;
	// ModeReinvoked when the pod was injected before (only mounts were
	// added); "" when the pod is not opted in.
	Mode string
	// Vaults are the vault URLs the agent reads, distinct, in file order.
	Vaults []string
	// Objects are "<vault host>/<kind>/<name>[@<version>]", distinct, in
	// file order.
	Objects []string
	// ClientIDFrom and TenantIDFrom name where the workload identity came
	// from: the pod annotation, the ServiceAccount's, or a default.
	ClientIDFrom, TenantIDFrom string
	// IdentityBinding: the agent signs in through the AKS identity-binding
	// token proxy.
	IdentityBinding bool
	// Patch is the JSON Patch (RFC 6902) that turns the input pod into the
	// returned one, as the admission response carries it; nil when nothing
	// changed (see patch).
	Patch []byte
}

// Modes of Report.Mode.
const (
	ModeInit      = "init"
	ModeSidecar   = "sidecar"
	ModeClassic   = "classic"
	ModeReinvoked = "reinvoked"
)

// Inject returns a mutated copy of pod and a report of what it did (with the
// warnings for the user). pod is never modified. A pod without
// kvinject.io/inject: "true" is returned unchanged.
// sa may be nil when the pod's ServiceAccount is unknown (offline use).
//
// A pod that already carries kvinject.io/status: injected gets no second
// agent: only containers added since (by later webhooks) get the secrets
// mount (reinvoked), so Inject(Inject(p)) equals Inject(p).
//
// Errors are *InvalidError listing every problem at once; the report then
// carries the warnings only.
func Inject(pod *corev1.Pod, sa *corev1.ServiceAccount, d Defaults) (*corev1.Pod, Report, error) {
	if pod == nil {
		return nil, Report{}, fmt.Errorf("injector: nil pod")
	}
	out := pod.DeepCopy()
	v, set := out.Annotations[AnnotationInject]
	switch {
	case v == "true":
	case !set || v == "false":
		return out, Report{Warnings: ignoredWarnings(out)}, nil
	default:
		return nil, Report{}, &InvalidError{Problems: []Problem{{Field: AnnotationInject,
			Message: fmt.Sprintf("%q is not \"true\" or \"false\"; set \"true\" to inject", v)}}}
	}
	var p patch
	if out.Annotations[AnnotationStatus] == StatusInjected {
		reinvoked(out, d, &p)
		return out, Report{Mode: ModeReinvoked, Patch: p.bytes()}, nil
	}
	s, warnings, err := parseSpec(out, sa, d)
	if err != nil {
		return nil, Report{Warnings: warnings}, err
	}
	var ps problems
	if d.Image == "" {
		ps.add(DefaultsImage, "no agent image; set the webhook's --agent-image (or kvinject inject --agent-image)")
	}
	checkCollisions(out, s, &ps)
	checkServer(s, d.Server, &ps)
	if err := ps.err(); err != nil {
		return nil, Report{Warnings: warnings}, err
	}
	mutate(out, s, d, &p)
	setWarnings(out, warnings, &p)
	r := report(s, warnings)
	r.Patch = p.bytes()
	return out, r, nil
}

// report is the Report of an injection by s.
func report(s *spec, warnings []string) Report {
	r := Report{Warnings: warnings, Mode: ModeSidecar, ClientIDFrom: s.clientIDFrom, TenantIDFrom: s.tenantIDFrom,
		IdentityBinding: s.identityBinding}
	switch {
	case s.refresh == 0:
		r.Mode = ModeInit
	case s.sidecar == SidecarClassic:
		r.Mode = ModeClassic
	}
	for _, f := range s.files {
		o := f.Object
		if o == nil {
			continue
		}
		host := o.Vault
		if u, err := url.Parse(o.Vault); err == nil && u.Host != "" {
			host = u.Host
		}
		id := host + "/" + string(o.Kind) + "/" + o.Name
		if o.Version != "" {
			id += "@" + o.Version
		}
		if !slices.Contains(r.Vaults, o.Vault) {
			r.Vaults = append(r.Vaults, o.Vault)
		}
		if !slices.Contains(r.Objects, id) {
			r.Objects = append(r.Objects, id)
		}
	}
	return r
}

// maxWarningsAnnotation bounds AnnotationWarnings, so that a pod with many
// warnings stays under the API server's limit on all annotations (256 KiB).
const maxWarningsAnnotation = 4096

// setWarnings records an injected pod's warnings in AnnotationWarnings, one a
// line, for pods whose creator never sees the admission response (a
// ReplicaSet's). Warnings name annotations, objects and files, never a value.
func setWarnings(pod *corev1.Pod, warnings []string, p *patch) {
	var b strings.Builder
	for i, w := range warnings {
		// Whole warnings only, leaving room for the line that says how
		// many were left out.
		if b.Len()+1+len(w) > maxWarningsAnnotation-100 {
			fmt.Fprintf(&b, "\n… and %d more: run kvinject inject on the manifest to see them all", len(warnings)-i)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(w)
	}
	if b.Len() > 0 {
		setMember(p, "/metadata/annotations", &pod.Annotations, AnnotationWarnings, b.String())
	} else {
		removeMember(p, "/metadata/annotations", pod.Annotations, AnnotationWarnings)
	}
}

// reinvoked gives the secrets mount to the containers that mutating webhooks
// after kvinject added to an injected pod (the API server calls kvinject
// again for them: reinvocationPolicy IfNeeded), as Azure's workload-identity
// webhook does for its token.
//
//  1. Only a pod that carries kvinject's secrets volume is touched: the
//     status annotation alone does not make a pod kvinject's.
//  2. The mount path and the targeted containers are read from the
//     annotations and defaults exactly as on the first pass; if they no
//     longer parse, nothing changes (the first pass validated them).
//  3. Every targeted container other than kvinject's own that mounts
//     neither the secrets volume nor anything at the mount path gets the
//     mount, read-only, appended.
//  4. Nothing else changes, so a second reinvocation finds every mount in
//     place and changes nothing: reinvocation converges.
func reinvoked(pod *corev1.Pod, d Defaults, pt *patch) {
	if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == SecretsVolume }) {
		return
	}
	p := &parser{ann: pod.Annotations, pod: pod, d: d}
	s := &spec{mountPath: p.parseMountPath(), containers: p.parseContainers()}
	if len(p.problems) > 0 {
		return
	}
	mount := corev1.VolumeMount{Name: SecretsVolume, MountPath: s.mountPath, ReadOnly: true}
	for list, cs := range containerLists(pod) {
		for i := range cs {
			c := &cs[i]
			if c.Name == AgentContainer || c.Name == InitContainer || c.Name == EnvCheckContainer || !s.targets(c.Name) {
				continue
			}
			if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == SecretsVolume || m.MountPath == s.mountPath
			}) {
				appendTo(pt, containerPath(list, i)+"/volumeMounts", &c.VolumeMounts, mount)
			}
		}
	}
}

// containerLists yields a pod's init containers, then its containers, each
// with its field name in the pod's encoding.
func containerLists(pod *corev1.Pod) iter.Seq2[string, []corev1.Container] {
	return func(yield func(string, []corev1.Container) bool) {
		_ = yield("initContainers", pod.Spec.InitContainers) && yield("containers", pod.Spec.Containers)
	}
}

// ignoredWarnings tells a user who annotated a pod but did not opt in.
func ignoredWarnings(pod *corev1.Pod) []string {
	if pod.Annotations[AnnotationInject] == "false" {
		return nil
	}
	for k := range pod.Annotations {
		if strings.HasPrefix(k, Prefix) && k != AnnotationStatus {
			return []string{fmt.Sprintf("kvinject annotations are ignored without %s: \"true\"", AnnotationInject)}
		}
	}
	return nil
}

// checkCollisions finds names and paths the pod already uses that kvinject
// needs, and mounts that would reach kvinject's volumes once it adds them.
func checkCollisions(pod *corev1.Pod, s *spec, ps *problems) {
	if pod.Spec.OS != nil && pod.Spec.OS.Name != corev1.Linux {
		ps.add("spec.os.name", "kvinject's agent runs on Linux only, the pod asks for %s; remove %s", pod.Spec.OS.Name, AnnotationInject)
	}
	checkNodeOS(pod, ps)
	for _, v := range pod.Spec.Volumes {
		if v.Name == SecretsVolume || v.Name == TokenVolume || v.Name == CAVolume || v.Name == NoAPITokenVolume {
			ps.add("spec.volumes", "the pod already has a volume %q, which kvinject adds; rename it", v.Name)
		}
	}
	for _, c := range allContainers(pod) {
		if c.Name == AgentContainer || c.Name == InitContainer || c.Name == EnvCheckContainer {
			ps.add("spec.containers", "the pod already has a container %q, which kvinject adds; rename it", c.Name)
		}
		targeted := s.targets(c.Name)
		for _, e := range c.Env {
			if targeted && slices.ContainsFunc(s.env, func(v config.Env) bool { return v.Name == e.Name }) {
				ps.add(Prefix+EnvPrefix+e.Name, "container %q already sets environment variable %s; remove it from the container or remove the annotation", c.Name, e.Name)
			}
		}
		for _, m := range c.VolumeMounts {
			switch {
			case m.Name == TokenVolume:
				// The federated token signs in as the pod's identity: only
				// the agent gets it.
				ps.add("spec.containers", "container %q mounts %q, the agent's federated token, which no other container may read; remove that volumeMount", c.Name, m.Name)
			case m.Name == SecretsVolume && !targeted:
				ps.add("spec.containers", "container %q mounts %q but is not in %s; remove that volumeMount or list the container", c.Name, m.Name, AnnotationContainers)
			case m.Name == SecretsVolume && !m.ReadOnly:
				ps.add("spec.containers", "container %q mounts %q writable; only the agent writes it: set readOnly: true or remove that volumeMount", c.Name, m.Name)
			case targeted && m.MountPath == s.mountPath:
				ps.add(AnnotationMountPath, "container %q already mounts %q at %s; choose another %s", c.Name, m.Name, m.MountPath, AnnotationMountPath)
			}
		}
	}
}

// checkNodeOS denies a pod that targets Windows nodes through its node
// selector or required node affinity (spec.os.name is checked above).
func checkNodeOS(pod *corev1.Pod, ps *problems) {
	const label = "kubernetes.io/os"
	fix := "kvinject's agent runs on Linux only; run the pod on Linux nodes or remove " + AnnotationInject
	if v, ok := pod.Spec.NodeSelector[label]; ok && v != string(corev1.Linux) {
		ps.add("spec.nodeSelector", "%s: %s selects %s nodes; %s", label, v, v, fix)
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	// The terms are ORed: the pod can land on Linux if one term allows it.
	linux := len(terms) == 0
	for _, t := range terms {
		if termAllowsLinux(t, label) {
			linux = true
		}
	}
	if !linux {
		ps.add("spec.affinity.nodeAffinity", "its required node affinity on %s admits no linux node; %s", label, fix)
	}
}

// termAllowsLinux reports whether a node selector term can match a node
// labelled kubernetes.io/os=linux, as far as its expressions on that label say.
func termAllowsLinux(t corev1.NodeSelectorTerm, label string) bool {
	for _, e := range t.MatchExpressions {
		if e.Key != label {
			continue
		}
		in := slices.Contains(e.Values, string(corev1.Linux))
		switch e.Operator {
		case corev1.NodeSelectorOpIn:
			if !in {
				return false
			}
		case corev1.NodeSelectorOpNotIn:
			if in {
				return false
			}
		case corev1.NodeSelectorOpDoesNotExist:
			return false
		}
	}
	return true
}

func allContainers(pod *corev1.Pod) []corev1.Container {
	return slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers)
}

// audience is the audience of the agent's projected token: the proxy's in
// identity-binding mode, else Entra ID's token exchange audience.
func (s *spec) audience(d Defaults) string {
	if s.identityBinding {
		return d.IdentityBinding.Audience
	}
	return TokenAudience
}

// targets reports whether container name gets the secrets mount.
func (s *spec) targets(name string) bool {
	return s.containers == nil || slices.Contains(s.containers, name)
}

func mutate(pod *corev1.Pod, s *spec, d Defaults, p *patch) {
	cfg := config.Config{
		Version:        config.Version,
		Dir:            AgentDir,
		Refresh:        config.Duration(s.refresh),
		Cloud:          s.cloud,
		Namespace:      pod.Namespace,
		ServiceAccount: ServiceAccountName(pod),
		MetricsAddr:    s.metricsAddr,
		Files:          s.files,
		Env:            s.env,
		OnChange:       s.onChange,
	}
	if len(s.env) > 0 || s.onChange != "" {
		cfg.Version = config.VersionEnv
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		// config.Config holds only strings, numbers and slices of them.
		panic(fmt.Sprintf("injector: encode agent config: %v", err))
	}

	mount := corev1.VolumeMount{Name: SecretsVolume, MountPath: s.mountPath, ReadOnly: true}
	env := envVars(s.env)
	for list, cs := range containerLists(pod) {
		for i := range cs {
			if c := &cs[i]; s.targets(c.Name) {
				appendTo(p, containerPath(list, i)+"/volumeMounts", &c.VolumeMounts, mount)
				appendTo(p, containerPath(list, i)+"/env", &c.Env, env...)
			}
		}
	}

	agent := func(name, mode string) corev1.Container {
		return agentContainer(name, mode, string(cfgJSON), s, d)
	}
	const inits, containers = "/spec/initContainers", "/spec/containers"
	switch {
	case s.refresh == 0:
		insertAt(p, inits, &pod.Spec.InitContainers, 0, agent(AgentContainer, "init"))
	case s.sidecar == SidecarClassic:
		insertAt(p, inits, &pod.Spec.InitContainers, 0, agent(InitContainer, "init"))
		appendTo(p, containers, &pod.Spec.Containers, agent(AgentContainer, "sidecar"))
	default:
		c := agent(AgentContainer, "sidecar")
		always := corev1.ContainerRestartPolicyAlways
		c.RestartPolicy = &always
		if s.onChange == config.OnChangeRestart {
			c.RestartPolicyRules = []corev1.ContainerRestartRule{{
				Action: corev1.ContainerRestartRuleActionRestartAllContainers,
				ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{
					Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{config.RestartExitCode}},
			}}
		}
		c.StartupProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{AgentBinary, "probe"}}},
			// The first fetch may retry for minutes (Retry-After, a federated
			// credential still propagating); kubelet should wait, not restart.
			PeriodSeconds:    1,
			TimeoutSeconds:   5,
			FailureThreshold: 300,
		}
		insertAt(p, inits, &pod.Spec.InitContainers, 0, c)
	}
	if len(s.env) > 0 {
		// Right after the agent (and before every container that gets a
		// variable): the kubelet starts it once the first snapshot is there.
		insertAt(p, inits, &pod.Spec.InitContainers, 1, envCheckContainer(s, d))
	}

	size := d.VolumeSizeLimit
	if size.IsZero() {
		size = resource.MustParse(DefaultVolumeSizeLimit)
	}
	expiry := int64(TokenExpirySec)
	token := []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
		Audience: s.audience(d), ExpirationSeconds: &expiry, Path: TokenPath}}}
	if ib := d.IdentityBinding; s.identityBinding && ib.CAConfigMap != "" {
		// Next to the token, in the agent only; the kubelet keeps it
		// current and azidentity re-reads it when it changes. Not optional:
		// the pod waits until the ConfigMap exists.
		token = append(token, corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: ib.CAConfigMap},
			Items:                []corev1.KeyToPath{{Key: IdentityBindingCAKey, Path: IdentityBindingCAPath}},
		}})
	}
	appendTo(p, "/spec/volumes", &pod.Spec.Volumes,
		corev1.Volume{Name: SecretsVolume, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &size}}},
		corev1.Volume{Name: TokenVolume, VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: token}}},
		corev1.Volume{Name: NoAPITokenVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	)
	if s.caConfigMap != "" {
		appendTo(p, "/spec/volumes", &pod.Spec.Volumes, corev1.Volume{Name: CAVolume, VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: s.caConfigMap}}}})
	}

	setFileGroup(pod, p)
	// A projected service-account token is valid only in a pod that names its
	// ServiceAccount. The API server's ServiceAccount admission plugin names
	// "default" too, but not every API server runs it before validation.
	setString(p, "/spec/serviceAccountName", &pod.Spec.ServiceAccountName, ServiceAccountName(pod))

	setMember(p, "/metadata/annotations", &pod.Annotations, AnnotationStatus, StatusInjected)
	if pod.Labels[workloadIdentityUse] == "true" {
		// The Azure workload-identity webhook would otherwise add its own token
		// and AZURE_* variables to the agent, on top of ours.
		skip := pod.Annotations[workloadIdentitySkipContainers]
		for _, c := range []string{InitContainer, AgentContainer} {
			if !slices.Contains(strings.Split(skip, ";"), c) {
				skip = strings.TrimPrefix(skip+";"+c, ";")
			}
		}
		setMember(p, "/metadata/annotations", &pod.Annotations, workloadIdentitySkipContainers, skip)
	}
}

// envVars are the targeted containers' variables: each reads its key from
// the agent's env file when the kubelet starts the container, which is after
// the agent's first snapshot (the agent is the first init container, and a
// native sidecar's startup probe holds the app until it is ready). The value
// never enters the pod spec.
func envVars(env []config.Env) []corev1.EnvVar {
	out := make([]corev1.EnvVar, len(env))
	for i, e := range env {
		out[i] = corev1.EnvVar{Name: e.Name, ValueFrom: &corev1.EnvVarSource{
			FileKeyRef: &corev1.FileKeySelector{VolumeName: SecretsVolume, Path: config.EnvFile, Key: e.Name}}}
	}
	return out
}

// setFileGroup makes the agent's files readable by the app containers.
//
// The agent runs as 65532:65532 and writes files with mode 0440 by default,
// so readers need the files' group. With a pod fsGroup, kubelet makes the
// emptyDir setgid to that group, new files inherit it, and every container
// has it as a supplementary group: nothing to do. Without one, kvinject adds
// 65532 to the pod's supplementalGroups rather than setting an fsGroup,
// because an fsGroup would also change the ownership of every other volume
// of the pod (a recursive chown of a large PersistentVolume on each mount).
func setFileGroup(pod *corev1.Pod, p *patch) {
	sc := pod.Spec.SecurityContext
	switch {
	case sc == nil:
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroups: []int64{AgentGID}}
		p.add("/spec/securityContext", pod.Spec.SecurityContext)
	case sc.FSGroup == nil && !slices.Contains(sc.SupplementalGroups, AgentGID):
		appendTo(p, "/spec/securityContext/supplementalGroups", &sc.SupplementalGroups, AgentGID)
	}
}

func agentContainer(name, mode, cfgJSON string, s *spec, d Defaults) corev1.Container {
	var ports []corev1.ContainerPort
	if mode == "sidecar" && s.metricsAddr != "" {
		// Declared so that a PodMonitor finds it by name; a port without
		// hostPort is allowed under the restricted Pod Security Standard.
		ports = []corev1.ContainerPort{{Name: MetricsPortName, ContainerPort: config.MetricsPort, Protocol: corev1.ProtocolTCP}}
	}
	c := corev1.Container{
		Name:            name,
		Image:           d.Image,
		ImagePullPolicy: d.ImagePullPolicy,
		Command:         []string{AgentBinary},
		Args:            []string{mode},
		Ports:           ports,
		Env: []corev1.EnvVar{
			{Name: config.EnvVar, Value: cfgJSON},
			{Name: "AZURE_CLIENT_ID", Value: s.clientID},
			{Name: "AZURE_TENANT_ID", Value: s.tenantID},
			{Name: "AZURE_FEDERATED_TOKEN_FILE", Value: TokenDir + "/" + TokenPath},
			{Name: "AZURE_AUTHORITY_HOST", Value: s.cloud.AuthorityHost},
		},
		Resources: *s.resources.DeepCopy(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: SecretsVolume, MountPath: AgentDir},
			{Name: TokenVolume, MountPath: TokenDir, ReadOnly: true},
			noAPITokenMount(),
		},
		SecurityContext: agentSecurityContext(),
	}
	if ib := d.IdentityBinding; s.identityBinding {
		// The variables azidentity reads in proxy mode (agent/keyvault.New).
		c.Env = append(c.Env, corev1.EnvVar{Name: "AZURE_KUBERNETES_TOKEN_PROXY", Value: ib.TokenProxy})
		if ib.SNIName != "" {
			c.Env = append(c.Env, corev1.EnvVar{Name: "AZURE_KUBERNETES_SNI_NAME", Value: ib.SNIName})
		}
		if ib.CAConfigMap != "" {
			c.Env = append(c.Env, corev1.EnvVar{Name: "AZURE_KUBERNETES_CA_FILE", Value: TokenDir + "/" + IdentityBindingCAPath})
		}
	}
	if s.caConfigMap != "" {
		c.Env = append(c.Env, corev1.EnvVar{Name: "SSL_CERT_DIR", Value: CADir})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: CAVolume, MountPath: CADir, ReadOnly: true})
	}
	return c
}

// envCheckContainer fails the pod, before any app container starts, on a
// node whose kubelet does not read env files (config.EnvCheck).
func envCheckContainer(s *spec, d Defaults) corev1.Container {
	return corev1.Container{
		Name:            EnvCheckContainer,
		Image:           d.Image,
		ImagePullPolicy: d.ImagePullPolicy,
		Command:         []string{AgentBinary},
		Args:            []string{"env-check"},
		Env: []corev1.EnvVar{{Name: config.EnvCheck, ValueFrom: &corev1.EnvVarSource{
			FileKeyRef: &corev1.FileKeySelector{VolumeName: SecretsVolume, Path: config.EnvFile, Key: config.EnvCheck}}}},
		Resources:       *s.resources.DeepCopy(),
		VolumeMounts:    []corev1.VolumeMount{noAPITokenMount()},
		SecurityContext: agentSecurityContext(),
	}
}

// noAPITokenMount keeps the pod's Kubernetes API token out of kvinject's
// containers (NoAPITokenVolume).
func noAPITokenMount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: NoAPITokenVolume, MountPath: KubeAPITokenDir, ReadOnly: true}
}

func agentSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptrTo(true),
		RunAsUser:                ptrTo(int64(AgentUID)),
		RunAsGroup:               ptrTo(int64(AgentGID)),
		AllowPrivilegeEscalation: ptrTo(false),
		ReadOnlyRootFilesystem:   ptrTo(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func ptrTo[T any](v T) *T { return &v }
