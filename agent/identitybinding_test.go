package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// TestIdentityBindingProxy: with the variables the injector sets for
// kvinject.io/identity-binding, the agent signs in through the AKS
// identity-binding token proxy (its own server name and CA) and never at
// Entra ID's token endpoint, where the identity has no federated credential
// at all; a ServiceAccount the binding does not cover is refused, and the
// fix names what to create on AKS. Not parallel: azidentity reads the
// AZURE_KUBERNETES_* variables from the process environment.
func TestIdentityBindingProxy(t *testing.T) {
	h := newHarness(t)
	h.srv.RemoveFederatedCredentials(h.clientID)
	proxy, err := h.srv.StartTokenProxy(fakeazure.TokenProxyOptions{SNIName: "ib.agent.test"})
	must(t, err)
	caFile := filepath.Join(t.TempDir(), "identity-binding-ca.crt")
	must(t, os.WriteFile(caFile, proxy.CAPEM(), 0o600))
	must(t, h.srv.AddIdentityBinding(fakeazure.IdentityBinding{ClientID: h.clientID, Issuer: h.iss.URL(),
		Subject: "system:serviceaccount:" + namespace + ":" + serviceAccount}))
	h.extraEnv = map[string]string{
		"AZURE_KUBERNETES_TOKEN_PROXY": proxy.URL(),
		"AZURE_KUBERNETES_SNI_NAME":    proxy.SNIName(),
		"AZURE_KUBERNETES_CA_FILE":     caFile,
	}
	for k, v := range h.extraEnv {
		t.Setenv(k, v)
	}
	writeToken := func(sa string) {
		tok, err := h.iss.Mint("system:serviceaccount:"+namespace+":"+sa, fakeazure.IdentityBindingAudience, time.Hour)
		must(t, err)
		must(t, os.WriteFile(h.tokenFile, []byte(tok), 0o600))
	}
	writeToken(serviceAccount)
	h.secret("db-password", "value-Ib1")

	c := h.config(0, secretFile(h, "password", "db-password", ""))
	if err := h.run(t.Context(), agent.ModeInit, c); err != nil {
		t.Fatalf("init through the token proxy: %v\n%s", err, h.termination())
	}
	if got := h.read("password"); got != "value-Ib1" {
		t.Errorf("password differs from the vault's value")
	}
	if n := h.srv.Count(fakeazure.EndpointProxyToken, h.clientID); n != 1 {
		t.Errorf("the token proxy answered %d token request(s), want 1", n)
	}
	if n := h.srv.Count(fakeazure.EndpointToken, h.clientID); n != 0 {
		t.Errorf("Entra ID's token endpoint saw %d request(s) of the client, want none", n)
	}

	writeToken("intruder")
	c.ServiceAccount = "intruder"
	if err := h.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("a ServiceAccount without the use-managed-identity role signed in")
	}
	msg := h.termination()
	for _, want := range []string{"sign-in failed: HTTP 403 unauthorized_client",
		"Fix: the identity-binding token proxy refused system:serviceaccount:shop:intruder",
		"az aks identity-binding create", "verb use-managed-identity on resource " + h.clientID + " of API group cid.wi.aks.azure.com, bound to ServiceAccount shop/intruder"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "federated identity credential to") {
		t.Errorf("termination message asks for a federated credential, which identity bindings do not use:\n%s", msg)
	}
}
