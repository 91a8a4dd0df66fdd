package fakeazure_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// The token proxy through azidentity's own proxy mode
// (WorkloadIdentityCredentialOptions.EnableAzureProxy and the
// AZURE_KUBERNETES_* variables it reads): what azidentity sends with the
// right URL, server name and CA signs in and reads a secret, and every way
// of getting one of them wrong fails before a token is issued. Not
// parallel: azidentity reads the variables from the process environment.
func TestTokenProxy(t *testing.T) {
	const boundApp = "66666666-7777-8888-9999-000000000000"
	e := newEnv(t, fakeazure.Options{})
	if _, err := e.srv.SetSecret("shop-kv", "db-password", "s3cret", ""); err != nil {
		t.Fatal(err)
	}
	must(t, e.srv.Grant("shop-kv", boundApp, fakeazure.RoleSecretsUser, "db-password"))
	must(t, e.srv.AddIdentityBinding(fakeazure.IdentityBinding{ClientID: boundApp, Issuer: e.iss.URL(), Subject: "system:serviceaccount:shop:checkout"}))
	proxy, err := e.srv.StartTokenProxy(fakeazure.TokenProxyOptions{SNIName: "ib.fakeazure.test"})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(e.dir, "proxy-ca.pem")
	must(t, os.WriteFile(caFile, proxy.CAPEM(), 0o600))
	emulatorCA := filepath.Join(e.dir, "emulator-ca.pem")
	must(t, e.srv.WriteCAFile(emulatorCA))

	mint := func(sub, aud string) string {
		tok, err := e.iss.Mint(sub, aud, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return e.writeToken(strings.NewReplacer(":", "-", "/", "-").Replace(sub+aud), tok)
	}
	boundToken := mint("system:serviceaccount:shop:checkout", fakeazure.IdentityBindingAudience)
	right := map[string]string{
		"AZURE_KUBERNETES_TOKEN_PROXY": proxy.URL(),
		"AZURE_KUBERNETES_SNI_NAME":    proxy.SNIName(),
		"AZURE_KUBERNETES_CA_FILE":     caFile,
	}
	with := func(changes map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range right {
			m[k] = v
		}
		for k, v := range changes {
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	otherIssuer, err := fakeazure.NewIssuer(t.Context(), fakeazure.IssuerOptions{CA: e.srv.CA()})
	if err != nil {
		t.Fatal(err)
	}
	otherClusterToken, err := otherIssuer.Mint("system:serviceaccount:shop:checkout", fakeazure.IdentityBindingAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		env       map[string]string
		proxyMode bool
		token     string
		// wantErr is "" for a secret read through the proxy, else a part of
		// the sign-in error.
		wantErr string
		// tokens is how many token requests reached the proxy (and were
		// answered, with a token or a refusal).
		tokens int
	}{
		{name: "proxy mode", env: right, proxyMode: true, token: boundToken, tokens: 1},
		{name: "CA as data", env: with(map[string]string{"AZURE_KUBERNETES_CA_FILE": "", "AZURE_KUBERNETES_CA_DATA": string(proxy.CAPEM())}),
			proxyMode: true, token: boundToken, tokens: 1},
		// Without EnableAzureProxy the variables are ignored: Entra ID
		// itself has no federated credential for the identity.
		{name: "proxy mode off", env: right, token: boundToken, wantErr: "AADSTS70021"},
		{name: "wrong server name", env: with(map[string]string{"AZURE_KUBERNETES_SNI_NAME": "other.fakeazure.test"}),
			proxyMode: true, token: boundToken, wantErr: "tls"},
		// The URL's host is an address, which Go does not send as SNI.
		{name: "no server name", env: with(map[string]string{"AZURE_KUBERNETES_SNI_NAME": ""}),
			proxyMode: true, token: boundToken, wantErr: "tls"},
		{name: "system roots only", env: with(map[string]string{"AZURE_KUBERNETES_CA_FILE": ""}),
			proxyMode: true, token: boundToken, wantErr: "certificate signed by unknown authority"},
		{name: "the emulator's CA", env: with(map[string]string{"AZURE_KUBERNETES_CA_FILE": emulatorCA}),
			proxyMode: true, token: boundToken, wantErr: "certificate signed by unknown authority"},
		{name: "wrong path", env: with(map[string]string{"AZURE_KUBERNETES_TOKEN_PROXY": proxy.URL() + "token/"}),
			proxyMode: true, token: boundToken, wantErr: "404"},
		{name: "token for Entra ID's audience", env: right, proxyMode: true,
			token: mint("system:serviceaccount:shop:checkout", fakeazure.TokenExchangeAudience), wantErr: "accepts service-account tokens for audience api://AKSIdentityBinding", tokens: 1},
		{name: "ServiceAccount without the role", env: right, proxyMode: true,
			token: mint("system:serviceaccount:shop:intruder", fakeazure.IdentityBindingAudience), wantErr: "no ClusterRoleBinding grants it verb use-managed-identity", tokens: 1},
		{name: "cluster without a binding", env: right, proxyMode: true,
			token: e.writeToken("other-cluster", otherClusterToken), wantErr: "no identity binding maps managed identity " + boundApp, tokens: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AZURE_KUBERNETES_TOKEN_PROXY", "AZURE_KUBERNETES_SNI_NAME", "AZURE_KUBERNETES_CA_FILE", "AZURE_KUBERNETES_CA_DATA"} {
				t.Setenv(k, tc.env[k])
				if tc.env[k] == "" {
					os.Unsetenv(k)
				}
			}
			e.srv.ResetCounts()
			co := e.clientOptions(-1)
			co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: e.srv.AuthorityHost()}
			cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
				ClientOptions: co, ClientID: boundApp, TenantID: e.srv.TenantID(), TokenFilePath: tc.token,
				DisableInstanceDiscovery: true, EnableAzureProxy: tc.proxyMode,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if tc.wantErr != "" {
				_, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{fakeazure.VaultResource + "/.default"}})
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("sign-in error = %v, want one with %q", err, tc.wantErr)
				}
			} else {
				resp, err := e.secrets(cred, -1).GetSecret(ctx, "db-password", "", nil)
				if err != nil {
					t.Fatalf("read a secret through the token proxy: %v", err)
				}
				if *resp.Value != "s3cret" {
					t.Errorf("secret value differs from the vault's")
				}
			}
			if n := e.srv.Count(fakeazure.EndpointProxyToken, boundApp); n != tc.tokens {
				t.Errorf("the proxy answered %d token request(s) of %s, want %d", n, boundApp, tc.tokens)
			}
			// In proxy mode nothing reaches Entra ID's own endpoints: the
			// metadata request goes to the proxy too.
			if tc.proxyMode {
				if n := e.srv.Count(fakeazure.EndpointToken, fakeazure.AnyClient) + e.srv.Count(fakeazure.EndpointOpenIDConfiguration, fakeazure.AnyClient); n != 0 {
					t.Errorf("Entra ID's own endpoints saw %d request(s) in proxy mode, want none", n)
				}
			}
			if tc.name == "wrong path" && e.srv.Count(fakeazure.EndpointProxyUnknown, "") == 0 {
				t.Errorf("the proxy saw no request on an unknown path")
			}
			if tc.tokens > 0 && e.srv.Count(fakeazure.EndpointProxyOpenIDConfiguration, "") != 1 {
				t.Errorf("the proxy answered %d metadata request(s), want 1", e.srv.Count(fakeazure.EndpointProxyOpenIDConfiguration, ""))
			}
		})
	}
}
