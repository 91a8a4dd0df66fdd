package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// A pod-bound token from the real API server signs in at the emulated Entra
// ID, which verifies it against the API server's own issuer (OIDC discovery +
// JWKS over loopback), and the resulting access token reads a secret. A pod of
// another ServiceAccount cannot use the same identity.
func TestPodTokenFederatesWithEmulator(t *testing.T) {
	c := testCluster(t)
	ctx := t.Context()
	ns := testNamespace(t, c, nil)
	const clientID = "00000000-0000-0000-0000-00000000c0de"

	srv, err := fakeazure.Start(ctx, fakeazure.Options{IssuerClient: c.IssuerHTTPClient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	vaultURL, err := srv.AddVault("shop-kv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.SetSecret("shop-kv", "db-password", "s3cret", ""); err != nil {
		t.Fatal(err)
	}
	if err := srv.Grant("shop-kv", clientID, fakeazure.RoleSecretsUser, "db-password"); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddFederatedCredential(clientID, c.Issuer, "system:serviceaccount:"+ns+":checkout"); err != nil {
		t.Fatal(err)
	}

	readSecret := func(sa string) (string, error) {
		t.Helper()
		if _, err := c.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: sa},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod, err := c.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: sa},
			Spec: corev1.PodSpec{
				ServiceAccountName: sa,
				Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.PodToken(ctx, pod, cluster.AzureAudience, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(tok.Token), 0o600); err != nil {
			t.Fatal(err)
		}
		co := azcore.ClientOptions{
			Transport: srv.Client(),
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: srv.AuthorityHost()},
		}
		cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: co, ClientID: clientID, TenantID: srv.TenantID(),
			TokenFilePath: tokenFile, DisableInstanceDiscovery: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		kv, err := azsecrets.NewClient(vaultURL, cred, &azsecrets.ClientOptions{
			ClientOptions:                        azcore.ClientOptions{Transport: srv.Client()},
			DisableChallengeResourceVerification: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := kv.GetSecret(ctx, "db-password", "", nil)
		if err != nil {
			return "", err
		}
		return *resp.Value, nil
	}

	got, err := readSecret("checkout")
	if err != nil {
		t.Fatalf("read secret with the checkout pod's token: %v", err)
	}
	if got != "s3cret" {
		t.Errorf("secret value differs from what the vault holds")
	}
	if _, err := readSecret("intruder"); err == nil || !strings.Contains(err.Error(), "AADSTS70021") {
		t.Errorf("another ServiceAccount's token: err = %v, want AADSTS70021 (no matching federated credential)", err)
	}
}
