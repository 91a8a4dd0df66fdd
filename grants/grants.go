package grants

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

// Role is an Azure built-in role.
type Role struct {
	Name string `json:"name"`
	// ID is the role definition's GUID, the same in every cloud.
	ID string `json:"id"`
}

// The built-in roles kvinject's agent needs. Definitions as Microsoft
// publishes them (az role definition list --name ...):
//
//   - Key Vault Secrets User: secrets/getSecret/action, secrets/readMetadata/action.
//   - Key Vault Reader: vaults/*/read (metadata and public material of keys
//     and certificates) and secrets/readMetadata/action, never a secret's value.
//
// Key Vault Certificate User is not used for public certificates: it also
// holds secrets/getSecret/action, so at vault scope it reads every secret.
// Key Vault Crypto User is not used for public keys: it also decrypts,
// signs and unwraps with the key.
var (
	SecretsUser = Role{Name: "Key Vault Secrets User", ID: "4633458b-17de-408a-b874-0445c86b69e6"}
	Reader      = Role{Name: "Key Vault Reader", ID: "21090545-7ca7-4776-b22c-e363652d74d2"}
)

// Need is what the agent's call for one object needs.
type Need struct {
	// Collection is the object's path segment in its scope: secrets, keys, certificates.
	Collection string `json:"collection"`
	// Call is the agent's request.
	Call string `json:"call"`
	// DataAction is the permission the call checks.
	DataAction string `json:"dataAction"`
	Role       Role   `json:"role"`
}

// NeedOf is the least built-in role for the agent's call for one object.
func NeedOf(o *config.Object) Need {
	switch o.Kind {
	case config.KindKey:
		return Need{"keys", "GET /keys/" + o.Name, "Microsoft.KeyVault/vaults/keys/read", Reader}
	case config.KindPublicCert:
		return Need{"certificates", "GET /certificates/" + o.Name, "Microsoft.KeyVault/vaults/certificates/read", Reader}
	default: // a secret, or a certificate read through its backing secret
		return Need{"secrets", "GET /secrets/" + o.Name, "Microsoft.KeyVault/vaults/secrets/getSecret/action", SecretsUser}
	}
}

// Scope patterns Microsoft documents for Key Vault RBAC.
const (
	// ScopeObject assigns each role on the single object: for vaults that
	// several workloads share.
	ScopeObject = "object"
	// ScopeVault assigns each role on the vault: for a vault per application.
	ScopeVault = "vault"
)

// Options place the workloads' objects and identities in Azure.
type Options struct {
	Subscription string
	// ResourceGroup holds the vaults, and the identities unless
	// IdentityResourceGroup is set.
	ResourceGroup string
	// VaultResourceGroups maps vault names to their resource group where it
	// is not ResourceGroup.
	VaultResourceGroups   map[string]string
	IdentityResourceGroup string
	// Identities maps client IDs to user-assigned managed identity names.
	// An identity not named is named after its first ServiceAccount,
	// <namespace>-<name>, with a warning.
	Identities map[string]string
	// Issuers are the OIDC issuer URLs of the clusters the workloads run in.
	Issuers []string
	// Scope is ScopeObject (default) or ScopeVault.
	Scope string
}

// Identity is a user-assigned managed identity the workloads sign in as.
type Identity struct {
	Name          string `json:"name"`
	ResourceGroup string `json:"resourceGroup"`
	ClientID      string `json:"clientId"`
	TenantID      string `json:"tenantId"`
}

// Assignment is one role assignment.
type Assignment struct {
	Identity Identity `json:"identity"`
	Role     Role     `json:"role"`
	Scope    string   `json:"scope"`
	// Vault and VaultResourceGroup locate the scope; Collection and Object
	// are empty at vault scope.
	Vault              string `json:"vault"`
	VaultResourceGroup string `json:"vaultResourceGroup"`
	Collection         string `json:"collection,omitempty"`
	Object             string `json:"object,omitempty"`
	// For lists what needs it: "Deployment shop/orders file db-password".
	For []string `json:"for"`
}

// Credential is one federated identity credential.
type Credential struct {
	Identity Identity `json:"identity"`
	Name     string   `json:"name"`
	Issuer   string   `json:"issuer"`
	Subject  string   `json:"subject"`
	Audience string   `json:"audience"`
}

// IdentityBinding is what AKS identity bindings need for an identity in
// place of federated credentials (kvinject.io/identity-binding): in each
// cluster, an identity binding of the identity to the cluster and a
// ClusterRole granting Subjects the use of it. AKS keeps the one federated
// credential they share.
type IdentityBinding struct {
	Identity Identity `json:"identity"`
	Subjects []string `json:"subjects"`
}

// Set is every grant a stream of workloads needs, sorted.
type Set struct {
	Scope            string            `json:"scope"`
	Identities       []Identity        `json:"identities"`
	Assignments      []Assignment      `json:"assignments"`
	Credentials      []Credential      `json:"credentials"`
	IdentityBindings []IdentityBinding `json:"identityBindings,omitempty"`
	Warnings         []string          `json:"warnings,omitempty"`
}

// MaxCredentials is how many federated credentials Entra allows on one identity.
const MaxCredentials = 20

// Subject is the federated credential subject of a ServiceAccount.
func Subject(namespace, serviceAccount string) string {
	return "system:serviceaccount:" + namespace + ":" + serviceAccount
}

// VaultName is the vault's name: the first label of its host.
func VaultName(vaultURL string) string {
	u, err := url.Parse(vaultURL)
	if err != nil {
		return vaultURL
	}
	name, _, _ := strings.Cut(u.Hostname(), ".")
	return name
}

// hostWarning says when a vault URL's host is not <name>.<the cloud's vault
// suffix>: the scope then names a vault the agent may not be reading.
func hostWarning(vaultURL string, cloud config.Cloud) string {
	u, err := url.Parse(vaultURL)
	if err != nil || strings.EqualFold(u.Hostname(), VaultName(vaultURL)+"."+cloud.VaultSuffix) {
		return ""
	}
	return fmt.Sprintf("vault %s is not <name>.%s; its scope assumes the vault is named %s", vaultURL, cloud.VaultSuffix, VaultName(vaultURL))
}

// VaultID is the vault's Azure resource ID.
func VaultID(subscription, resourceGroup, vault string) string {
	return "/subscriptions/" + subscription + "/resourceGroups/" + resourceGroup + "/providers/Microsoft.KeyVault/vaults/" + vault
}

// Placeholders in scopes when a subscription or resource group is not given.
const (
	SubscriptionPlaceholder  = "<subscription>"
	ResourceGroupPlaceholder = "<resource-group>"
)

func (o Options) vaultGroup(vault string) string {
	if rg := o.VaultResourceGroups[vault]; rg != "" {
		return rg
	}
	if o.ResourceGroup != "" {
		return o.ResourceGroup
	}
	return ResourceGroupPlaceholder
}

func (o Options) subscription() string {
	if o.Subscription != "" {
		return o.Subscription
	}
	return SubscriptionPlaceholder
}

// ObjectScope is the resource ID of one object.
func (o Options) ObjectScope(obj *config.Object) string {
	v := VaultName(obj.Vault)
	return VaultID(o.subscription(), o.vaultGroup(v), v) + "/" + NeedOf(obj).Collection + "/" + obj.Name
}

// Derive returns the least-privilege grants of the workloads.
//
//  1. Each object file of each workload needs NeedOf's role, for the
//     identity the workload signs in as, on the object (ScopeObject) or its
//     vault (ScopeVault). Templates need nothing of their own.
//  2. Identical (identity, role, scope) triples are one assignment, listing
//     every file that needs it.
//  3. Each identity gets one federated credential per ServiceAccount
//     subject and issuer, named from both, so the names are stable when
//     issuers or workloads are added; past MaxCredentials a warning says so
//     and points to identity bindings. Workloads that sign in through AKS
//     identity bindings need none: their subjects are listed per identity
//     (IdentityBindings), for the ClusterRoleBinding of each cluster.
//  4. Everything is sorted, so the same input renders the same output.
func Derive(ws []Workload, o Options) (*Set, error) {
	if o.Scope == "" {
		o.Scope = ScopeObject
	}
	if o.Scope != ScopeObject && o.Scope != ScopeVault {
		return nil, fmt.Errorf("scope %q is not %s or %s", o.Scope, ScopeObject, ScopeVault)
	}
	// Workloads on identity bindings need no issuer: AKS keeps their
	// identity's one federated credential.
	federated := slices.ContainsFunc(ws, func(w Workload) bool { return !w.Plan.IdentityBinding })
	if len(o.Issuers) == 0 && federated {
		return nil, fmt.Errorf("no issuer: give each cluster's OIDC issuer URL (az aks show --query oidcIssuerProfile.issuerUrl -o tsv)")
	}
	for _, is := range o.Issuers {
		if u, err := url.Parse(is); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("issuer %q is not an https:// URL without query or fragment", is)
		}
	}
	s := &Set{Scope: o.Scope}
	identityRG := o.IdentityResourceGroup
	if identityRG == "" {
		identityRG = o.ResourceGroup
	}
	if identityRG == "" {
		identityRG = ResourceGroupPlaceholder
	}

	// Identities, by client ID; subjects per identity, federated or bound.
	identities := map[string]*Identity{}
	subjects := map[string][]string{}
	bound := map[string][]string{}
	for _, w := range ws {
		p := w.Plan
		id, ok := identities[p.ClientID]
		if !ok {
			id = &Identity{ClientID: p.ClientID, TenantID: p.TenantID, ResourceGroup: identityRG, Name: o.Identities[p.ClientID]}
			identities[p.ClientID] = id
		}
		if id.TenantID != p.TenantID {
			s.Warnings = append(s.Warnings, fmt.Sprintf("client %s is used with tenants %s and %s; an identity lives in one tenant", p.ClientID, id.TenantID, p.TenantID))
		}
		sub := Subject(p.Namespace, p.ServiceAccount)
		list := subjects
		if p.IdentityBinding {
			list = bound
		}
		if !slices.Contains(list[p.ClientID], sub) {
			list[p.ClientID] = append(list[p.ClientID], sub)
		}
	}
	for client, id := range identities {
		slices.Sort(subjects[client])
		slices.Sort(bound[client])
		if id.Name == "" {
			first := strings.TrimPrefix(slices.Concat(subjects[client], bound[client])[0], "system:serviceaccount:")
			id.Name = strings.ReplaceAll(first, ":", "-")
			s.Warnings = append(s.Warnings, fmt.Sprintf("client %s has no --identity %s=NAME; its identity is assumed to be named %s", client, client, id.Name))
		}
		s.Identities = append(s.Identities, *id)
	}
	slices.SortFunc(s.Identities, func(a, b Identity) int { return strings.Compare(a.Name+a.ClientID, b.Name+b.ClientID) })

	// Role assignments.
	byKey := map[string]*Assignment{}
	for _, w := range ws {
		id := *identities[w.Plan.ClientID]
		for _, f := range w.Plan.Files {
			if f.Object == nil {
				continue
			}
			if m := hostWarning(f.Object.Vault, w.Plan.Cloud); m != "" && !slices.Contains(s.Warnings, m) {
				s.Warnings = append(s.Warnings, m)
			}
			need := NeedOf(f.Object)
			vault := VaultName(f.Object.Vault)
			a := Assignment{Identity: id, Role: need.Role, Vault: vault, VaultResourceGroup: o.vaultGroup(vault),
				Scope: VaultID(o.subscription(), o.vaultGroup(vault), vault)}
			if o.Scope == ScopeObject {
				a.Collection, a.Object = need.Collection, f.Object.Name
				a.Scope = o.ObjectScope(f.Object)
			}
			key := id.ClientID + "\x00" + a.Role.ID + "\x00" + a.Scope
			if byKey[key] == nil {
				byKey[key] = &a
			}
			what := fmt.Sprintf("%s file %s", w, f.Name)
			if !slices.Contains(byKey[key].For, what) {
				byKey[key].For = append(byKey[key].For, what)
			}
		}
	}
	for _, a := range byKey {
		slices.Sort(a.For)
		s.Assignments = append(s.Assignments, *a)
	}
	slices.SortFunc(s.Assignments, func(a, b Assignment) int {
		return strings.Compare(a.Identity.Name+"\x00"+a.Scope+"\x00"+a.Role.Name, b.Identity.Name+"\x00"+b.Scope+"\x00"+b.Role.Name)
	})

	// Federated credentials.
	for _, id := range s.Identities {
		n := 0
		for _, sub := range subjects[id.ClientID] {
			for _, is := range o.Issuers {
				s.Credentials = append(s.Credentials, Credential{Identity: id, Name: credentialName(sub, is),
					Issuer: is, Subject: sub, Audience: injector.TokenAudience})
				n++
			}
		}
		if n > MaxCredentials {
			s.Warnings = append(s.Warnings, fmt.Sprintf("identity %s needs %d federated credentials, past Entra's %d per identity: on AKS, sign in through identity bindings instead (%s: \"true\", docs/azure.md, \"Identity bindings\"), which need none of the clusters'; or give some ServiceAccounts their own identity, or use fewer issuers per identity", id.Name, n, MaxCredentials, injector.AnnotationIdentityBinding))
		}
		if subs := bound[id.ClientID]; len(subs) > 0 {
			s.IdentityBindings = append(s.IdentityBindings, IdentityBinding{Identity: id, Subjects: subs})
		}
	}
	slices.SortFunc(s.Credentials, func(a, b Credential) int {
		return strings.Compare(a.Identity.Name+"\x00"+a.Subject+"\x00"+a.Issuer, b.Identity.Name+"\x00"+b.Subject+"\x00"+b.Issuer)
	})
	slices.Sort(s.Warnings)
	return s, nil
}

// credentialName is <namespace>-<serviceaccount>-<8 hex of the issuer>,
// within Entra's rule (3-120 characters: letters, digits, '-' and '_',
// starting with a letter or digit).
func credentialName(subject, issuer string) string {
	sum := sha256.Sum256([]byte(issuer))
	base := strings.ReplaceAll(strings.TrimPrefix(subject, "system:serviceaccount:"), ":", "-")
	base = strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, base)
	if len(base) > 100 {
		base = base[:100]
	}
	return "kvinject-" + base + "-" + hex.EncodeToString(sum[:4])
}
