// Package fakeazure emulates Azure Key Vault (data plane) and Entra ID (the
// client-assertion token endpoint) over HTTPS on loopback, well enough that
// the real azsecrets, azkeys and azidentity clients cannot tell it from Azure.
// It is test support for kvinject's unit tests, e2e tests and demo; it is not
// part of the shipped binary.
//
// # Layout
//
// Entra ID listens on its own port (AuthorityHost). Every vault listens on
// its own port too, because the SDK parses object ids by path segment and
// real vaults are host-based: a vault URL is "https://127.0.0.1:<port>/".
// One generated CA (see CA) signs every serving certificate (IP SANs
// 127.0.0.1 and ::1, DNS localhost). Trust it with Server.Client (an
// *http.Client, usable as azcore.ClientOptions.Transport), Server.CAPEM, or
// Server.WriteCAFile + SSL_CERT_FILE. TLS verification is never turned off.
//
// # Quick start
//
//	ca, _ := fakeazure.NewCA()
//	iss, _ := fakeazure.NewIssuer(ctx, fakeazure.IssuerOptions{CA: ca}) // or kube-apiserver
//	srv, _ := fakeazure.Start(ctx, fakeazure.Options{CA: ca, TenantID: tenant})
//	defer srv.Close()
//	vaultURL, _ := srv.AddVault("shop-kv")
//	srv.AddFederatedCredential(clientID, iss.URL(), "system:serviceaccount:shop:checkout")
//	srv.SetSecret("shop-kv", "db-password", "s3cret", "")
//	srv.Grant("shop-kv", clientID, fakeazure.RoleSecretsUser, "db-password") // or "*"
//	iss.WriteServiceAccountToken(tokenFile, "shop", "checkout", time.Hour)
//
// and on the client side (what the agent does):
//
//	co := azcore.ClientOptions{Transport: srv.Client(),
//		Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: srv.AuthorityHost()}}
//	cred, _ := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
//		ClientOptions: co, ClientID: clientID, TenantID: srv.TenantID(),
//		TokenFilePath: tokenFile, DisableInstanceDiscovery: true})
//	c, _ := azsecrets.NewClient(vaultURL, cred, &azsecrets.ClientOptions{
//		ClientOptions: azcore.ClientOptions{Transport: srv.Client()},
//		DisableChallengeResourceVerification: true})
//
// Environment-variable form: AZURE_AUTHORITY_HOST=srv.AuthorityHost(),
// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE, and
// SSL_CERT_FILE pointing at the CA file. DisableInstanceDiscovery and
// DisableChallengeResourceVerification are still required (no env vars).
//
// # Entra ID
//
// GET /{tenant}/v2.0/.well-known/openid-configuration, POST
// /{tenant}/oauth2/v2.0/token (client_credentials with a jwt-bearer
// client_assertion) and GET /{tenant}/discovery/v2.0/keys. The assertion is
// validated for real: app registered (else AADSTS700016), iss/sub/aud match a
// federated credential of the client_id (else HTTP 400 invalid_request
// AADSTS70021 naming issuer, subject and audience), signature (RS256/ES256…)
// against the issuer's JWKS found through its OIDC discovery document (else
// AADSTS50013 / AADSTS50166 when discovery fails), exp/nbf with
// Options.ClockSkew (else AADSTS700024). Issuers are fetched with
// Options.IssuerClient and must be loopback https URLs, as must their
// jwks_uri: the emulator refuses to contact anything else. Access tokens are
// ES256 JWTs signed by the emulator (aud https://vault.azure.net, iss
// https://sts.windows.net/{tenant}/, tid, appid = oid = client id), valid for
// Options.AccessTokenTTL.
//
// # AKS identity-binding token proxy
//
// StartTokenProxy(TokenProxyOptions{SNIName}) starts what azidentity's
// EnableAzureProxy talks to (AZURE_KUBERNETES_TOKEN_PROXY = URL(),
// AZURE_KUBERNETES_SNI_NAME = SNIName(), AZURE_KUBERNETES_CA_FILE holding
// CAPEM()): a listener with a CA of its own and a certificate for the SNI name
// only (a handshake with another server name, or none, fails), serving
// /{tenant}/v2.0/.well-known/openid-configuration and
// /{tenant}/oauth2/v2.0/token at the root (any other path: 404,
// EndpointProxyUnknown). A token request's assertion must be for
// IdentityBindingAudience, and AddIdentityBinding must map its client to the
// assertion's issuer (else 403 "no identity binding") and allow its subject
// (else 403 "no ClusterRoleBinding"); signature and time are checked as at
// Entra ID; federated credentials are not consulted. Counters:
// EndpointProxyOpenIDConfiguration, EndpointProxyToken; faults target them too.
//
// # Key Vault
//
// Requests without a token get 401 with
// `WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="https://vault.azure.net"`.
// Tokens are checked for signature, audience, issuer/tenant and expiry (401
// Unauthorized AKV100xx otherwise). Then RBAC: Grant(vault, clientID, role,
// object) with the built-in Role constants, per object name or "*" for the
// vault; a denial is 403 Forbidden, innererror ForbiddenByRbac, with the
// Caller/Action/Resource message Azure sends. Served: GET /secrets/{n}[/{v}],
// PUT /secrets/{n}, GET /secrets, GET /secrets/{n}/versions, GET
// /keys/{n}[/{v}], GET /keys, GET /keys/{n}/versions, GET
// /certificates/{n}[/{v}]. Not found: 404 SecretNotFound / KeyNotFound /
// CertificateNotFound. Lists page by Options.PageSize with absolute nextLinks.
//
// AddCertificate creates a certificate, its key and its managed secret (same
// name and version) issued by a test root → intermediate chain; the secret is
// a base64 PFX with an empty password (ContentTypePFX) or PEM with a PKCS#8
// key followed by leaf, intermediate, root (ContentTypePEM).
//
// # Faults and counters
//
// Fail(target, n, Fault{Status, RetryAfter, Reset, Body}) makes the next n
// matching requests (n < 0: all until ClearFaults) answer 429/5xx with the
// service's body, or reset the TCP connection. SetLatency(target, d) delays
// matching requests; SetOutage(true) answers 503 everywhere. A Target selects
// by vault, Endpoint and client id; vault faults hit authenticated requests
// (the challenge round trip is never faulted, only delayed or outaged).
// Count(endpoint, clientID) / CountVault / Counts report every request that
// arrived, faulted or not, for call-budget assertions.
package fakeazure
