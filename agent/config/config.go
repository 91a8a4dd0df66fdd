// Package config is the contract between the injector, which writes the agent's
// configuration into the agent container's environment, and the agent, which
// reads it. It is the only definition of that schema: both sides import it.
//
// Nothing here is secret: object names, vault URLs and file names are
// configuration, and values never pass through this type.
package config

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvVar is the environment variable that carries the JSON-encoded Config.
const EnvVar = "KVINJECT_CONFIG"

// Version is the schema version of Config that the injector writes and this
// agent reads. An agent refuses a config of another version (Load), because
// the agent image is resolved per node at pull time and may be of another
// release than the webhook that wrote the config. Bump it when an agent of
// the previous release would misread a config of the new one: a field whose
// meaning changes, or one it must not ignore. An optional field that an older
// agent may safely ignore needs no bump (encoding/json ignores unknown fields).
const Version = 1

// VersionEnv is the schema version of a config with Env or OnChange: an
// agent of the release before it would ignore Env and leave the env file
// unwritten (the app would fail to start on a missing env file instead of
// the agent saying why), or ignore OnChange and never restart. The injector
// writes it only for pods that use either, so every other pod still runs
// with an agent of either release.
const VersionEnv = 2

// SupportedVersions are the schema versions Load accepts. A config without
// a version is version 1, the schema before the field existed.
var SupportedVersions = []int{1, 2}

// EnvFile is the name of the env file in Dir that the agent writes, in the
// kubelet's env-file format, when Config.Env is set: the app containers'
// env[].valueFrom.fileKeyRef entries point at it. The injector refuses a
// user file of this name.
const EnvFile = "kvinject.env"

// EnvCheck is a variable the agent writes first into EnvFile, always with
// EnvCheckValue (not a secret). The injector gives it to a check container
// (kvinject-agent env-check) that runs after the agent's first snapshot and
// before any app container: a kubelet that does not read env files (before
// 1.35, or EnvFiles off) sets it to "" without a word, as it would the app's
// variables, and the check fails the pod instead of letting the app start
// with empty values. It proves the feature on the node that runs the pod.
const (
	EnvCheck      = "KVINJECT_ENV_CHECK"
	EnvCheckValue = "read-by-kubelet"
)

// MetricsPort is the port of a sidecar agent's Prometheus metrics, on every
// address of the pod (DefaultMetricsAddr) so that Prometheus can scrape the
// pod IP: each pod has its own network namespace, so many pods on one node
// do not collide. An uncommon port avoids the application's own ports.
const MetricsPort = 9797

// DefaultMetricsAddr is the listen address of a sidecar's metrics.
const DefaultMetricsAddr = ":9797"

// Kind is the kind of Key Vault object a file is rendered from.
type Kind string

const (
	// KindSecret is a secret's value, as text or decoded per Encoding.
	KindSecret Kind = "secret"
	// KindCert is a certificate read through its backing secret: the private key
	// and the whole chain (leaf first) as PEM, or the PKCS#12 bytes.
	KindCert Kind = "cert"
	// KindKey is the public half of a Key Vault key as a PKIX PEM block.
	KindKey Kind = "key"
	// KindPublicCert is a certificate's public X.509 certificate as one PEM
	// block, read with the certificate API (certificate read only, no
	// secret): what Key Vault returns as the certificate's cer.
	KindPublicCert Kind = "public-cert"
)

// Encoding of a secret's value as stored in Key Vault; the file gets the decoded bytes.
const (
	EncodingNone   = ""
	EncodingBase64 = "base64"
	EncodingHex    = "hex"
)

// Format of a cert file.
const (
	FormatPEM = "pem"
	FormatPFX = "pfx"
)

// Config is everything the agent needs to know besides its identity, which
// comes from the standard AZURE_* environment variables of workload identity.
type Config struct {
	// Version is the schema version, Version when the injector writes it.
	Version int `json:"version"`
	// Dir is the directory the agent owns and writes snapshots into: the shared
	// in-memory volume as mounted in the agent container.
	Dir string `json:"dir"`
	// Refresh is the interval between fetch cycles in sidecar mode; zero means
	// the pod asked for a single fetch at start.
	Refresh Duration `json:"refresh,omitempty"`
	// Cloud selects the Entra authority and Key Vault endpoints.
	Cloud Cloud `json:"cloud"`
	// Namespace and ServiceAccount identify the workload, so failure messages can
	// name the federated-credential subject system:serviceaccount:<ns>:<sa>.
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// MetricsAddr is the sidecar's metrics listener (DefaultMetricsAddr);
	// empty disables it.
	MetricsAddr string `json:"metricsAddr,omitempty"`
	// Files are written in one atomic snapshot per cycle. Order is the order of
	// the annotations after sorting by file name, so the config is deterministic.
	Files []File `json:"files"`
	// Env are the app containers' environment variables that the agent
	// writes into EnvFile in the same snapshot as Files, sorted by Name.
	Env []Env `json:"env,omitempty"`
	// OnChange is what a sidecar does after a refresh published a new
	// snapshot: "" nothing (the files change in place), OnChangeRestart, or
	// a hook URL on the pod's loopback (CheckHook) that it POSTs to.
	OnChange string `json:"onChange,omitempty"`
}

// OnChangeRestart makes a sidecar exit with RestartExitCode after a refresh
// published a new snapshot; the injector gives the native sidecar a
// restartPolicyRules entry matching that code with RestartAllContainers, so
// the kubelet restarts every container of the pod in place and the apps
// start again with the new variables and files.
const OnChangeRestart = "restart"

// CheckHook reports whether u can be an on-change hook: an http URL on the
// pod's own loopback (127.0.0.1 or [::1]) with an explicit port, so the
// agent never sends anything out of the pod.
func CheckHook(u string) error {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Errorf("hook %q is not a URL: %w", u, err)
	case p.Scheme != "http" || p.User != nil || p.RawQuery != "" || p.Fragment != "":
		return fmt.Errorf("hook %q: want http://127.0.0.1:<port>/<path> (http, no user, query or fragment)", u)
	case p.Hostname() != "127.0.0.1" && p.Hostname() != "::1":
		return fmt.Errorf("hook %q: the host must be 127.0.0.1 or [::1], the pod's own loopback", u)
	}
	if n, err := strconv.Atoi(p.Port()); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("hook %q: needs a port, 1 to 65535", u)
	}
	return nil
}

// RestartExitCode is the sidecar's exit code that asks for the restart: an
// uncommon code, so no crash of the agent (1, 2, 137 for a kill) matches it.
const RestartExitCode = 117

// Env is one environment variable whose value is the content of a file.
type Env struct {
	// Name is the variable's name, valid for the API server.
	Name string `json:"name"`
	// File is the Name of one of Config.Files.
	File string `json:"file"`
}

// Object identifies one Key Vault object. Two files that name the same Object
// share one GET per cycle.
type Object struct {
	// Vault is the vault's base URL, e.g. https://myvault.vault.azure.net/.
	Vault string `json:"vault"`
	Kind  Kind   `json:"kind"`
	Name  string `json:"name"`
	// Version pins a version; empty means the latest.
	Version string `json:"version,omitempty"`
}

// File is one file in the snapshot. Exactly one of Object and Template is set.
type File struct {
	// Name is the file name relative to Dir: one path element, never "..".
	Name string `json:"name"`
	// Mode is the file's permission bits, e.g. 0o440.
	Mode FileMode `json:"mode"`
	// Object is the source of an object file.
	Object *Object `json:"object,omitempty"`
	// Encoding decodes a secret's value (EncodingBase64, EncodingHex) before it is written.
	Encoding string `json:"encoding,omitempty"`
	// Format is FormatPEM (default) or FormatPFX for KindCert. For
	// KindSecret, FormatPEM writes a certificate's backing secret as PEM
	// (private key, then the chain leaf first), as the Secrets Store CSI
	// Azure provider does; other secrets are written as they are.
	Format string `json:"format,omitempty"`
	// Template is a Go text/template. It refers to other files' objects by the
	// other file's Name, and is rendered after every object of the cycle is fetched.
	Template string `json:"template,omitempty"`
}

// Cloud selects the endpoints of one Azure cloud.
type Cloud struct {
	// Name is one of the known clouds (AzurePublicCloud, AzureChinaCloud,
	// AzureUSGovernmentCloud) or "Custom".
	Name string `json:"name"`
	// AuthorityHost is the Entra ID origin, e.g. https://login.microsoftonline.com/.
	AuthorityHost string `json:"authorityHost"`
	// VaultSuffix is the DNS suffix of vault names, e.g. vault.azure.net.
	VaultSuffix string `json:"vaultSuffix"`
	// DisableInstanceDiscovery skips Entra's instance discovery, which always
	// calls the public cloud's host; needed for private and disconnected clouds.
	DisableInstanceDiscovery bool `json:"disableInstanceDiscovery,omitempty"`
	// DisableChallengeResourceVerification accepts a Key Vault challenge whose
	// resource does not match the vault's host, as in private clouds.
	DisableChallengeResourceVerification bool `json:"disableChallengeResourceVerification,omitempty"`
}

// CustomCloud is the Name of a cloud whose endpoints are given explicitly.
const CustomCloud = "Custom"

// KnownCloud returns the endpoints of a named Azure cloud.
func KnownCloud(name string) (Cloud, bool) {
	switch name {
	case "AzurePublicCloud", "":
		return Cloud{Name: "AzurePublicCloud", AuthorityHost: "https://login.microsoftonline.com/", VaultSuffix: "vault.azure.net"}, true
	case "AzureChinaCloud":
		return Cloud{Name: name, AuthorityHost: "https://login.chinacloudapi.cn/", VaultSuffix: "vault.azure.cn"}, true
	case "AzureUSGovernmentCloud":
		return Cloud{Name: name, AuthorityHost: "https://login.microsoftonline.us/", VaultSuffix: "vault.usgovcloudapi.net"}, true
	}
	return Cloud{}, false
}

// KnownCloudNames lists the names KnownCloud accepts, for help and error texts.
func KnownCloudNames() []string {
	return []string{"AzurePublicCloud", "AzureChinaCloud", "AzureUSGovernmentCloud"}
}

// FileMode is a file's permission bits. It encodes as an octal string
// ("0440"), the way people read and write modes in a pod spec they audit, and
// decodes from that or from a JSON number.
type FileMode os.FileMode

// MarshalJSON encodes m as an octal string.
func (m FileMode) MarshalJSON() ([]byte, error) {
	return json.Marshal(fmt.Sprintf("%#o", uint32(m)))
}

// UnmarshalJSON decodes an octal string or a number.
func (m *FileMode) UnmarshalJSON(b []byte) error {
	var n uint32
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := strconv.ParseUint(s, 8, 32)
		if err != nil {
			return fmt.Errorf("file mode %q must be octal, like \"0440\"", s)
		}
		n = uint32(v)
	} else if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("file mode must be an octal string like \"0440\": %w", err)
	}
	*m = FileMode(n)
	return nil
}

// Duration is a time.Duration that encodes as a Go duration string ("2m0s").
type Duration time.Duration

// MarshalJSON encodes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON decodes a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"2m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Load decodes a Config from its JSON form and checks what the agent relies on.
func Load(data []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("decode %s: %w", EnvVar, err)
	}
	if c.Version == 0 {
		c.Version = 1
	}
	if !slices.Contains(SupportedVersions, c.Version) {
		return nil, &VersionError{Got: c.Version}
	}
	if c.Dir == "" {
		return nil, fmt.Errorf("%s: dir is empty", EnvVar)
	}
	for i, f := range c.Files {
		if (f.Object == nil) == (f.Template == "") {
			return nil, fmt.Errorf("%s: files[%d] %q: exactly one of object and template must be set", EnvVar, i, f.Name)
		}
	}
	if c.OnChange != "" && c.OnChange != OnChangeRestart {
		if err := CheckHook(c.OnChange); err != nil {
			return nil, fmt.Errorf("%s: onChange: %w", EnvVar, err)
		}
	}
	for i, e := range c.Env {
		if !slices.ContainsFunc(c.Files, func(f File) bool { return f.Name == e.File }) {
			return nil, fmt.Errorf("%s: env[%d] %q: file %q is not one of files", EnvVar, i, e.Name, e.File)
		}
	}
	return &c, nil
}

// VersionError is a config of a schema version this agent does not read.
type VersionError struct{ Got int }

func (e *VersionError) Error() string {
	supported := make([]string, len(SupportedVersions))
	for i, v := range SupportedVersions {
		supported[i] = strconv.Itoa(v)
	}
	return fmt.Sprintf("%s has schema version %d, this agent supports version %s: the webhook that wrote it is of another kvinject release than this agent image.\n"+
		"  Fix: run an agent image of the same release as the webhook: pin the webhook's --agent-image (KVINJECT_AGENT_IMAGE; the chart's image.tag or image.digest) to its own release by tag or digest instead of a moving tag such as latest, then recreate the pod",
		EnvVar, e.Got, strings.Join(supported, ", "))
}
