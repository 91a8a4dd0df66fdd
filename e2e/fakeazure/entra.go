package fakeazure

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// entraError is the body Entra ID sends with a failed token request.
type entraError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes"`
	Timestamp        string `json:"timestamp"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri,omitempty"`
}

// writeEntraError writes an Entra error; description starts with
// "AADSTS<code>: ".
func (s *Server) writeEntraError(w http.ResponseWriter, status int, errCode string, code int, description string) {
	now := time.Now().UTC()
	trace, corr := newUUID(), newUUID()
	body := entraError{
		Error: errCode,
		ErrorDescription: fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			code, description, trace, corr, now.Format("2006-01-02 15:04:05Z")),
		ErrorCodes:    []int{code},
		Timestamp:     now.Format("2006-01-02 15:04:05Z"),
		TraceID:       trace,
		CorrelationID: corr,
		ErrorURI:      strings.TrimSuffix(s.entra.url, "/") + "/error?code=" + fmt.Sprint(code),
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveEntra routes /{tenant}/v2.0/.well-known/openid-configuration,
// /{tenant}/oauth2/v2.0/token and /{tenant}/discovery/v2.0/keys.
func (s *Server) serveEntra(w http.ResponseWriter, r *http.Request) {
	ep, ok := s.entraRequest(w, r, "entra request", map[string]Endpoint{
		"v2.0/.well-known/openid-configuration": EndpointOpenIDConfiguration,
		"oauth2/v2.0/token":                     EndpointToken,
		"discovery/v2.0/keys":                   EndpointEntraKeys,
	}, EndpointToken, "")
	if !ok {
		return
	}
	switch ep {
	case EndpointOpenIDConfiguration:
		s.serveOpenIDConfiguration(w, strings.TrimSuffix(s.entra.url, "/"))
	case EndpointEntraKeys:
		writeJSON(w, http.StatusOK, jwks{Keys: []jwk{publicJWK(s.tokenKid, s.tokenKey.Public())}})
	case EndpointToken:
		if r.Method != http.MethodPost {
			s.writeEntraError(w, http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts POST requests.")
			return
		}
		s.serveToken(w, r)
	}
}

// serveOpenIDConfiguration sends the tenant's metadata for the authority
// origin (https://host[:port]), which MSAL checks against the authority it
// was given.
func (s *Server) serveOpenIDConfiguration(w http.ResponseWriter, origin string) {
	base := origin + "/" + s.opts.TenantID
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                base + "/v2.0",
		"request_uri_parameter_supported":       false,
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
	})
}

// serveToken implements the client-credentials grant with a federated
// client assertion, validated the way Entra ID does.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	clientID, assertion, ok := s.tokenRequest(w, r)
	if !ok {
		return
	}

	s.mu.Lock()
	fics, registered := s.apps[clientID]
	fics = slices.Clone(fics)
	s.mu.Unlock()
	if !registered {
		s.writeEntraError(w, http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf(
			"Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
			clientID, s.opts.TenantID))
		return
	}

	var claims jwt.RegisteredClaims
	tok, _, err := jwt.NewParser().ParseUnverified(assertion, &claims)
	if err != nil || claims.Issuer == "" {
		s.writeEntraError(w, http.StatusBadRequest, "invalid_request", 50027, "JWT token is invalid or malformed.")
		return
	}
	aud := ""
	if len(claims.Audience) > 0 {
		aud = claims.Audience[0]
	}
	if !slices.ContainsFunc(fics, func(fc FederatedCredential) bool {
		return fc.Issuer == claims.Issuer && fc.Subject == claims.Subject && slices.Contains(claims.Audience, fc.Audience)
	}) {
		s.writeEntraError(w, http.StatusBadRequest, "invalid_request", 70021, fmt.Sprintf(
			"No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
			claims.Issuer, claims.Subject, aud))
		return
	}

	if s.verifyAssertion(w, r, assertion, tok, claims) {
		s.writeAccessToken(w, clientID)
	}
}

// tokenRequest reads the form of a client-credentials request with a
// federated client assertion, or answers with Entra's error.
func (s *Server) tokenRequest(w http.ResponseWriter, r *http.Request) (clientID, assertion string, ok bool) {
	f := r.PostForm
	if gt := f.Get("grant_type"); gt != "client_credentials" {
		s.writeEntraError(w, http.StatusBadRequest, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'.", gt))
		return "", "", false
	}
	clientID = f.Get("client_id")
	if clientID == "" {
		s.writeEntraError(w, http.StatusBadRequest, "invalid_request", 900144,
			"The request body must contain the following parameter: 'client_id'.")
		return "", "", false
	}
	// azidentity sends the token file verbatim, trailing newline included.
	assertion = strings.TrimSpace(f.Get("client_assertion"))
	if assertion == "" || f.Get("client_assertion_type") != assertionType {
		s.writeEntraError(w, http.StatusUnauthorized, "invalid_client", 7000218,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return "", "", false
	}
	if !slices.Contains(strings.Fields(f.Get("scope")), VaultResource+"/.default") {
		s.writeEntraError(w, http.StatusBadRequest, "invalid_resource", 500011, fmt.Sprintf(
			"The resource principal named %s was not found in the tenant named %s. This emulator only issues tokens for %s/.default.",
			f.Get("scope"), s.opts.TenantID, VaultResource))
		return "", "", false
	}
	return clientID, assertion, true
}

// verifyAssertion checks the assertion's signature against its issuer's
// keys (OIDC discovery and JWKS) and its time range, or answers with
// Entra's error.
func (s *Server) verifyAssertion(w http.ResponseWriter, r *http.Request, assertion string, tok *jwt.Token, claims jwt.RegisteredClaims) bool {
	kid, _ := tok.Header["kid"].(string)
	keys, err := s.issuers.keys(r.Context(), claims.Issuer, kid)
	if err != nil {
		s.log.Warn("fakeazure: issuer discovery failed", "issuer", claims.Issuer, "err", err)
		s.writeEntraError(w, http.StatusUnauthorized, "invalid_client", 50166, fmt.Sprintf(
			"Request to External OIDC endpoint failed. (%v)", err))
		return false
	}
	if !verifiesWithAny(assertion, keys) {
		s.writeEntraError(w, http.StatusUnauthorized, "invalid_client", 5002738, fmt.Sprintf(
			"Invalid JWT token. AADSTS50013: Assertion failed signature validation. [Reason - The key was not found or the signature did not verify., Thumbprint of key used by client: '%s', Found key 'Start=..., End=...'.]", kid))
		return false
	}

	now := time.Now()
	skew := s.opts.ClockSkew
	if claims.ExpiresAt == nil || now.After(claims.ExpiresAt.Add(skew)) ||
		(claims.NotBefore != nil && now.Add(skew).Before(claims.NotBefore.Time)) {
		from := time.Unix(0, 0)
		if claims.NotBefore != nil {
			from = claims.NotBefore.Time
		}
		exp := time.Unix(0, 0)
		if claims.ExpiresAt != nil {
			exp = claims.ExpiresAt.Time
		}
		const layout = "2006-01-02T15:04:05.0000000Z"
		s.writeEntraError(w, http.StatusUnauthorized, "invalid_client", 700024, fmt.Sprintf(
			"Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
			now.UTC().Format(layout), from.UTC().Format(layout), exp.UTC().Format(layout)))
		return false
	}
	return true
}

// writeAccessToken issues and sends an access token for clientID.
func (s *Server) writeAccessToken(w http.ResponseWriter, clientID string) {
	at, expiresIn, err := s.issueAccessToken(clientID)
	if err != nil {
		s.writeEntraError(w, http.StatusInternalServerError, "server_error", 90033, "A transient error has occurred. Please try again.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     expiresIn,
		"ext_expires_in": expiresIn,
		"access_token":   at,
	})
}

// accessClaims are the claims of an emulated Entra v1 access token for Key
// Vault.
type accessClaims struct {
	jwt.RegisteredClaims
	TenantID string `json:"tid"`
	AppID    string `json:"appid"`
	ObjectID string `json:"oid"`
	IDType   string `json:"idtyp"`
	Version  string `json:"ver"`
}

// stsIssuer is the issuer of v1 access tokens for the tenant, as Key Vault
// sees it in real tokens (it is only compared, never contacted).
func (s *Server) stsIssuer() string { return "https://sts.windows.net/" + s.opts.TenantID + "/" }

func (s *Server) issueAccessToken(clientID string) (string, int, error) {
	now := time.Now()
	ttl := s.opts.AccessTokenTTL
	c := accessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.stsIssuer(),
			Subject:   clientID,
			Audience:  jwt.ClaimStrings{VaultResource},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Minute)),
			IssuedAt:  jwt.NewNumericDate(now.Add(-5 * time.Minute)),
			ID:        randomHex(16),
		},
		TenantID: s.opts.TenantID,
		AppID:    clientID,
		ObjectID: clientID,
		IDType:   "app",
		Version:  "1.0",
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	t.Header["kid"] = s.tokenKid
	signed, err := t.SignedString(s.tokenKey)
	if err != nil {
		return "", 0, err
	}
	return signed, int(ttl/time.Second) - 1, nil
}

// MintAccessToken returns an access token for clientID signed by the emulator,
// as the token endpoint would issue it. Tests use it to call Key Vault
// without a federated credential.
func (s *Server) MintAccessToken(clientID string) (string, error) {
	t, _, err := s.issueAccessToken(clientID)
	return t, err
}

var errNoToken = errors.New("AKV10000: Request is missing a Bearer or PoP token.")

// verifyAccessToken checks signature, audience, issuer/tenant and expiry of a
// Key Vault bearer token and returns the caller's client id. The error text is
// the Key Vault message.
func (s *Server) verifyAccessToken(raw string) (*accessClaims, error) {
	if raw == "" {
		return nil, errNoToken
	}
	var c accessClaims
	_, err := jwt.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		return s.tokenKey.Public(), nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		return nil, errors.New("AKV10032: Invalid issuer or signature. The token was not issued by a trusted authority.")
	}
	if !slices.Contains(c.Audience, VaultResource) && !slices.Contains(c.Audience, VaultResource+"/") {
		return nil, fmt.Errorf("AKV10022: Invalid audience. Expected %s, found: %s.", VaultResource, strings.Join(c.Audience, ","))
	}
	if c.Issuer != s.stsIssuer() || c.TenantID != s.opts.TenantID {
		return nil, fmt.Errorf("AKV10032: Invalid issuer. Expected one of %s, found %s.", s.stsIssuer(), c.Issuer)
	}
	if c.ExpiresAt == nil || time.Now().After(c.ExpiresAt.Time) {
		return nil, errors.New("AKV10021: Token is expired.")
	}
	return &c, nil
}

func verifiesWithAny(raw string, keys []crypto.PublicKey) bool {
	for _, k := range keys {
		_, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return k, nil },
			jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"}),
			jwt.WithoutClaimsValidation())
		if err == nil {
			return true
		}
	}
	return false
}

// entraRequest is how Entra and the token proxy begin a request: the
// endpoint from the path's route (after the tenant), the client from a token
// POST's form, the debug line, the interceptors, then the tenant check.
// unknown, if set, is what an unrouted path counts as for the interceptors.
// ok false: the answer is written.
func (s *Server) entraRequest(w http.ResponseWriter, r *http.Request, logMsg string, routes map[string]Endpoint, token, unknown Endpoint) (ep Endpoint, ok bool) {
	tenant, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	ep, ok = routes[rest]
	if !ok {
		if unknown != "" {
			s.intercept(w, r, "", unknown, "")
		}
		http.NotFound(w, r)
		return "", false
	}
	clientID := ""
	if ep == token && r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			s.writeEntraError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body is not a valid form.")
			return "", false
		}
		clientID = r.PostForm.Get("client_id")
	}
	s.log.Debug(logMsg, "method", r.Method, "endpoint", ep, "client_id", clientID, "host", r.Host)
	if s.intercept(w, r, "", ep, clientID) {
		return "", false
	}
	if tenant != s.opts.TenantID {
		s.writeEntraError(w, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf(
			"Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return "", false
	}
	return ep, true
}
