package fakeazure_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/e2e/fakeazure"
)

const (
	appID     = "11111111-2222-3333-4444-555555555555"
	namespace = "shop"
	saName    = "checkout"
)

// env is one emulator with one vault, one test issuer and one app whose
// federated credential trusts system:serviceaccount:shop:checkout.
type env struct {
	t        *testing.T
	srv      *fakeazure.Server
	iss      *fakeazure.Issuer
	vaultURL string
	dir      string
}

func newEnv(t *testing.T, opts fakeazure.Options) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca, err := fakeazure.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	iss, err := fakeazure.NewIssuer(ctx, fakeazure.IssuerOptions{CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	opts.CA = ca
	srv, err := fakeazure.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	u, err := srv.AddVault("shop-kv")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddFederatedCredential(appID, iss.URL(), "system:serviceaccount:"+namespace+":"+saName); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, iss: iss, vaultURL: u, dir: t.TempDir()}
}

// tokenFile writes a projected-token-like file for ns/sa and returns its path.
func (e *env) tokenFile(ns, sa string, ttl time.Duration) string {
	e.t.Helper()
	p := filepath.Join(e.dir, ns+"-"+sa+"-token")
	if err := e.iss.WriteServiceAccountToken(p, ns, sa, ttl); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) writeToken(name, token string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	e.must(os.WriteFile(p, []byte(token), 0o600))
	return p
}

// clientOptions trust the emulator's CA; retries < 0 disables retries
// (0 would mean azcore's default of 3).
func (e *env) clientOptions(retries int32) azcore.ClientOptions {
	return azcore.ClientOptions{
		Transport: e.srv.Client(),
		Retry:     policy.RetryOptions{MaxRetries: retries, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Second},
	}
}

// credential is what the agent builds: WorkloadIdentityCredential reading a
// token file, against the emulator's authority host.
func (e *env) credential(clientID, tokenFile string, retries int32) *azidentity.WorkloadIdentityCredential {
	e.t.Helper()
	co := e.clientOptions(retries)
	co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: e.srv.AuthorityHost()}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions:            co,
		ClientID:                 clientID,
		TenantID:                 e.srv.TenantID(),
		TokenFilePath:            tokenFile,
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return cred
}

func (e *env) secrets(cred azcore.TokenCredential, retries int32) *azsecrets.Client {
	e.t.Helper()
	c, err := azsecrets.NewClient(e.vaultURL, cred, &azsecrets.ClientOptions{
		ClientOptions:                        e.clientOptions(retries),
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) keys(cred azcore.TokenCredential) *azkeys.Client {
	e.t.Helper()
	c, err := azkeys.NewClient(e.vaultURL, cred, &azkeys.ClientOptions{
		ClientOptions:                        e.clientOptions(3),
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// defaultSecrets is a secrets client for the registered app.
func (e *env) defaultSecrets(retries int32) *azsecrets.Client {
	return e.secrets(e.credential(appID, e.tokenFile(namespace, saName, time.Hour), retries), retries)
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func responseError(t *testing.T, err error, status int, code string) *azcore.ResponseError {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("want *azcore.ResponseError %d %s, got %T: %v", status, code, err, err)
	}
	if re.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("want %d %s, got %d %s: %v", status, code, re.StatusCode, re.ErrorCode, err)
	}
	return re
}

func TestSecrets(t *testing.T) {
	e := newEnv(t, fakeazure.Options{PageSize: 2})
	ctx := context.Background()
	v1, err := e.srv.SetSecret("shop-kv", "db-password", "s3cret-1", "")
	e.must(err)
	v2, err := e.srv.SetSecret("shop-kv", "db-password", "s3cret-2", "text/plain")
	e.must(err)
	_, err = e.srv.SetSecret("shop-kv", "db-password", "s3cret-3", "")
	e.must(err)
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleSecretsOfficer, "db-password"))
	c := e.defaultSecrets(3)

	got, err := c.GetSecret(ctx, "db-password", "", nil)
	e.must(err)
	if *got.Value != "s3cret-3" || got.ID.Name() != "db-password" {
		t.Fatalf("latest: got %q (%s)", *got.Value, *got.ID)
	}
	if !strings.HasPrefix(string(*got.ID), e.vaultURL+"secrets/db-password/") {
		t.Fatalf("id %s is not under vault %s", *got.ID, e.vaultURL)
	}
	got, err = c.GetSecret(ctx, "db-password", v2, nil)
	e.must(err)
	if *got.Value != "s3cret-2" || got.ID.Version() != v2 || *got.ContentType != "text/plain" {
		t.Fatalf("version %s: got %q %s", v2, *got.Value, *got.ID)
	}

	// Three versions with a page size of two: the pager follows nextLink.
	var versions []string
	pager := c.NewListSecretPropertiesVersionsPager("db-password", nil)
	pages := 0
	for pager.More() {
		page, err := pager.NextPage(ctx)
		e.must(err)
		pages++
		for _, p := range page.Value {
			versions = append(versions, p.ID.Version())
		}
	}
	if len(versions) != 3 || versions[0] != v1 || versions[1] != v2 || pages != 2 {
		t.Fatalf("versions = %v in %d pages, want 3 starting %s, %s in 2 pages", versions, pages, v1, v2)
	}

	// Listing the vault needs a vault-wide role, as in Azure.
	_, err = c.NewListSecretPropertiesPager(nil).NextPage(ctx)
	responseError(t, err, http.StatusForbidden, "Forbidden")
	_, err = e.srv.SetSecret("shop-kv", "api-key", "k", "")
	e.must(err)
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleReader, "*"))
	var names []string
	for all := c.NewListSecretPropertiesPager(nil); all.More(); {
		page, err := all.NextPage(ctx)
		e.must(err)
		for _, p := range page.Value {
			names = append(names, p.ID.Name())
		}
	}
	if strings.Join(names, ",") != "api-key,db-password" {
		t.Fatalf("list = %v", names)
	}

	// Rotation through the SDK.
	set, err := c.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: new("s3cret-4")}, nil)
	e.must(err)
	if v, _ := e.srv.SecretValue("shop-kv", "db-password", ""); v != "s3cret-4" {
		t.Fatalf("after SetSecret the vault holds %q", v)
	}
	got, err = c.GetSecret(ctx, "db-password", "", nil)
	e.must(err)
	if got.ID.Version() != set.ID.Version() {
		t.Fatalf("latest version %s, want the one just set %s", got.ID.Version(), set.ID.Version())
	}
}

func TestCertificates(t *testing.T) {
	for _, ct := range []string{fakeazure.ContentTypePEM, fakeazure.ContentTypePFX} {
		t.Run(ct, func(t *testing.T) {
			e := newEnv(t, fakeazure.Options{})
			cert, err := e.srv.AddCertificate("shop-kv", "tls", ct)
			e.must(err)
			e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleSecretsUser, "tls"))
			got, err := e.defaultSecrets(3).GetSecret(context.Background(), "tls", "", nil)
			e.must(err)
			if *got.ContentType != ct || got.Managed == nil || !*got.Managed || got.KID == nil || got.ID.Version() != cert.Version {
				t.Fatalf("bundle: contentType %v managed %v kid %v version %s", *got.ContentType, got.Managed, got.KID, got.ID.Version())
			}
			var key any
			var chain []*x509.Certificate
			switch ct {
			case fakeazure.ContentTypePEM:
				rest := []byte(*got.Value)
				for {
					var b *pem.Block
					b, rest = pem.Decode(rest)
					if b == nil {
						break
					}
					switch b.Type {
					case "PRIVATE KEY":
						key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
					case "CERTIFICATE":
						var c *x509.Certificate
						c, err = x509.ParseCertificate(b.Bytes)
						chain = append(chain, c)
					}
					e.must(err)
				}
			case fakeazure.ContentTypePFX:
				pfx, err := base64.StdEncoding.DecodeString(*got.Value)
				e.must(err)
				var leaf *x509.Certificate
				key, leaf, chain, err = pkcs12.DecodeChain(pfx, "")
				e.must(err)
				chain = append([]*x509.Certificate{leaf}, chain...)
			}
			if len(chain) != 3 {
				t.Fatalf("chain has %d certificates, want leaf, intermediate, root", len(chain))
			}
			inter := x509.NewCertPool()
			inter.AddCert(chain[1])
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: cert.Roots(), Intermediates: inter, DNSName: "tls.kvinject.test"}); err != nil {
				t.Fatalf("chain does not verify root → intermediate → leaf: %v", err)
			}
			if !chain[0].Equal(cert.Leaf) || !chain[2].Equal(cert.Root) {
				t.Fatal("chain differs from the one AddCertificate returned")
			}
			pub := key.(crypto.Signer).Public()
			if !cert.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Fatal("private key does not match the leaf")
			}

			// API 2025-07-01: ask for PEM whatever the stored format.
			conv, err := e.defaultSecrets(3).GetSecret(context.Background(), "tls", "", &azsecrets.GetSecretOptions{OutContentType: new(azsecrets.ContentTypePEM)})
			e.must(err)
			if *conv.ContentType != fakeazure.ContentTypePEM || !strings.HasPrefix(*conv.Value, "-----BEGIN PRIVATE KEY-----") || strings.Count(*conv.Value, "BEGIN CERTIFICATE") != 3 {
				t.Fatalf("outContentType PEM: got %s", *conv.ContentType)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	e := newEnv(t, fakeazure.Options{})
	rsaKey, err := e.srv.AddKey("shop-kv", "signing-rsa", "RSA")
	e.must(err)
	ecKey, err := e.srv.AddKey("shop-kv", "signing-ec", "EC")
	e.must(err)
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleCryptoUser, "*"))
	c := e.keys(e.credential(appID, e.tokenFile(namespace, saName, time.Hour), 3))
	ctx := context.Background()

	got, err := c.GetKey(ctx, "signing-rsa", "", nil)
	e.must(err)
	k := got.Key
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(k.N), E: int(new(big.Int).SetBytes(k.E).Int64())}
	if *k.Kty != azkeys.KeyTypeRSA || !pub.Equal(rsaKey.Public) || k.KID.Version() != rsaKey.Version {
		t.Fatalf("RSA key: kty %s kid %s", *k.Kty, *k.KID)
	}

	got, err = c.GetKey(ctx, "signing-ec", ecKey.Version, nil)
	e.must(err)
	k = got.Key
	ecPub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(k.X), Y: new(big.Int).SetBytes(k.Y)}
	if *k.Kty != azkeys.KeyTypeEC || *k.Crv != azkeys.CurveNameP256 || !ecPub.Equal(ecKey.Public) {
		t.Fatalf("EC key: kty %s crv %s", *k.Kty, *k.Crv)
	}
	if _, err := x509.MarshalPKIXPublicKey(ecPub); err != nil {
		t.Fatal(err)
	}

	_, err = c.GetKey(ctx, "missing", "", nil)
	responseError(t, err, http.StatusNotFound, "KeyNotFound")
}

func TestAccessErrors(t *testing.T) {
	e := newEnv(t, fakeazure.Options{})
	ctx := context.Background()
	_, err := e.srv.SetSecret("shop-kv", "db-password", "s3cret", "")
	e.must(err)
	_, err = e.srv.SetSecret("shop-kv", "api-key", "k3y", "")
	e.must(err)
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleSecretsUser, "db-password"))
	c := e.defaultSecrets(-1)

	// Least privilege: another secret in the same vault is forbidden, and
	// the message names the caller and the object.
	_, err = c.GetSecret(ctx, "api-key", "", nil)
	re := responseError(t, err, http.StatusForbidden, "Forbidden")
	for _, want := range []string{"Caller is not authorized to perform action on resource", "appid=" + appID, "secrets/getSecret/action", "/secrets/api-key", "ForbiddenByRbac"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("403 error does not mention %q:\n%v", want, err)
		}
	}
	_ = re

	// 404 for a granted name that does not exist.
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleSecretsUser, "*"))
	_, err = c.GetSecret(ctx, "nope", "", nil)
	responseError(t, err, http.StatusNotFound, "SecretNotFound")
	if !strings.Contains(err.Error(), "A secret with (name/id) nope was not found in this key vault") {
		t.Errorf("404 message: %v", err)
	}

	// 401: a token that was not issued by this tenant's Entra.
	other, err := fakeazure.Start(ctx, fakeazure.Options{})
	e.must(err)
	defer other.Close()
	forged, err := other.MintAccessToken(appID)
	e.must(err)
	_, err = e.secrets(staticToken(forged), -1).GetSecret(ctx, "db-password", "", nil)
	responseError(t, err, http.StatusUnauthorized, "Unauthorized")

	// Deleted: 404.
	_, err = e.srv.SetSecret("shop-kv", "gone", "x", "")
	e.must(err)
	e.must(e.srv.DeleteSecret("shop-kv", "gone"))
	_, err = c.GetSecret(ctx, "gone", "", nil)
	responseError(t, err, http.StatusNotFound, "SecretNotFound")

	// Disabled version: 403 as the service sends it.
	e.must(e.srv.SetSecretEnabled("shop-kv", "db-password", "", false))
	_, err = c.GetSecret(ctx, "db-password", "", nil)
	responseError(t, err, http.StatusForbidden, "Forbidden")
}

type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func TestFederation(t *testing.T) {
	e := newEnv(t, fakeazure.Options{})
	ctx := context.Background()
	_, err := e.srv.SetSecret("shop-kv", "db-password", "s3cret", "")
	e.must(err)
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleSecretsUser, "*"))

	authErr := func(t *testing.T, err error, status int, code string) {
		t.Helper()
		var ae *azidentity.AuthenticationFailedError
		if !errors.As(err, &ae) {
			t.Fatalf("want *azidentity.AuthenticationFailedError, got %T: %v", err, err)
		}
		if ae.RawResponse == nil || ae.RawResponse.StatusCode != status || !strings.Contains(err.Error(), code) {
			t.Fatalf("want %d %s, got %v", status, code, err)
		}
	}

	t.Run("wrong subject", func(t *testing.T) {
		tf := e.tokenFile(namespace, "intruder", time.Hour)
		_, err := e.secrets(e.credential(appID, tf, -1), -1).GetSecret(ctx, "db-password", "", nil)
		authErr(t, err, http.StatusBadRequest, "AADSTS70021")
		for _, want := range []string{"No matching federated identity record found for presented assertion", "Assertion Subject: 'system:serviceaccount:shop:intruder'", "Assertion Issuer: '" + e.iss.URL() + "'", "Assertion Audience: 'api://AzureADTokenExchange'"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not contain %q:\n%v", want, err)
			}
		}
	})
	t.Run("expired assertion", func(t *testing.T) {
		tf := e.tokenFile(namespace, saName, -10*time.Minute)
		_, err := e.secrets(e.credential(appID, tf, -1), -1).GetSecret(ctx, "db-password", "", nil)
		authErr(t, err, http.StatusUnauthorized, "AADSTS700024")
	})
	t.Run("unknown app", func(t *testing.T) {
		tf := e.tokenFile(namespace, saName, time.Hour)
		_, err := e.secrets(e.credential("99999999-0000-0000-0000-000000000000", tf, -1), -1).GetSecret(ctx, "db-password", "", nil)
		authErr(t, err, http.StatusBadRequest, "AADSTS700016")
	})
	t.Run("untrusted issuer", func(t *testing.T) {
		other, err := fakeazure.NewIssuer(ctx, fakeazure.IssuerOptions{CA: e.srv.CA()})
		must(t, err)
		defer other.Close()
		tok, err := other.MintServiceAccount(namespace, saName, time.Hour)
		must(t, err)
		_, err = e.secrets(e.credential(appID, e.writeToken("other-issuer", tok), -1), -1).GetSecret(ctx, "db-password", "", nil)
		authErr(t, err, http.StatusBadRequest, "AADSTS70021")

		// The same token claiming our issuer: the signature does not verify
		// against our issuer's JWKS.
		parts := strings.Split(tok, ".")
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		must(t, err)
		payload = []byte(strings.Replace(string(payload), other.URL(), e.iss.URL(), 1))
		parts[1] = base64.RawURLEncoding.EncodeToString(payload)
		forged := strings.Join(parts, ".")
		_, err = e.secrets(e.credential(appID, e.writeToken("forged", forged), -1), -1).GetSecret(ctx, "db-password", "", nil)
		authErr(t, err, http.StatusUnauthorized, "AADSTS50013")
	})
	t.Run("unknown tenant", func(t *testing.T) {
		co := e.clientOptions(-1)
		co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: e.srv.AuthorityHost()}
		cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: co, ClientID: appID, TenantID: "00000000-0000-0000-0000-000000000bad",
			TokenFilePath: e.tokenFile(namespace, saName, time.Hour), DisableInstanceDiscovery: true,
		})
		must(t, err)
		_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
		if err == nil || !strings.Contains(err.Error(), "AADSTS90002") {
			t.Fatalf("want AADSTS90002, got %v", err)
		}
	})
	t.Run("issuer key rotation", func(t *testing.T) {
		must(t, e.iss.RotateKey())
		tf := e.tokenFile(namespace, saName, time.Hour)
		got, err := e.secrets(e.credential(appID, tf, -1), -1).GetSecret(ctx, "db-password", "", nil)
		must(t, err)
		if *got.Value != "s3cret" {
			t.Fatal("wrong value")
		}
	})
}

func TestES256Issuer(t *testing.T) {
	ctx := context.Background()
	iss, err := fakeazure.NewIssuer(ctx, fakeazure.IssuerOptions{Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	// Separate CAs: the issuer is reached through IssuerClient, as
	// kube-apiserver would be.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	srv, err := fakeazure.Start(ctx, fakeazure.Options{IssuerClient: iss.Client(), CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if b, err := os.ReadFile(caFile); err != nil || string(b) != string(srv.CAPEM()) {
		t.Fatalf("CA file: %v", err)
	}
	u, err := srv.AddVault("es-kv")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddFederatedCredential(appID, iss.URL(), "system:serviceaccount:a:b"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.SetSecret("es-kv", "x", "y", ""); err != nil {
		t.Fatal(err)
	}
	if err := srv.Grant("es-kv", appID, fakeazure.RoleSecretsUser, "x"); err != nil {
		t.Fatal(err)
	}
	tf := filepath.Join(t.TempDir(), "token")
	if err := iss.WriteServiceAccountToken(tf, "a", "b", time.Hour); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, iss: iss, vaultURL: u}
	got, err := e.secrets(e.credential(appID, tf, -1), -1).GetSecret(ctx, "x", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Value != "y" {
		t.Fatalf("got %q", *got.Value)
	}
}

func TestFaults(t *testing.T) {
	e := newEnv(t, fakeazure.Options{})
	ctx := context.Background()
	_, err := e.srv.SetSecret("shop-kv", "db-password", "s3cret", "")
	e.must(err)
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleSecretsUser, "*"))
	cred := e.credential(appID, e.tokenFile(namespace, saName, time.Hour), -1)
	retrying, once := e.secrets(cred, 3), e.secrets(cred, -1)
	get := func(c *azsecrets.Client) error {
		_, err := c.GetSecret(ctx, "db-password", "", nil)
		return err
	}
	gets := func() int { return e.srv.CountVault("shop-kv", fakeazure.EndpointGetSecret, appID) }
	e.must(get(retrying)) // token cached from here on
	e.must(get(once))
	getSecret := fakeazure.Target{Vault: "shop-kv", Endpoint: fakeazure.EndpointGetSecret}

	t.Run("429 without Retry-After", func(t *testing.T) {
		e.srv.Fail(getSecret, 1, fakeazure.Fault{Status: http.StatusTooManyRequests})
		re := responseError(t, get(once), http.StatusTooManyRequests, "Throttled")
		if h := re.RawResponse.Header.Get("Retry-After"); h != "" {
			t.Fatalf("Retry-After = %q, want none", h)
		}
		must(t, get(once)) // the fault is spent
	})
	t.Run("429 with Retry-After", func(t *testing.T) {
		e.srv.Fail(getSecret, 1, fakeazure.Fault{Status: http.StatusTooManyRequests, RetryAfter: 1500 * time.Millisecond})
		re := responseError(t, get(once), http.StatusTooManyRequests, "Throttled")
		if h := re.RawResponse.Header.Get("Retry-After"); h != "2" {
			t.Fatalf("Retry-After = %q, want 2 (seconds, rounded up)", h)
		}
	})
	t.Run("5xx retried by the SDK", func(t *testing.T) {
		before := gets()
		e.srv.Fail(getSecret, 2, fakeazure.Fault{Status: http.StatusServiceUnavailable})
		must(t, get(retrying))
		if n := gets() - before; n != 3 {
			t.Fatalf("%d GETs, want 3 (two faulted, one served)", n)
		}
		e.srv.Fail(getSecret, 1, fakeazure.Fault{Status: http.StatusInternalServerError})
		responseError(t, get(once), http.StatusInternalServerError, "InternalServerError")
	})
	t.Run("connection reset", func(t *testing.T) {
		// Go's transport replays a GET once by itself when a reused
		// connection resets, so the second reset is the one a caller sees.
		e.srv.Fail(getSecret, 2, fakeazure.Fault{Reset: true})
		err := get(once)
		var re *azcore.ResponseError
		if err == nil || errors.As(err, &re) {
			t.Fatalf("want a transport error, got %v", err)
		}
		e.srv.Fail(getSecret, 2, fakeazure.Fault{Reset: true})
		must(t, get(retrying))
	})
	t.Run("outage", func(t *testing.T) {
		e.srv.SetOutage(true)
		responseError(t, get(once), http.StatusServiceUnavailable, "ServiceUnavailable")
		_, err := e.credential(appID, e.tokenFile(namespace, saName, time.Hour), -1).GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
		if err == nil {
			t.Fatal("token request succeeded during an outage")
		}
		e.srv.SetOutage(false)
		must(t, get(once))
	})
	t.Run("latency", func(t *testing.T) {
		e.srv.SetLatency(fakeazure.Target{Vault: "shop-kv"}, time.Minute)
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := once.GetSecret(short, "db-password", "", nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want deadline exceeded, got %v", err)
		}
		e.srv.SetLatency(fakeazure.Target{Vault: "shop-kv"}, 0)
		must(t, get(once))
	})
	t.Run("per client until cleared", func(t *testing.T) {
		e.srv.Fail(fakeazure.Target{ClientID: "someone-else"}, -1, fakeazure.Fault{Status: http.StatusInternalServerError})
		must(t, get(once))
		e.srv.Fail(fakeazure.Target{ClientID: appID}, -1, fakeazure.Fault{Status: http.StatusBadGateway})
		for range 3 {
			responseError(t, get(once), http.StatusBadGateway, "InternalServerError")
		}
		e.srv.ClearFaults()
		must(t, get(once))
	})
	t.Run("token endpoint", func(t *testing.T) {
		scope := policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}
		tokenTarget := fakeazure.Target{Endpoint: fakeazure.EndpointToken, ClientID: appID}
		e.srv.Fail(tokenTarget, 1, fakeazure.Fault{Status: http.StatusInternalServerError})
		_, err := e.credential(appID, e.tokenFile(namespace, saName, time.Hour), -1).GetToken(ctx, scope)
		var ae *azidentity.AuthenticationFailedError
		if !errors.As(err, &ae) || ae.RawResponse.StatusCode != http.StatusInternalServerError {
			t.Fatalf("want AuthenticationFailedError 500, got %v", err)
		}
		// azcore retries 429 from the token endpoint, honouring Retry-After.
		before := e.srv.Count(fakeazure.EndpointToken, appID)
		e.srv.Fail(tokenTarget, 1, fakeazure.Fault{Status: http.StatusTooManyRequests, RetryAfter: time.Second})
		_, err = e.credential(appID, e.tokenFile(namespace, saName, time.Hour), 3).GetToken(ctx, scope)
		must(t, err)
		if n := e.srv.Count(fakeazure.EndpointToken, appID) - before; n != 2 {
			t.Fatalf("%d token requests, want 2", n)
		}
	})
}

func TestCounters(t *testing.T) {
	e := newEnv(t, fakeazure.Options{})
	ctx := context.Background()
	_, err := e.srv.SetSecret("shop-kv", "a", "1", "")
	e.must(err)
	_, err = e.srv.SetSecret("shop-kv", "b", "2", "")
	e.must(err)
	e.must(e.srv.Grant("shop-kv", appID, fakeazure.RoleSecretsUser, "*"))
	c := e.defaultSecrets(-1)
	for _, n := range []string{"a", "b", "a"} {
		_, err := c.GetSecret(ctx, n, "", nil)
		e.must(err)
	}
	want := []fakeazure.CountEntry{
		{Endpoint: fakeazure.EndpointOpenIDConfiguration, N: 1},
		{Endpoint: fakeazure.EndpointToken, ClientID: appID, N: 1},
		{Vault: "shop-kv", Endpoint: fakeazure.EndpointGetSecret, ClientID: appID, N: 3},
		{Vault: "shop-kv", Endpoint: fakeazure.EndpointChallenge, N: 1},
	}
	got := e.srv.Counts()
	if len(got) != len(want) {
		t.Fatalf("counts = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("counts = %+v, want %+v", got, want)
		}
	}
	if n := e.srv.Count(fakeazure.EndpointGetSecret, fakeazure.AnyClient); n != 3 {
		t.Fatalf("Count(get, any) = %d", n)
	}
	e.srv.ResetCounts()
	if n := len(e.srv.Counts()); n != 0 {
		t.Fatalf("%d counters after reset", n)
	}
}

// Key Vault and Entra ID negotiate HTTP/2: an HTTP/2 client's concurrent
// requests share one connection, and the challenge comes over it.
func TestServesHTTP2(t *testing.T) {
	e := newEnv(t, fakeazure.Options{})
	for name, url := range map[string]string{
		"vault": e.vaultURL + "secrets/db-password?api-version=7.6",
		"entra": e.srv.AuthorityHost() + e.srv.TenantID() + "/v2.0/.well-known/openid-configuration",
	} {
		resp, err := e.srv.Client().Get(url)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("%s answered over %s, want HTTP/2", name, resp.Proto)
		}
	}
}
