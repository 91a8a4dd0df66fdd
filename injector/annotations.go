package injector

import (
	"sort"
	"strconv"
	"strings"

	"github.com/kvinject/kvinject/agent/config"
)

// Prefix is the prefix of every kvinject annotation.
const Prefix = "kvinject.io/"

// Annotation keys with a fixed name.
const (
	AnnotationInject      = Prefix + "inject"
	AnnotationVault       = Prefix + "vault"
	AnnotationObjects     = Prefix + "objects"
	AnnotationRefresh     = Prefix + "refresh"
	AnnotationSidecar     = Prefix + "sidecar"
	AnnotationMountPath   = Prefix + "mount-path"
	AnnotationContainers  = Prefix + "containers"
	AnnotationClientID    = Prefix + "client-id"
	AnnotationTenantID    = Prefix + "tenant-id"
	AnnotationCloud       = Prefix + "cloud"
	AnnotationCAConfigMap = Prefix + "ca-configmap"
	// AnnotationIdentityBinding: sign in through AKS identity bindings.
	AnnotationIdentityBinding = Prefix + "identity-binding"
	AnnotationFileMode        = Prefix + "file-mode"
	AnnotationCPURequest      = Prefix + "cpu-request"
	AnnotationMemoryRequest   = Prefix + "memory-request"
	AnnotationCPULimit        = Prefix + "cpu-limit"
	AnnotationMemoryLimit     = Prefix + "memory-limit"
	AnnotationMetrics         = Prefix + "metrics"
	AnnotationOnChange        = Prefix + "on-change"
	AnnotationStatus          = Prefix + "status"
	AnnotationWarnings        = Prefix + "warnings"
)

// StatusInjected is the value of AnnotationStatus on an injected pod.
const StatusInjected = "injected"

// Prefixes of the per-file annotations: Prefix + FileSecret + "<file>".
const (
	FileSecret = "secret-"
	FileCert   = "cert-"
	FileKey    = "key-"
	// FilePublicCert is a certificate's public certificate only.
	FilePublicCert = "public-cert-"
	FileTemplate   = "template-"
)

// EnvPrefix is the prefix of the per-variable annotations: Prefix + EnvPrefix + "<NAME>".
const EnvPrefix = "env-"

// Annotation describes one kvinject annotation. The table Annotations is the
// single source for the parser, the validation messages, the "did you mean"
// suggestions and the generated reference (README.md, docs/annotations.md).
type Annotation struct {
	// Name follows Prefix. Per-file annotations end in "<file>".
	Name string
	// Type is what the value is, for the reference.
	Type string
	// Default is what applies when the annotation is absent.
	Default string
	// Help is one sentence or two of Markdown.
	Help string
	// Example is a value, as it would appear in YAML.
	Example string
}

// Key is the annotation's full key, e.g. kvinject.io/refresh.
func (a Annotation) Key() string { return Prefix + a.Name }

// perFile reports whether the annotation is a "<file>" family and returns the
// part before "<file>".
func (a Annotation) perFile() (string, bool) {
	return strings.CutSuffix(a.Name, "<file>")
}

// family reports whether the annotation is a family whose key ends in a
// name of the user's ("<file>" or "<NAME>") and returns the part before it.
func (a Annotation) family() (string, bool) {
	if p, ok := a.perFile(); ok {
		return p, true
	}
	return strings.CutSuffix(a.Name, "<NAME>")
}

// Annotations is every annotation kvinject reads or writes, in reference order.
var Annotations = []Annotation{
	{Name: "inject", Type: "`\"true\"` or `\"false\"`", Default: "`\"false\"`",
		Help:    "Opt in. Only pods with `\"true\"` are changed; every other kvinject annotation is ignored without it. Any value but `\"true\"` or `\"false\"` (`\"True\"`, `\"yes\"`) is denied.",
		Example: `"true"`},
	{Name: "vault", Type: "vault name or `https://` URL", Default: "webhook `--vault`",
		Help:    "Default vault for objects that do not name their own. A name becomes `https://<name>.<cloud vault suffix>/`.",
		Example: "myvault"},
	{Name: FileSecret + "<file>", Type: "object reference", Default: "–",
		Help:    "Write a secret's value to `<file>`. Reference: `name`, `name@version`, `vault/name[@version]` or `https://<vault host>/secrets/name[/version]`.",
		Example: "db-password"},
	{Name: FileCert + "<file>", Type: "object reference", Default: "–",
		Help:    "Write a certificate's private key and full chain (leaf first) as PEM to `<file>`, read through the certificate's backing secret (needs *Get secret*). URLs may use `/certificates/` or `/secrets/`.",
		Example: "myvault/tls-cert"},
	{Name: FilePublicCert + "<file>", Type: "object reference", Default: "–",
		Help:    "Write a certificate's public X.509 certificate (the leaf, as Key Vault's certificate API returns it; no private key, no chain) as PEM to `<file>`, read with the certificate API: needs only certificate read (role `Key Vault Reader` at scope `<vault-id>/certificates/<name>`), no secret. URLs use `/certificates/`.",
		Example: "myvault/ca-cert"},
	{Name: FileKey + "<file>", Type: "object reference", Default: "–",
		Help:    "Write the public half of a Key Vault key as a PEM `PUBLIC KEY` to `<file>`. URLs use `/keys/`.",
		Example: "signing-key"},
	{Name: FileTemplate + "<file>", Type: "Go `text/template`", Default: "–",
		Help:    "Render `<file>` from the other files' objects, named by their file: `{{ secret \"db-password\" }}`. Functions: " + funcList() + ".",
		Example: `"Server=db;Password={{ secret \"db-password\" }}"`},
	{Name: EnvPrefix + "<NAME>", Type: "file name", Default: "–",
		Help:    "Set environment variable `<NAME>` of the targeted containers to the content of `<file>`, one of the pod's files (an object or a template). The agent writes every variable into `" + config.EnvFile + "` in the same snapshot as the files, and the kubelet reads it when it starts each container (`env[].valueFrom.fileKeyRef`, Kubernetes 1.35+ with `EnvFiles` on: the webhook denies the pod on an API server without it, and the `kvinject-env-check` init container fails it on a kubelet without it). A value with a `'`, an empty one, or one over 64 KiB cannot be carried: the agent stops with an error naming the variable. Values are read at container start only (see *Environment variables* in docs/annotations.md).",
		Example: "db-password"},
	{Name: "objects", Type: "YAML list", Default: "–",
		Help:    "Objects in the Secrets Store CSI Azure provider's shape (`objectName`, `objectType`, `objectVersion`, `objectAlias`, `objectFormat`, `objectEncoding`, `filePermission`, plus `vault`), either a plain list or the provider's `array:` of strings, so a SecretProviderClass migrates by copy-paste.",
		Example: "- {objectName: db-password, objectType: secret}"},
	{Name: "refresh", Type: "Go duration", Default: "webhook `--refresh` (once)",
		Help:    "Fetch again on this interval with a sidecar agent. Empty or `0` fetches once at start with an init container.",
		Example: "2m"},
	{Name: "sidecar", Type: "`native` or `classic`", Default: "webhook `--sidecar` (`native`)",
		Help:    "How a refreshing agent runs: `native` is an init container with `restartPolicy: Always` (Jobs complete); `classic` is an init container plus a regular container.",
		Example: "native"},
	{Name: "on-change", Type: "`none`, `restart` or `http://127.0.0.1:<port>/<path>`", Default: "`none`",
		Help:    "What a refreshing native sidecar does when a refresh publishes new content. `none`: files change in place, variables keep the values of the container's start. `restart`: the agent exits with code " + strconv.Itoa(config.RestartExitCode) + " and the kubelet restarts every container of the pod in place (`restartPolicyRules` `RestartAllContainers`, Kubernetes 1.36+: the webhook denies the pod on an API server without it): same pod, IP and volume; apps start again with the new files and variables. Replicas restart at their own refresh, spread over one interval. No preStop hooks, a 2 s grace period (see *Restart on change* in docs/annotations.md). A hook URL on the pod's loopback: the agent POSTs to it after each new snapshot (3 tries, 5 s each), for apps that can reload.",
		Example: "restart"},
	{Name: "metrics", Type: "`\"true\"` or `\"false\"`", Default: "webhook `--agent-metrics` (`true`) for a sidecar",
		Help:    "A refreshing agent serves Prometheus metrics on the pod IP, port " + strconv.Itoa(config.MetricsPort) + ", named `" + MetricsPortName + "` (counts, durations, times and certificate expiry by file name; never a value). `\"false\"` turns them off. Off by itself for a `hostNetwork` pod or one that declares the port or name; an init-only agent has none.",
		Example: `"false"`},
	{Name: "mount-path", Type: "absolute path", Default: "webhook `--mount-path` (`/mnt/secrets`)",
		Help:    "Where app containers see the files (read-only). Not `/` and not in `/proc`, `/sys`, `/dev`, `/etc` or `/var/run/secrets/kubernetes.io`.",
		Example: "/srv/app/secrets"},
	{Name: "containers", Type: "comma-separated container names", Default: "all containers",
		Help:    "Only these containers (regular or init) get the mount. The agent is never listed.",
		Example: "app,migrate"},
	{Name: "client-id", Type: "GUID", Default: "ServiceAccount `azure.workload.identity/client-id`, then webhook `--client-id`",
		Help:    "Client ID of the Entra application or managed identity the agent signs in as.",
		Example: "00000000-0000-0000-0000-000000000000"},
	{Name: "tenant-id", Type: "GUID or domain", Default: "ServiceAccount `azure.workload.identity/tenant-id`, then webhook `--tenant-id`",
		Help:    "Entra tenant of that identity.",
		Example: "11111111-1111-1111-1111-111111111111"},
	{Name: "cloud", Type: "cloud name", Default: "webhook `--cloud` (`AzurePublicCloud`)",
		Help:    "One of " + cloudList() + "; sets the sign-in authority and the vault DNS suffix.",
		Example: "AzureUSGovernmentCloud"},
	{Name: "identity-binding", Type: "`\"true\"` or `\"false\"`", Default: "webhook `--identity-binding` (`false`)",
		Help:    "Sign in through the cluster's AKS identity-binding token proxy instead of at Entra ID: one federated credential on the identity, kept by AKS, serves every cluster bound to it, past Entra's 20 per identity. The proxy's URL, server name and CA are the webhook's (`--identity-binding-token-proxy`, `--identity-binding-sni-name`, `--identity-binding-ca-configmap`); the pod's ServiceAccount needs a ClusterRoleBinding to `use-managed-identity` on its client ID (see *Identity bindings* in docs/azure.md).",
		Example: `"true"`},
	{Name: "ca-configmap", Type: "ConfigMap name", Default: "webhook `--ca-configmap` (none)",
		Help:    "A ConfigMap in the pod's namespace whose PEM certificates the agent trusts besides its image's CA bundle (a TLS-inspecting proxy, a private cloud). Mounted read-only into the agent only; the pod waits until it exists.",
		Example: "corp-root-ca"},
	{Name: "file-mode", Type: "octal mode", Default: "webhook `--file-mode` (`0440`)",
		Help:    "Permission bits of every file unless an object sets `filePermission`. App containers read the files through their group (see *File ownership* in docs/annotations.md).",
		Example: `"0440"`},
	{Name: "cpu-request", Type: "quantity", Default: "webhook `--agent-cpu-request` (`" + defaultCPURequest + "`)",
		Help: "Agent CPU request.", Example: "20m"},
	{Name: "memory-request", Type: "quantity", Default: "webhook `--agent-memory-request` (`" + defaultMemoryRequest + "`)",
		Help: "Agent memory request.", Example: "32Mi"},
	{Name: "cpu-limit", Type: "quantity", Default: "webhook `--agent-cpu-limit` (`" + defaultCPULimit + "`)",
		Help: "Agent CPU limit.", Example: "200m"},
	{Name: "memory-limit", Type: "quantity", Default: "webhook `--agent-memory-limit` (`" + defaultMemoryLimit + "`)",
		Help: "Agent memory limit.", Example: "128Mi"},
	{Name: "status", Type: "`injected`", Default: "–",
		Help:    "Written by kvinject on an injected pod; a pod that has it is left alone, so injecting twice changes nothing. Do not set it yourself.",
		Example: "injected"},
	{Name: "warnings", Type: "text, one warning a line", Default: "–",
		Help:    "Written by kvinject on an injected pod that drew admission warnings, so they are not lost for pods a controller creates: `kubectl get pod <pod> -o jsonpath='{.metadata.annotations.kvinject\\.io/warnings}'`. Any value you set is replaced.",
		Example: "kvinject.io/refresh: 10s is shorter than 30s; many pods polling often can be throttled by Key Vault"},
}

// lookup finds the table entry for an annotation key with Prefix, and the
// file name for per-file annotations.
func lookup(key string) (a Annotation, file string, ok bool) {
	name, ok := strings.CutPrefix(key, Prefix)
	if !ok {
		return Annotation{}, "", false
	}
	for _, a := range Annotations {
		if p, isFamily := a.family(); isFamily {
			if f, ok := strings.CutPrefix(name, p); ok {
				return a, f, true
			}
		} else if a.Name == name {
			return a, "", true
		}
	}
	return Annotation{}, "", false
}

// suggest returns the known annotation key closest to an unknown one, or "".
func suggest(key string) string {
	name := strings.TrimPrefix(key, Prefix)
	best, bestDist := "", 4
	for _, a := range Annotations {
		if p, isFamily := a.family(); isFamily {
			// Compare the family prefix and keep the user's file name:
			// "secrets-db" suggests "secret-db".
			if i := strings.IndexAny(name, "-_."); i > 0 && i < len(name)-1 {
				if d := distance(name[:i+1], p); d < bestDist {
					best, bestDist = Prefix+p+name[i+1:], d
				}
			}
			continue
		}
		if d := distance(name, a.Name); d < bestDist {
			best, bestDist = a.Key(), d
		}
	}
	if bestDist > len(name)/2 {
		return ""
	}
	return best
}

// distance is the Levenshtein distance of a and b, ignoring case.
func distance(a, b string) int {
	a, b = strings.ToLower(a), strings.ToLower(b)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func funcList() string {
	names := append([]string(nil), templateFuncNames()...)
	sort.Strings(names)
	return "`" + strings.Join(names, "`, `") + "`"
}
