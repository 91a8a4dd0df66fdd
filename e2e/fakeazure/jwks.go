package fakeazure

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// jwk is a public JSON Web Key; byte fields are unpadded base64url.
type jwk struct {
	Kid    string   `json:"kid,omitempty"`
	Kty    string   `json:"kty"`
	Use    string   `json:"use,omitempty"`
	Alg    string   `json:"alg,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
}

type jwks struct {
	Keys []jwk `json:"keys"`
}

var b64 = base64.RawURLEncoding

func publicJWK(kid string, pub crypto.PublicKey) jwk {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return jwk{Kid: kid, Kty: "RSA", Use: "sig", Alg: "RS256",
			N: b64.EncodeToString(k.N.Bytes()), E: b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		x, y := make([]byte, size), make([]byte, size)
		k.X.FillBytes(x)
		k.Y.FillBytes(y)
		crv, alg := k.Curve.Params().Name, "ES256"
		switch crv {
		case "P-384":
			alg = "ES384"
		case "P-521":
			alg = "ES512"
		}
		return jwk{Kid: kid, Kty: "EC", Use: "sig", Alg: alg, Crv: crv, X: b64.EncodeToString(x), Y: b64.EncodeToString(y)}
	}
	panic(fmt.Sprintf("fakeazure: unsupported key type %T", pub))
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	dec := func(s string) (*big.Int, error) {
		b, err := b64.DecodeString(strings.TrimRight(s, "="))
		if err != nil {
			return nil, err
		}
		return new(big.Int).SetBytes(b), nil
	}
	switch k.Kty {
	case "RSA":
		n, err := dec(k.N)
		if err != nil {
			return nil, fmt.Errorf("jwk %q: n: %w", k.Kid, err)
		}
		e, err := dec(k.E)
		if err != nil {
			return nil, fmt.Errorf("jwk %q: e: %w", k.Kid, err)
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		var c elliptic.Curve
		switch k.Crv {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return nil, fmt.Errorf("jwk %q: unsupported curve %q", k.Kid, k.Crv)
		}
		x, err := dec(k.X)
		if err != nil {
			return nil, fmt.Errorf("jwk %q: x: %w", k.Kid, err)
		}
		y, err := dec(k.Y)
		if err != nil {
			return nil, fmt.Errorf("jwk %q: y: %w", k.Kid, err)
		}
		return &ecdsa.PublicKey{Curve: c, X: x, Y: y}, nil
	}
	return nil, fmt.Errorf("jwk %q: unsupported kty %q", k.Kid, k.Kty)
}

// jwksCache holds the signing keys of federated issuers, found through OIDC
// discovery. An unknown kid triggers a refetch (key rotation).
type jwksCache struct {
	client *http.Client
	mu     sync.Mutex
	byIss  map[string]*issuerKeys
}

type issuerKeys struct {
	keys map[string]crypto.PublicKey // by kid ("" when the JWK has none)
}

func newJWKSCache(c *http.Client) *jwksCache {
	return &jwksCache{client: c, byIss: map[string]*issuerKeys{}}
}

// keys returns the candidate keys for kid (all keys if kid is empty or the
// issuer's keys carry no kid).
func (c *jwksCache) keys(ctx context.Context, issuer, kid string) ([]crypto.PublicKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock() // serialises fetches; fine for a test emulator
	ik := c.byIss[issuer]
	if ik == nil || (kid != "" && ik.keys[kid] == nil) {
		fresh, err := c.fetch(ctx, issuer)
		if err != nil {
			return nil, err
		}
		ik = fresh
		c.byIss[issuer] = ik
	}
	if k, ok := ik.keys[kid]; ok && kid != "" {
		return []crypto.PublicKey{k}, nil
	}
	all := make([]crypto.PublicKey, 0, len(ik.keys))
	for _, k := range ik.keys {
		all = append(all, k)
	}
	return all, nil
}

func (c *jwksCache) fetch(ctx context.Context, issuer string) (*issuerKeys, error) {
	discovery := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := c.getJSON(ctx, discovery, &doc); err != nil {
		return nil, err
	}
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("discovery document at %s names issuer %q, want %q", discovery, doc.Issuer, issuer)
	}
	if doc.JWKSURI == "" {
		return nil, fmt.Errorf("discovery document at %s has no jwks_uri", discovery)
	}
	var set jwks
	if err := c.getJSON(ctx, doc.JWKSURI, &set); err != nil {
		return nil, err
	}
	ik := &issuerKeys{keys: map[string]crypto.PublicKey{}}
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS at %s: %w", doc.JWKSURI, err)
		}
		ik.keys[k.Kid] = pub
	}
	if len(ik.keys) == 0 {
		return nil, fmt.Errorf("JWKS at %s has no signing keys", doc.JWKSURI)
	}
	return ik, nil
}

func (c *jwksCache) getJSON(ctx context.Context, u string, v any) error {
	// Tests may only ever contact loopback: kube-apiserver advertises an
	// unroutable jwks_uri unless told otherwise, so never follow one blindly.
	if err := checkLoopbackURL(u); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	// kube-apiserver answers 406 to its JWKS unless jwk-set+json is acceptable.
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decode: %w", u, err)
	}
	return nil
}

// checkLoopbackURL accepts only https URLs on a loopback IP or localhost.
func checkLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url %q: %w", raw, err)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("url %q: only https is supported", raw)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("url %q: refusing to contact a non-loopback host (tests may only reach 127.0.0.1/::1; for kube-apiserver set --service-account-jwks-uri to a loopback URL)", raw)
	}
	return nil
}
