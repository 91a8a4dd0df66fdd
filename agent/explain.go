package agent

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/agent/keyvault"
)

// maxTermination is kubelet's limit for one container's termination message.
const maxTermination = 4096

// explain turns a Run error into the text for kubectl describe pod: per failed
// object what happened (object, vault, HTTP status and code, client id) and
// what to fix.
func (p *pod) explain(err error) string {
	var b strings.Builder
	fetchErrs := fetchErrors(err)
	if len(fetchErrs) == 0 {
		fmt.Fprintf(&b, "kvinject agent: %v", err)
		return b.String()
	}
	fmt.Fprintf(&b, "kvinject agent: could not fetch %d object(s) as client %s", len(fetchErrs), p.id.ClientID)
	// One sign-in failure fails every object the same way: say it once.
	signIn := map[string][]string{}
	for _, fe := range fetchErrs {
		if fe.Failure.SignIn && !fe.GaveUp {
			text := failureText(fe.Failure)
			signIn[text] = append(signIn[text], fe.Kind+" "+objectName(fe.Ref))
		}
	}
	for _, fe := range fetchErrs {
		if objects, ok := signIn[failureText(fe.Failure)]; ok && fe.Failure.SignIn && !fe.GaveUp {
			if objects == nil {
				continue // already said
			}
			fmt.Fprintf(&b, "\n- %s: %s", strings.Join(objects, ", "), failureText(fe.Failure))
			signIn[failureText(fe.Failure)] = nil
		} else {
			fmt.Fprintf(&b, "\n- %s %s (file %s) in vault %s: %s",
				fe.Kind, objectName(fe.Ref), strings.Join(fe.Files, ", "), fe.Ref.Vault, failureText(fe.Failure))
			if fe.GaveUp {
				fmt.Fprintf(&b, " (gave up after %d attempt(s) within the %s deadline)", fe.Attempts, p.deadline)
			}
		}
		fmt.Fprintf(&b, "\n  Fix: %s", p.fix(fe))
	}
	return b.String()
}

// fetchErrors finds every FetchError in err, including all of a join.
func fetchErrors(err error) (out []*FetchError) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fetchErrors(e)...)
		}
		return out
	}
	var fe *FetchError
	if errors.As(err, &fe) {
		out = append(out, fe)
	}
	return out
}

func (p *pod) subject() string {
	ns, sa := "<namespace>", "<service account>"
	if p.cfg != nil && p.cfg.Namespace != "" {
		ns = p.cfg.Namespace
	}
	if p.cfg != nil && p.cfg.ServiceAccount != "" {
		sa = p.cfg.ServiceAccount
	}
	return "system:serviceaccount:" + ns + ":" + sa
}

func (p *pod) fix(fe *FetchError) string {
	f := fe.Failure
	id, tenant := p.id.ClientID, p.id.TenantID
	if fix := p.classFix(f, fe.Ref.Vault); fix != "" {
		return fix
	}
	if f.Retryable && f.Status != 0 {
		return "the service kept failing or throttling until the deadline; this is usually temporary, and the agent tries again when the container restarts"
	}
	if f.SignIn && p.id.TokenProxy != "" {
		return p.proxyFix(f)
	}
	if f.SignIn {
		switch f.Code {
		case "AADSTS70021", "AADSTS700213", "AADSTS7002137", "AADSTS7002138", "AADSTS700211", "AADSTS700212":
			return fmt.Sprintf("add a federated identity credential to the app registration or managed identity %s: issuer = this cluster's service account issuer URL, subject = %s, audience = api://AzureADTokenExchange", id, p.subject())
		case "AADSTS700016":
			return fmt.Sprintf("no application %s in tenant %s: check the client id (kvinject.io/client-id, or the ServiceAccount's azure.workload.identity/client-id) and the tenant id", id, tenant)
		case "AADSTS90002", "AADSTS900023":
			return fmt.Sprintf("tenant %s does not exist: check the tenant id (kvinject.io/tenant-id, or the ServiceAccount's azure.workload.identity/tenant-id)", tenant)
		case "AADSTS700024", "AADSTS700027":
			return "the service account token was rejected as expired or not yet valid: check the node's clock and the projected token"
		}
		if f.Status == 0 {
			return fmt.Sprintf("check that the token file %s exists (the projected service account token) and that the authority host is reachable from the pod", p.id.TokenFile)
		}
		if f.Code == "" && !f.Retryable {
			return fmt.Sprintf("the authority host %s answered HTTP %d, not as Entra ID does: check the cloud (kvinject.io/cloud) or the webhook's --authority-host", p.authority(), f.Status)
		}
		return fmt.Sprintf("check the identity: client id %s, tenant %s, and its federated credential for %s", id, tenant, p.subject())
	}
	collection := "secret"
	role := "Key Vault Secrets User"
	switch fe.Ref.Collection {
	case "keys":
		collection, role = "key", "Key Vault Reader" // public key only; Crypto User would also allow signing
	case "certificates":
		collection, role = "certificate", "Key Vault Reader" // the public certificate only
	}
	switch {
	case f.Status == 401:
		return fmt.Sprintf("the vault did not accept the token: check that the vault belongs to tenant %s and that the cloud setting matches the vault", tenant)
	case f.Status == 403 && (f.Code == "ForbiddenByFirewall" || f.Code == "ForbiddenByConnection"):
		return "the vault's network rules block this pod: allow the cluster's egress address in the vault's firewall, or use a private endpoint"
	case f.Status == 403 && strings.Contains(strings.ToLower(f.Code+" "+f.Message), "disabled"):
		return fmt.Sprintf("the %s is disabled: enable it, or pin an enabled version", collection)
	case f.Status == 403:
		return fmt.Sprintf("grant client %s read access to %ss on vault %s: the %q role on the vault (Azure RBAC), or the 'get' %s permission in an access policy", id, collection, fe.Ref.Vault, role, collection)
	case f.Status == 404:
		what := fmt.Sprintf("no %s named %q", collection, fe.Ref.Name)
		if fe.Ref.Version != "" {
			what += fmt.Sprintf(" with version %q", fe.Ref.Version)
		}
		hint := ""
		if fe.Kind == "cert" {
			hint = " (a certificate is read through the secret of the same name)"
		}
		return fmt.Sprintf("%s in vault %s%s: check the object name, version and vault in the pod's kvinject.io annotations", what, fe.Ref.Vault, hint)
	case f.Status == 0:
		return fmt.Sprintf("the vault did not answer: check DNS and egress from the pod to %s (NetworkPolicy, firewall, proxy)", fe.Ref.Vault)
	case f.Status >= 400 && f.Status < 500:
		return "the vault rejected the request: check the object name and version in the pod's kvinject.io annotations"
	}
	return "see the agent's logs"
}

// proxyFix is the advice for a sign-in through the AKS identity-binding
// token proxy, where no federated credential of the cluster's is involved.
func (p *pod) proxyFix(f keyvault.Failure) string {
	id := p.id.ClientID
	switch {
	case f.Status == 0:
		return fmt.Sprintf("the identity-binding token proxy %s did not answer: check that the pod can reach it, and that the webhook's --identity-binding-sni-name and --identity-binding-ca-configmap are the cluster's (AKS's webhook gives its own pods the same values as AZURE_KUBERNETES_SNI_NAME and AZURE_KUBERNETES_CA_FILE)", p.id.TokenProxy)
	case strings.HasPrefix(f.Code, "AADSTS"):
		return fmt.Sprintf("Entra ID refused the token proxy's exchange for %s: AKS keeps one federated credential (aks-identity-binding) on the identity for its identity bindings; check it is there and that an identity binding maps %s to this cluster", id, id)
	}
	return fmt.Sprintf("the identity-binding token proxy refused %s: create an identity binding of managed identity %s to this cluster (az aks identity-binding create) and a ClusterRole with verb use-managed-identity on resource %s of API group cid.wi.aks.azure.com, bound to ServiceAccount %s", p.subject(), id, id, strings.Replace(strings.TrimPrefix(p.subject(), "system:serviceaccount:"), ":", "/", 1))
}

// authority is the sign-in authority the agent used.
func (p *pod) authority() string {
	if p.cfg == nil {
		return "<authority>"
	}
	if h := p.cfg.Cloud.AuthorityHost; h != "" {
		return h
	}
	if c, ok := config.KnownCloud(p.cfg.Cloud.Name); ok {
		return c.AuthorityHost
	}
	return "<authority>"
}

// classFix is the advice for a failure without a response (or a refused
// tenant), or "".
func (p *pod) classFix(f keyvault.Failure, vault string) string {
	switch f.Class {
	case keyvault.ClassTLSUntrusted:
		return fmt.Sprintf("if a TLS-inspecting proxy or a private CA signs the certificate of %s, put that CA certificate (PEM) in a ConfigMap in the pod's namespace and name it with the kvinject.io/ca-configmap annotation (or the webhook's --ca-configmap): kvinject mounts it into the agent only and points SSL_CERT_DIR at it. Otherwise the pod is not reaching %s directly: check the proxy settings (HTTPS_PROXY, NO_PROXY)", f.Host, f.Host)
	case keyvault.ClassTLSMismatch:
		return fmt.Sprintf("the pod reached a server that is not %s (a proxy, a private endpoint with another certificate, or DNS pointing elsewhere): check DNS for %s and the proxy settings (HTTPS_PROXY, NO_PROXY)", f.Host, f.Host)
	case keyvault.ClassTLSInvalid:
		return fmt.Sprintf("the certificate of %s is expired, not yet valid or unusable: check the node's clock, and whether a proxy presents its own certificate", f.Host)
	case keyvault.ClassDNS:
		return fmt.Sprintf("%s does not resolve from the pod: check the vault name (kvinject.io/vault or the object URL) and the cloud (kvinject.io/cloud); for a private endpoint, the private DNS zone linked to the cluster's network", f.Host)
	case keyvault.ClassRefused:
		return fmt.Sprintf("nothing accepts connections at %s: check the proxy settings (HTTPS_PROXY) and, for a private endpoint, its address", f.Host)
	case keyvault.ClassTimeout:
		return fmt.Sprintf("no answer from %s: egress from the pod is probably blocked (NetworkPolicy, firewall, network security group) or needs a proxy (HTTPS_PROXY)", f.Host)
	case keyvault.ClassTenantMismatch:
		return fmt.Sprintf("vault %s belongs to tenant %s, the identity signs in to tenant %s: set kvinject.io/tenant-id (or the ServiceAccount's azure.workload.identity/tenant-id) to %s, or use a vault of tenant %s", vault, f.Tenant, p.id.TenantID, f.Tenant, p.id.TenantID)
	}
	return ""
}

// writeTermination writes the explanation of err where kubelet reads the
// termination message, cut to kubelet's limit.
func writeTermination(path string, msg string) error {
	if len(msg) > maxTermination {
		msg = msg[:maxTermination-len("…")] + "…"
	}
	return os.WriteFile(path, []byte(msg), 0o644)
}
