package fakeazure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IdentityBindingAudience is the audience of the service-account token a pod
// presents to the AKS identity-binding token proxy: the audience AKS's
// workload-identity webhook projects for pods that use identity bindings
// (its --custom-token-endpoint-audience).
const IdentityBindingAudience = "api://AKSIdentityBinding"

// Endpoints of the token proxy, for counters and faults.
const (
	EndpointProxyOpenIDConfiguration Endpoint = "proxy.openid-configuration"
	EndpointProxyToken               Endpoint = "proxy.token"
	// EndpointProxyUnknown is any other path (answered 404).
	EndpointProxyUnknown Endpoint = "proxy.unknown"
)

// TokenProxyOptions configure StartTokenProxy.
type TokenProxyOptions struct {
	// SNIName is the TLS server name the proxy answers to
	// (AZURE_KUBERNETES_SNI_NAME): its certificate names only it, and a
	// handshake with any other server name, or none, fails. Required.
	SNIName string
	// Addr is the listen address. Default "<Options.Host>:0".
	Addr string
	// Audience is the audience client assertions must carry. Default
	// IdentityBindingAudience.
	Audience string
}

// TokenProxy emulates the AKS identity-binding token proxy: an HTTPS
// endpoint of its own (its own CA, a certificate for its SNI name only) to
// which azidentity, with WorkloadIdentityCredentialOptions.EnableAzureProxy,
// sends every request it would send to Entra ID, path and query unchanged:
//
//  1. GET /{tenant}/v2.0/.well-known/openid-configuration, answered with
//     the tenant's metadata as Entra ID answers it for the authority named
//     in the Host header (azidentity rewrites the URL, not the Host);
//  2. POST /{tenant}/oauth2/v2.0/token, a client-credentials grant whose
//     client assertion is the pod's service-account token for Audience.
//
// The proxy accepts the assertion when an identity binding maps the client
// to the token's issuer (the cluster) and lets its subject use it (AKS's
// ClusterRoleBinding with verb use-managed-identity), and its signature
// (the issuer's JWKS) and time range hold; it then issues the access token
// the token endpoint would. Federated credentials play no part: that is the
// point of identity bindings. Any other path is 404.
type TokenProxy struct {
	s   *Server
	l   *listener
	ca  *CA
	sni string
	aud string
}

// IdentityBinding lets a cluster's ServiceAccount sign in as a managed
// identity through the token proxy: on AKS, an identity binding of the
// identity to the cluster (az aks identity-binding create) and a
// ClusterRoleBinding granting the ServiceAccount verb use-managed-identity
// on resource <client id> of API group cid.wi.aks.azure.com.
type IdentityBinding struct {
	ClientID string
	// Issuer is the cluster's service-account issuer URL.
	Issuer string
	// Subject is system:serviceaccount:<namespace>:<name>.
	Subject string
}

// StartTokenProxy starts the emulated identity-binding token proxy of s; it
// stops with s.
func (s *Server) StartTokenProxy(o TokenProxyOptions) (*TokenProxy, error) {
	if o.SNIName == "" || strings.ContainsAny(o.SNIName, " /:") {
		return nil, fmt.Errorf("fakeazure: TokenProxyOptions.SNIName %q: want a DNS name", o.SNIName)
	}
	if o.Addr == "" {
		o.Addr = net.JoinHostPort(s.opts.Host.String(), "0")
	}
	if o.Audience == "" {
		o.Audience = IdentityBindingAudience
	}
	ca, err := NewCA()
	if err != nil {
		return nil, fmt.Errorf("fakeazure: token proxy: %w", err)
	}
	leaf, err := ca.leafFor(o.SNIName)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: token proxy: %w", err)
	}
	cfg := tlsConfig(*leaf)
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hello.ServerName != o.SNIName {
			return nil, fmt.Errorf("token proxy: server name %q is not %q", hello.ServerName, o.SNIName)
		}
		return nil, nil
	}
	p := &TokenProxy{s: s, ca: ca, sni: o.SNIName, aud: o.Audience}
	p.l, err = listen(o.Addr, cfg, http.HandlerFunc(p.serve), s.log)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: token proxy: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = p.l.ln.Close()
		return nil, errors.New("fakeazure: server is closed")
	}
	s.proxies = append(s.proxies, p)
	p.l.serve()
	return p, nil
}

// URL is the proxy's URL, for AZURE_KUBERNETES_TOKEN_PROXY:
// "https://<ip>:<port>/".
func (p *TokenProxy) URL() string { return p.l.url }

// SNIName is the server name to dial it with (AZURE_KUBERNETES_SNI_NAME).
func (p *TokenProxy) SNIName() string { return p.sni }

// CAPEM is the proxy's own CA certificate (for AZURE_KUBERNETES_CA_FILE or
// _DATA): not the emulator's CA, which the proxy's certificate does not
// chain to.
func (p *TokenProxy) CAPEM() []byte { return p.ca.PEM() }

// AddIdentityBinding registers the app b.ClientID (if new) and lets b.Subject
// of the cluster b.Issuer sign in as it through the token proxy.
func (s *Server) AddIdentityBinding(b IdentityBinding) error {
	if b.ClientID == "" || b.Issuer == "" || b.Subject == "" {
		return errors.New("fakeazure: identity binding needs ClientID, Issuer and Subject")
	}
	if err := checkLoopbackURL(b.Issuer); err != nil {
		return fmt.Errorf("fakeazure: identity binding issuer: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.apps[b.ClientID]; !ok {
		s.apps[b.ClientID] = nil
	}
	s.bindings = append(s.bindings, b)
	return nil
}

func (p *TokenProxy) serve(w http.ResponseWriter, r *http.Request) {
	s := p.s
	ep, ok := s.entraRequest(w, r, "token proxy request", map[string]Endpoint{
		"v2.0/.well-known/openid-configuration": EndpointProxyOpenIDConfiguration,
		"oauth2/v2.0/token":                     EndpointProxyToken,
	}, EndpointProxyToken, EndpointProxyUnknown)
	if !ok {
		return
	}
	if ep == EndpointProxyOpenIDConfiguration {
		// azidentity's proxy transport rewrites the URL but keeps the
		// request's Host, the authority's: the metadata is for that
		// authority, as MSAL checks, and its token endpoint is rewritten
		// to the proxy in turn.
		s.serveOpenIDConfiguration(w, "https://"+r.Host)
		return
	}
	if r.Method != http.MethodPost {
		s.writeEntraError(w, http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts POST requests.")
		return
	}
	clientID, assertion, ok := s.tokenRequest(w, r)
	if !ok {
		return
	}
	var claims jwt.RegisteredClaims
	tok, _, err := jwt.NewParser().ParseUnverified(assertion, &claims)
	if err != nil || claims.Issuer == "" {
		s.writeEntraError(w, http.StatusBadRequest, "invalid_request", 50027, "JWT token is invalid or malformed.")
		return
	}
	if !slices.Contains(claims.Audience, p.aud) {
		writeProxyError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf(
			"the token proxy accepts service-account tokens for audience %s; this one is for %q", p.aud, strings.Join(claims.Audience, ",")))
		return
	}
	s.mu.Lock()
	bound := slices.ContainsFunc(s.bindings, func(b IdentityBinding) bool { return b.ClientID == clientID && b.Issuer == claims.Issuer })
	allowed := slices.Contains(s.bindings, IdentityBinding{ClientID: clientID, Issuer: claims.Issuer, Subject: claims.Subject})
	s.mu.Unlock()
	switch {
	case !bound:
		writeProxyError(w, http.StatusForbidden, "unauthorized_client", fmt.Sprintf(
			"no identity binding maps managed identity %s to the cluster of issuer %s", clientID, claims.Issuer))
		return
	case !allowed:
		writeProxyError(w, http.StatusForbidden, "unauthorized_client", fmt.Sprintf(
			"%s may not use managed identity %s: no ClusterRoleBinding grants it verb use-managed-identity on cid.wi.aks.azure.com/%s", claims.Subject, clientID, clientID))
		return
	}
	if s.verifyAssertion(w, r, assertion, tok, claims) {
		s.writeAccessToken(w, clientID)
	}
}

// writeProxyError is an OAuth error of the proxy's own: error and
// error_description, which MSAL reads, without an Entra error code.
func writeProxyError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

// leafFor issues a serving certificate for one DNS name and no address.
func (c *CA) leafFor(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
