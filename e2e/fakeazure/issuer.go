package fakeazure

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IssuerOptions configure a test OIDC issuer.
type IssuerOptions struct {
	// CA signs the serving certificate. Default: a new CA (see Issuer.CA).
	CA *CA
	// Algorithm is "RS256" (default, as kube-apiserver) or "ES256".
	Algorithm string
	// Addr is the loopback listen address. Default "127.0.0.1:0".
	Addr string
}

// Issuer is a stand-in for kube-apiserver's service-account issuer: it
// serves /.well-known/openid-configuration and /openid/v1/jwks over HTTPS on
// loopback and mints service-account-like JWTs.
type Issuer struct {
	ca  *CA
	alg string
	l   *listener

	mu   sync.Mutex
	keys []issuerKey // current first; older keys stay in the JWKS
}

type issuerKey struct {
	kid  string
	priv crypto.Signer
}

// NewIssuer starts an issuer; it stops when ctx is done or Close is called.
func NewIssuer(ctx context.Context, opts IssuerOptions) (*Issuer, error) {
	if opts.Algorithm == "" {
		opts.Algorithm = "RS256"
	}
	if opts.Algorithm != "RS256" && opts.Algorithm != "ES256" {
		return nil, fmt.Errorf("fakeazure: IssuerOptions.Algorithm %q: use RS256 or ES256", opts.Algorithm)
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ca, tlsCfg, err := serving(opts.CA, nil)
	if err != nil {
		return nil, err
	}
	i := &Issuer{ca: ca, alg: opts.Algorithm}
	if err := i.RotateKey(); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.serveDiscovery)
	mux.HandleFunc("GET /openid/v1/jwks", i.serveJWKS)
	if i.l, err = listen(opts.Addr, tlsCfg, mux, discardLogger()); err != nil {
		return nil, fmt.Errorf("fakeazure: issuer: %w", err)
	}
	i.l.serve()
	context.AfterFunc(ctx, i.Close)
	return i, nil
}

// URL returns the issuer identifier, "https://127.0.0.1:<port>" (the iss
// claim; a federated credential must name it exactly).
func (i *Issuer) URL() string { return strings.TrimSuffix(i.l.url, "/") }

// CA returns the CA of the issuer's serving certificate.
func (i *Issuer) CA() *CA { return i.ca }

// Client returns an HTTP client that trusts the issuer's CA; pass it as
// Options.IssuerClient when the Server uses another CA.
func (i *Issuer) Client() *http.Client { return i.ca.Client() }

// Close stops the issuer.
func (i *Issuer) Close() { i.l.close() }

// RotateKey generates a new signing key. Tokens minted afterwards use it;
// the JWKS keeps serving the older keys too, as kube-apiserver does with
// several --service-account-key-file.
func (i *Issuer) RotateKey() error {
	var priv crypto.Signer
	var err error
	if i.alg == "ES256" {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return fmt.Errorf("fakeazure: issuer key: %w", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = append([]issuerKey{{kid: randomHex(16), priv: priv}}, i.keys...)
	return nil
}

func (i *Issuer) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.URL(),
		"jwks_uri":                              i.URL() + "/openid/v1/jwks",
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{i.alg},
	})
}

// serveJWKS answers like kube-apiserver: application/jwk-set+json, and 406
// to a client that does not accept it.
func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "application/jwk-set+json") && !strings.Contains(a, "*/*") {
		http.Error(w, "406: Not Acceptable\n\nAvailable representations: application/jwk-set+json", http.StatusNotAcceptable)
		return
	}
	i.mu.Lock()
	set := jwks{}
	for _, k := range i.keys {
		j := publicJWK(k.kid, k.priv.Public())
		j.Alg = i.alg
		set.Keys = append(set.Keys, j)
	}
	i.mu.Unlock()
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_ = json.NewEncoder(w).Encode(set)
}

// Mint returns a JWT from this issuer with the given subject and audience,
// valid from now for ttl (a negative ttl gives an expired token).
func (i *Issuer) Mint(sub, aud string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": i.URL(),
		"sub": sub,
		"aud": []string{aud},
		"iat": now.Unix(),
		"nbf": min(now.Unix(), now.Add(ttl).Unix()-1),
		"exp": now.Add(ttl).Unix(),
		"jti": newUUID(),
	}
	if ns, sa, ok := strings.Cut(strings.TrimPrefix(sub, "system:serviceaccount:"), ":"); ok && strings.HasPrefix(sub, "system:serviceaccount:") {
		claims["kubernetes.io"] = map[string]any{
			"namespace":      ns,
			"serviceaccount": map[string]any{"name": sa, "uid": newUUID()},
		}
	}
	i.mu.Lock()
	k := i.keys[0]
	i.mu.Unlock()
	method := jwt.SigningMethod(jwt.SigningMethodRS256)
	if i.alg == "ES256" {
		method = jwt.SigningMethodES256
	}
	t := jwt.NewWithClaims(method, claims)
	t.Header["kid"] = k.kid
	signed, err := t.SignedString(k.priv)
	if err != nil {
		return "", fmt.Errorf("fakeazure: sign token: %w", err)
	}
	return signed, nil
}

// MintServiceAccount mints a token for system:serviceaccount:<ns>:<name>
// with audience api://AzureADTokenExchange, like a projected token volume.
func (i *Issuer) MintServiceAccount(namespace, name string, ttl time.Duration) (string, error) {
	return i.Mint("system:serviceaccount:"+namespace+":"+name, TokenExchangeAudience, ttl)
}

// WriteServiceAccountToken mints like MintServiceAccount and writes the token
// to path (mode 0600, no trailing newline, as kubelet writes it), for
// AZURE_FEDERATED_TOKEN_FILE.
func (i *Issuer) WriteServiceAccountToken(path, namespace, name string, ttl time.Duration) error {
	t, err := i.MintServiceAccount(namespace, name, ttl)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(t), 0o600); err != nil {
		return fmt.Errorf("fakeazure: write token file: %w", err)
	}
	return nil
}
