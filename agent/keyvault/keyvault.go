// Package keyvault reads Key Vault objects with workload identity: one
// credential and one HTTP transport per process, one SDK client per vault.
//
// Each Get is a single attempt: the SDK's own retries are off, because the
// agent retries whole objects against its own deadline (see Classify).
package keyvault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/kvinject/kvinject/agent/config"
)

// MaxConcurrent bounds the requests one agent has in flight: enough for the
// objects of a typical pod to be fetched in one round, few enough that a pod
// with hundreds of objects does not open hundreds of connections.
const MaxConcurrent = 32

// tryTimeout bounds one HTTP request, so a hung connection becomes a
// retryable error instead of eating the whole deadline.
const tryTimeout = 30 * time.Second

// Ref is one GET: the unit of deduplication. A cert and a secret of the same
// name share a Ref, because a certificate is read through its backing secret.
type Ref struct {
	Vault string // normalized: https://host[:port]/ without a path
	// Collection is "secrets" or "keys".
	Collection string
	Name       string
	Version    string
}

// RefOf returns the GET that reads obj.
func RefOf(obj config.Object) (Ref, error) {
	u, err := url.Parse(obj.Vault)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return Ref{}, fmt.Errorf("vault %q: want an https URL without a path, like https://myvault.vault.azure.net/", obj.Vault)
	}
	r := Ref{Vault: "https://" + strings.ToLower(u.Host) + "/", Name: obj.Name, Version: obj.Version}
	switch obj.Kind {
	case config.KindSecret, config.KindCert:
		r.Collection = "secrets"
	case config.KindKey:
		r.Collection = "keys"
	case config.KindPublicCert:
		r.Collection = "certificates"
	default:
		return Ref{}, fmt.Errorf("kind %q: want secret, cert, key or public-cert", obj.Kind)
	}
	if obj.Name == "" {
		return Ref{}, errors.New("object name is empty")
	}
	return r, nil
}

func (r Ref) String() string {
	s := r.Vault + r.Collection + "/" + r.Name
	if r.Version != "" {
		s += "/" + r.Version
	}
	return s
}

// Object is what one Get read. Value holds a secret: it goes to package
// render and nowhere else (no log, no error).
type Object struct {
	// Value and ContentType of a secret, or of a certificate's backing secret.
	Value       string
	ContentType string
	// Key is the JSON web key of a KindKey object.
	Key *JWK
	// Cer is the DER certificate of a KindPublicCert object.
	Cer []byte
}

// JWK is the public part of a Key Vault JSON web key.
type JWK struct {
	Kty, Crv   string
	N, E, X, Y []byte
}

// Identity is the workload identity the agent signs in as.
type Identity struct {
	ClientID, TenantID, TokenFile string
	// TokenProxy is the AKS identity-binding token proxy the credential
	// sends its sign-in requests to (AZURE_KUBERNETES_TOKEN_PROXY), or ""
	// to sign in at Entra ID directly.
	TokenProxy string
}

// TokenProxyEnv is the variable, read by azidentity itself in proxy mode
// together with AZURE_KUBERNETES_SNI_NAME and AZURE_KUBERNETES_CA_FILE,
// that the injector sets on the agent of a pod that uses identity bindings.
const TokenProxyEnv = "AZURE_KUBERNETES_TOKEN_PROXY"

// IdentityFromEnv reads the variables the injector sets on the agent.
func IdentityFromEnv(getenv func(string) string) (Identity, error) {
	id := Identity{
		ClientID:   getenv("AZURE_CLIENT_ID"),
		TenantID:   getenv("AZURE_TENANT_ID"),
		TokenFile:  getenv("AZURE_FEDERATED_TOKEN_FILE"),
		TokenProxy: getenv(TokenProxyEnv),
	}
	var missing []string
	for _, name := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"} {
		if getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return id, fmt.Errorf("workload identity: %s not set; the injector sets them from the pod's client-id/tenant-id annotations or its ServiceAccount's azure.workload.identity/* annotations", strings.Join(missing, ", "))
	}
	return id, nil
}

// Client reads objects from any number of vaults.
type Client struct {
	tenantID string
	noGuess  atomic.Bool // SignInAhead's guess was refused
	http     *http.Client
	cred     azcore.TokenCredential
	options  azcore.ClientOptions
	cloud    config.Cloud

	mu      sync.Mutex
	secrets map[string]*azsecrets.Client
	keys    map[string]*azkeys.Client
	certs   map[string]*azcertificates.Client
	gates   map[string]*challengeGate // by collection and vault: one per SDK client
}

// New builds the one credential and transport of the process. The authority
// is c.AuthorityHost, else that of the known cloud c.Name, else
// AZURE_AUTHORITY_HOST, else Azure's public cloud.
//
// With id.TokenProxy (AKS identity bindings), the credential is built with
// EnableAzureProxy: azidentity then reads AZURE_KUBERNETES_TOKEN_PROXY,
// AZURE_KUBERNETES_SNI_NAME and AZURE_KUBERNETES_CA_FILE from the process
// environment and sends every sign-in request (metadata and token) to the
// proxy, path and query kept, over its own transport: TLS with that server
// name, trusting only that CA file (re-read when it changes). The vault
// clients keep this process's transport.
func New(c config.Cloud, id Identity) (*Client, error) {
	hc := newHTTPClient()
	opts := azcore.ClientOptions{
		Transport: hc,
		Retry:     policy.RetryOptions{MaxRetries: -1, TryTimeout: tryTimeout},
		// No telemetry header beyond the SDK default; no request logging.
	}
	credOpts := opts
	host := c.AuthorityHost
	if known, ok := config.KnownCloud(c.Name); host == "" && c.Name != "" && ok {
		host = known.AuthorityHost
	}
	if host != "" {
		credOpts.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: host}
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions:            credOpts,
		ClientID:                 id.ClientID,
		TenantID:                 id.TenantID,
		TokenFilePath:            id.TokenFile,
		DisableInstanceDiscovery: c.DisableInstanceDiscovery,
		EnableAzureProxy:         id.TokenProxy != "",
	})
	if err != nil {
		return nil, fmt.Errorf("workload identity credential: %w", err)
	}
	return &Client{
		tenantID: id.TenantID, http: hc, cred: &rememberingCredential{cred: cred}, options: opts, cloud: c,
		secrets: map[string]*azsecrets.Client{},
		keys:    map[string]*azkeys.Client{},
		certs:   map[string]*azcertificates.Client{},
		gates:   map[string]*challengeGate{},
	}, nil
}

// newHTTPClient is the single transport of the process, shared by the
// credential and every vault client. It trusts the system roots (and so
// SSL_CERT_FILE). Idle connections serve one cycle; a sidecar drops them
// between cycles (CloseIdleConnections).
func newHTTPClient() *http.Client {
	return &http.Client{Transport: gateTransport{base: &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   MaxConcurrent,
		IdleConnTimeout:       60 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: tryTimeout,
		ExpectContinueTimeout: time.Second,
	}}}
}

// SignInAhead starts signing in for the vault resource of the cloud
// (https://<VaultSuffix>), so that the token is ready when the vaults'
// challenges come back, instead of being asked for after them. Errors are
// left to the requests that need the token. After a refusal (a wrong guess,
// or an identity Entra ID rejects) it stops guessing.
func (c *Client) SignInAhead(ctx context.Context) {
	if c.cloud.VaultSuffix == "" || c.noGuess.Load() {
		return
	}
	opts := policy.TokenRequestOptions{
		Scopes:    []string{"https://" + c.cloud.VaultSuffix + "/.default"},
		TenantID:  c.tenantID,
		EnableCAE: true, // as Key Vault's clients ask, so MSAL's cache serves them
	}
	go func() {
		_, err := c.cred.GetToken(ctx, opts)
		var authErr *azidentity.AuthenticationFailedError
		if errors.As(err, &authErr) && authErr.RawResponse != nil && !retryableStatus(authErr.RawResponse.StatusCode) {
			c.noGuess.Store(true)
		}
	}()
}

// CloseIdleConnections drops the kept-alive connections, for an agent that
// will be idle for a while.
func (c *Client) CloseIdleConnections() {
	c.http.CloseIdleConnections()
}

func (c *Client) secretsClient(vault string) (*azsecrets.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc, ok := c.secrets[vault]; ok {
		return sc, nil
	}
	sc, err := azsecrets.NewClient(vault, c.cred, &azsecrets.ClientOptions{
		ClientOptions:                        c.options,
		DisableChallengeResourceVerification: c.cloud.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", vault, err)
	}
	c.secrets[vault] = sc
	return sc, nil
}

func (c *Client) keysClient(vault string) (*azkeys.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kc, ok := c.keys[vault]; ok {
		return kc, nil
	}
	kc, err := azkeys.NewClient(vault, c.cred, &azkeys.ClientOptions{
		ClientOptions:                        c.options,
		DisableChallengeResourceVerification: c.cloud.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", vault, err)
	}
	c.keys[vault] = kc
	return kc, nil
}

// gate returns the challenge gate of r's SDK client.
func (c *Client) gate(r Ref) *challengeGate {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := r.Collection + " " + r.Vault
	g, ok := c.gates[k]
	if !ok {
		g = newChallengeGate(strings.TrimSuffix(strings.TrimPrefix(r.Vault, "https://"), "/"))
		c.gates[k] = g
	}
	return g
}

// Get reads r once. version is the version Key Vault returned. Until the
// vault's client has learned the vault's challenge, the first Get to it goes
// alone (see challengeGate).
func (c *Client) Get(ctx context.Context, r Ref) (obj Object, version string, err error) {
	g := c.gate(r)
	first, err := g.enter(ctx)
	if err != nil {
		return obj, "", err
	}
	if first {
		defer g.open()
		ctx = context.WithValue(ctx, gateKey{}, g)
	}
	switch r.Collection {
	case "secrets":
		sc, err := c.secretsClient(r.Vault)
		if err != nil {
			return obj, "", err
		}
		resp, err := sc.GetSecret(ctx, r.Name, r.Version, nil)
		if err != nil {
			return obj, "", err
		}
		if resp.Value == nil {
			return obj, "", errors.New("response has no value")
		}
		obj.Value = *resp.Value
		if resp.ContentType != nil {
			obj.ContentType = *resp.ContentType
		}
		if resp.ID != nil {
			version = resp.ID.Version()
		}
		return obj, version, nil
	case "keys":
		kc, err := c.keysClient(r.Vault)
		if err != nil {
			return obj, "", err
		}
		resp, err := kc.GetKey(ctx, r.Name, r.Version, nil)
		if err != nil {
			return obj, "", err
		}
		k := resp.Key
		if k == nil || k.Kty == nil {
			return obj, "", errors.New("response has no key")
		}
		obj.Key = &JWK{Kty: string(*k.Kty), N: k.N, E: k.E, X: k.X, Y: k.Y}
		if k.Crv != nil {
			obj.Key.Crv = string(*k.Crv)
		}
		if k.KID != nil {
			version = k.KID.Version()
		}
		return obj, version, nil
	case "certificates":
		cc, err := c.certificatesClient(r.Vault)
		if err != nil {
			return obj, "", err
		}
		resp, err := cc.GetCertificate(ctx, r.Name, r.Version, nil)
		if err != nil {
			return obj, "", err
		}
		if len(resp.CER) == 0 {
			return obj, "", errors.New("response has no certificate")
		}
		obj.Cer = resp.CER
		if resp.ID != nil {
			version = resp.ID.Version()
		}
		return obj, version, nil
	}
	return obj, "", fmt.Errorf("unknown collection %q", r.Collection)
}

func (c *Client) certificatesClient(vault string) (*azcertificates.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.certs[vault]; ok {
		return cc, nil
	}
	cc, err := azcertificates.NewClient(vault, c.cred, &azcertificates.ClientOptions{
		ClientOptions:                        c.options,
		DisableChallengeResourceVerification: c.cloud.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", vault, err)
	}
	c.certs[vault] = cc
	return cc, nil
}
