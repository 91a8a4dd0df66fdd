package grants

import (
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/kvinject/kvinject/injector"
)

// Explanation is what one workload gets and needs, for kvinject explain.
type Explanation struct {
	Workload       string       `json:"workload"`
	Kind           string       `json:"kind"`
	Namespace      string       `json:"namespace"`
	Name           string       `json:"name"`
	ServiceAccount string       `json:"serviceAccount"`
	Identity       IdentitySpec `json:"identity"`
	Subject        string       `json:"federatedCredentialSubject"`
	Audience       string       `json:"audience"`
	// IdentityBinding: the agent signs in through the cluster's AKS
	// identity-binding token proxy; Subject is then what the proxy
	// authorizes, and no federated credential of the cluster's is needed.
	IdentityBinding bool   `json:"identityBinding,omitempty"`
	MountPath       string `json:"mountPath"`
	// Containers get the mount; null is every container.
	Containers []string      `json:"containers"`
	Refresh    string        `json:"refresh"`
	Vaults     []string      `json:"vaults"`
	Files      []FileSummary `json:"files"`
	Warnings   []string      `json:"warnings,omitempty"`
}

// IdentitySpec is the identity the agent signs in as and where each part
// came from.
type IdentitySpec struct {
	ClientID     string `json:"clientId"`
	ClientIDFrom string `json:"clientIdFrom"`
	TenantID     string `json:"tenantId"`
	TenantIDFrom string `json:"tenantIdFrom"`
}

// FileSummary is one file and, for an object file, what reading it needs.
type FileSummary struct {
	File string `json:"file"`
	// Path is where the app containers see it.
	Path     string `json:"path"`
	Mode     string `json:"mode"`
	Kind     string `json:"kind"`
	Vault    string `json:"vault,omitempty"`
	Object   string `json:"object,omitempty"`
	Version  string `json:"version,omitempty"`
	Template bool   `json:"template,omitempty"`
	Need     *Need  `json:"need,omitempty"`
	Scope    string `json:"scope,omitempty"`
}

// Explain summarises each workload; o places its objects (subscription and
// resource groups; placeholders where not given).
func Explain(ws []Workload, o Options) []Explanation {
	var out []Explanation
	for _, w := range ws {
		p := w.Plan
		e := Explanation{Workload: w.String(), Kind: w.Kind, Namespace: w.Namespace, Name: w.Name,
			ServiceAccount: p.ServiceAccount,
			Identity: IdentitySpec{ClientID: p.ClientID, ClientIDFrom: source(p.ClientIDFrom),
				TenantID: p.TenantID, TenantIDFrom: source(p.TenantIDFrom)},
			Subject: Subject(p.Namespace, p.ServiceAccount), Audience: p.Audience, IdentityBinding: p.IdentityBinding,
			MountPath: p.MountPath, Containers: p.Containers, Refresh: "once, at start",
			Vaults: []string{}, Files: []FileSummary{}, Warnings: w.Warnings}
		if p.Refresh > 0 {
			e.Refresh = fmt.Sprintf("every %s (%s sidecar)", p.Refresh, p.Sidecar)
		}
		for _, f := range p.Files {
			fs := FileSummary{File: f.Name, Path: path.Join(p.MountPath, f.Name), Mode: fmt.Sprintf("%04o", uint32(f.Mode))}
			if f.Object == nil {
				fs.Kind, fs.Template = "template", true
			} else {
				need := NeedOf(f.Object)
				fs.Kind, fs.Vault, fs.Object, fs.Version = string(f.Object.Kind), f.Object.Vault, f.Object.Name, f.Object.Version
				fs.Need, fs.Scope = &need, o.ObjectScope(f.Object)
				if !contains(e.Vaults, f.Object.Vault) {
					e.Vaults = append(e.Vaults, f.Object.Vault)
					if m := hostWarning(f.Object.Vault, p.Cloud); m != "" {
						e.Warnings = append(e.Warnings, m)
					}
				}
			}
			e.Files = append(e.Files, fs)
		}
		out = append(out, e)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// source words where an identity part came from for a reader.
func source(field string) string {
	switch field {
	case injector.DefaultsClientID:
		return "webhook default (--client-id)"
	case injector.DefaultsTenantID:
		return "webhook default (--tenant-id)"
	case injector.AnnotationClientID, injector.AnnotationTenantID:
		return "pod annotation " + field
	}
	return field // ServiceAccount <ns>/<name> annotation <key>
}

// WriteJSON writes the explanations as one indented JSON array.
func WriteJSON(w io.Writer, es []Explanation) error {
	if es == nil {
		es = []Explanation{}
	}
	b, err := json.MarshalIndent(es, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteText writes the explanations for people.
func WriteText(w io.Writer, es []Explanation) error {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s\n", e.Workload)
		fmt.Fprintf(&b, "  identity:  client %s (%s)\n", e.Identity.ClientID, e.Identity.ClientIDFrom)
		fmt.Fprintf(&b, "             tenant %s (%s)\n", e.Identity.TenantID, e.Identity.TenantIDFrom)
		if e.IdentityBinding {
			fmt.Fprintf(&b, "  identity binding: %s signs in through the AKS token proxy (audience %s), no federated credential;\n", e.Subject, e.Audience)
			fmt.Fprintf(&b, "             needs an identity binding of the identity to each cluster and a ClusterRole with verb\n")
			fmt.Fprintf(&b, "             use-managed-identity on cid.wi.aks.azure.com/%s bound to ServiceAccount %s/%s\n", e.Identity.ClientID, e.Namespace, e.ServiceAccount)
		} else {
			fmt.Fprintf(&b, "  federated credential subject: %s (audience %s)\n", e.Subject, e.Audience)
		}
		containers := "every container"
		if e.Containers != nil {
			containers = "containers " + strings.Join(e.Containers, ", ")
		}
		fmt.Fprintf(&b, "  files:     %s in %s, fetched %s\n", e.MountPath, containers, e.Refresh)
		fmt.Fprintf(&b, "  vaults:    %s\n", strings.Join(e.Vaults, ", "))
		for _, f := range e.Files {
			if f.Template {
				fmt.Fprintf(&b, "  - %s (%s): template over the other files; needs no grant of its own\n", f.Path, f.Mode)
				continue
			}
			obj := f.Object
			if f.Version != "" {
				obj += "@" + f.Version
			}
			fmt.Fprintf(&b, "  - %s (%s): %s %s in %s\n", f.Path, f.Mode, f.Kind, obj, VaultName(f.Vault))
			fmt.Fprintf(&b, "      %s needs %s: role %q on\n", f.Need.Call, f.Need.DataAction, f.Need.Role.Name)
			fmt.Fprintf(&b, "      %s\n", f.Scope)
		}
		for _, m := range e.Warnings {
			fmt.Fprintf(&b, "  warning: %s\n", m)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
