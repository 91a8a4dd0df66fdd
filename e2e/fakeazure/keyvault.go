package fakeazure

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Secret content types Key Vault uses for certificate-backed secrets.
const (
	ContentTypePFX = "application/x-pkcs12"
	ContentTypePEM = "application/x-pem-file"
)

type vault struct {
	name, url string
	l         *listener
	// Objects by lower-case name (Key Vault names are case-insensitive);
	// versions oldest first.
	secrets map[string][]*secretVersion
	keys    map[string][]*keyVersion
	certs   map[string][]*certVersion
}

type attributes struct {
	Enabled         bool   `json:"enabled"`
	NotBefore       *int64 `json:"nbf,omitempty"`
	Expires         *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
	Exportable      *bool  `json:"exportable,omitempty"`
}

func newAttributes() attributes {
	now := time.Now().Unix()
	return attributes{Enabled: true, Created: now, Updated: now, RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90}
}

type secretVersion struct {
	name, version string
	value         string
	contentType   string
	attrs         attributes
	tags          map[string]string
	managed       bool   // certificate-backed
	pem           string // managed only: the value as PEM, for outContentType
}

type keyVersion struct {
	name, version string
	key           jwk // public part, no kid
	attrs         attributes
	managed       bool
}

type certVersion struct {
	name, version string
	cert          *Certificate
	attrs         attributes
}

func latest[T any](versions []T) (T, bool) {
	var zero T
	if len(versions) == 0 {
		return zero, false
	}
	return versions[len(versions)-1], true
}

// kvError is Key Vault's error envelope.
type kvError struct {
	Error kvErrorBody `json:"error"`
}

type kvErrorBody struct {
	Code       string       `json:"code"`
	Message    string       `json:"message"`
	InnerError *kvErrorBody `json:"innererror,omitempty"`
}

func writeKVError(w http.ResponseWriter, status int, code, message, inner string) {
	body := kvError{Error: kvErrorBody{Code: code, Message: message}}
	if inner != "" {
		body.Error.InnerError = &kvErrorBody{Code: inner}
	}
	w.Header().Set("x-ms-request-id", newUUID())
	writeJSON(w, status, body)
}

// challenge answers 401 with the header real Key Vault sends; the SDK parses
// it by splitting on single spaces, so keep ", " between parameters.
func (s *Server) challenge(w http.ResponseWriter, message string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s%s", resource="%s"`,
		s.entra.url, s.opts.TenantID, VaultResource))
	writeKVError(w, http.StatusUnauthorized, "Unauthorized", message, "")
}

// route classifies a vault request path.
func route(method, path string) (ep Endpoint, collection, name, version string) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	collection = segs[0]
	switch {
	case len(segs) == 1 || (len(segs) == 2 && segs[1] == ""):
		switch collection {
		case "secrets":
			return EndpointListSecrets, collection, "", ""
		case "keys":
			return EndpointListKeys, collection, "", ""
		}
	case len(segs) == 2 || len(segs) == 3:
		name = segs[1]
		if len(segs) == 3 {
			version = segs[2]
		}
		switch {
		case collection == "secrets" && method == http.MethodPut && len(segs) == 2:
			return EndpointSetSecret, collection, name, ""
		case collection == "secrets" && version == "versions":
			return EndpointListSecretVersions, collection, name, ""
		case collection == "keys" && version == "versions":
			return EndpointListKeyVersions, collection, name, ""
		case collection == "secrets":
			return EndpointGetSecret, collection, name, version
		case collection == "keys":
			return EndpointGetKey, collection, name, version
		case collection == "certificates":
			return EndpointGetCertificate, collection, name, version
		}
	}
	return EndpointUnknown, collection, "", ""
}

var endpointAction = map[Endpoint]string{
	EndpointGetSecret:          actionGetSecret,
	EndpointSetSecret:          actionSetSecret,
	EndpointListSecrets:        actionReadSecret,
	EndpointListSecretVersions: actionReadSecret,
	EndpointGetKey:             actionReadKey,
	EndpointListKeys:           actionReadKey,
	EndpointListKeyVersions:    actionReadKey,
	EndpointGetCertificate:     actionReadCert,
}

func (s *Server) serveVault(v *vault, w http.ResponseWriter, r *http.Request) {
	ep, collection, name, version := route(r.Method, r.URL.Path)
	auth := r.Header.Get("Authorization")
	if auth == "" {
		// The SDK's first request carries no token (and no body): answer
		// the challenge before looking at anything else.
		if s.intercept(w, r, v.name, EndpointChallenge, "") {
			return
		}
		s.challenge(w, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	raw, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		s.challenge(w, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	claims, err := s.verifyAccessToken(strings.TrimSpace(raw))
	if err != nil {
		if s.intercept(w, r, v.name, ep, "") {
			return
		}
		s.log.Info("fakeazure: rejected access token", "vault", v.name, "err", err)
		s.challenge(w, err.Error())
		return
	}
	clientID := claims.AppID
	s.log.Debug("vault request", "vault", v.name, "method", r.Method, "endpoint", ep, "object", name, "client_id", clientID)
	if s.intercept(w, r, v.name, ep, clientID) {
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "The request URI contains an invalid or missing 'api-version' query parameter.", "")
		return
	}
	if ep == EndpointUnknown {
		writeKVError(w, http.StatusBadRequest, "BadParameter", fmt.Sprintf("The operation %s %s is not supported by this emulator.", r.Method, r.URL.Path), "")
		return
	}
	if ep != EndpointSetSecret && r.Method != http.MethodGet {
		writeKVError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", fmt.Sprintf("The requested resource does not support http method '%s'.", r.Method), "")
		return
	}
	if name != "" && !objectRE.MatchString(name) {
		writeKVError(w, http.StatusBadRequest, "BadParameter", fmt.Sprintf("The request URI contains an invalid name: %s", name), "")
		return
	}

	s.mu.Lock()
	ok = s.allowed(v.name, clientID, endpointAction[ep], name)
	s.mu.Unlock()
	if !ok {
		writeKVError(w, http.StatusForbidden, "Forbidden",
			s.forbiddenMessage(v.name, claims, endpointAction[ep], collection, name), "ForbiddenByRbac")
		return
	}

	switch ep {
	case EndpointGetSecret:
		s.getSecret(v, w, name, version, r.URL.Query().Get("outContentType"))
	case EndpointSetSecret:
		s.putSecret(v, w, r, name)
	case EndpointListSecrets, EndpointListSecretVersions, EndpointListKeys, EndpointListKeyVersions:
		s.list(v, w, r, ep, name)
	case EndpointGetKey:
		s.getKey(v, w, name, version)
	case EndpointGetCertificate:
		s.getCertificate(v, w, name, version)
	}
}

func notFoundMessage(kind, id string) string {
	return fmt.Sprintf("A %s with (name/id) %s was not found in this key vault. If you recently deleted this %s you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", kind, id, kind)
}

// findVersion returns the named version, or the latest when version is "".
func findVersion[T any](versions []T, version string, ver func(T) string) (T, bool) {
	if version == "" {
		return latest(versions)
	}
	for _, x := range versions {
		if strings.EqualFold(ver(x), version) {
			return x, true
		}
	}
	var zero T
	return zero, false
}

func objectID(vaultURL, collection, name, version string) string {
	id := vaultURL + collection + "/" + name
	if version != "" {
		id += "/" + version
	}
	return id
}

func (s *Server) secretBundle(v *vault, sv *secretVersion, withValue bool) map[string]any {
	b := map[string]any{
		"id":         objectID(v.url, "secrets", sv.name, sv.version),
		"attributes": sv.attrs,
		"tags":       sv.tags,
	}
	if sv.tags == nil {
		b["tags"] = map[string]string{}
	}
	if withValue {
		b["value"] = sv.value
	}
	if sv.contentType != "" {
		b["contentType"] = sv.contentType
	}
	if sv.managed {
		b["managed"] = true
		b["kid"] = objectID(v.url, "keys", sv.name, sv.version)
	}
	return b
}

// getSecret serves a secret version; outContentType (API 2025-07-01+)
// converts a certificate-backed PFX to PEM.
func (s *Server) getSecret(v *vault, w http.ResponseWriter, name, version, outContentType string) {
	if outContentType != "" && outContentType != ContentTypePEM {
		writeKVError(w, http.StatusBadRequest, "BadParameter", fmt.Sprintf("The requested outContentType '%s' is not supported. Supported: %s.", outContentType, ContentTypePEM), "")
		return
	}
	s.mu.Lock()
	sv, ok := findVersion(v.secrets[strings.ToLower(name)], version, func(x *secretVersion) string { return x.version })
	var b map[string]any
	enabled := false
	if ok {
		enabled = sv.attrs.Enabled
		b = s.secretBundle(v, sv, true)
		if outContentType != "" && sv.managed {
			b["value"], b["contentType"] = sv.pem, ContentTypePEM
		}
	}
	s.mu.Unlock()
	if !ok {
		id := name
		if version != "" {
			id += "/" + version
		}
		writeKVError(w, http.StatusNotFound, "SecretNotFound", notFoundMessage("secret", id), "")
		return
	}
	if !enabled {
		writeKVError(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
		return
	}
	writeJSON(w, http.StatusOK, b)
}

type setSecretRequest struct {
	Value       *string           `json:"value"`
	ContentType string            `json:"contentType"`
	Tags        map[string]string `json:"tags"`
	Attributes  *struct {
		Enabled   *bool  `json:"enabled"`
		NotBefore *int64 `json:"nbf"`
		Expires   *int64 `json:"exp"`
	} `json:"attributes"`
}

func (s *Server) putSecret(v *vault, w http.ResponseWriter, r *http.Request, name string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "Could not read the request body.", "")
		return
	}
	var req setSecretRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON.", "")
		return
	}
	if req.Value == nil {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "Property value is required.", "")
		return
	}
	if len(*req.Value) > 25*1024 {
		writeKVError(w, http.StatusBadRequest, "BadParameter", "Secret value is larger than the 25 KB limit.", "")
		return
	}
	attrs := newAttributes()
	if a := req.Attributes; a != nil {
		if a.Enabled != nil {
			attrs.Enabled = *a.Enabled
		}
		attrs.NotBefore, attrs.Expires = a.NotBefore, a.Expires
	}
	s.mu.Lock()
	sv := s.addSecretLocked(v, name, *req.Value, req.ContentType, attrs, req.Tags, false)
	b := s.secretBundle(v, sv, true)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, b)
}

// addSecretLocked appends a version; caller holds s.mu. The version keeps
// the casing of the first version's name.
func (s *Server) addSecretLocked(v *vault, name, value, contentType string, attrs attributes, tags map[string]string, managed bool) *secretVersion {
	key := strings.ToLower(name)
	if first, ok := latest(v.secrets[key]); ok {
		name = first.name
	}
	sv := &secretVersion{name: name, version: randomHex(16), value: value, contentType: contentType, attrs: attrs, tags: tags, managed: managed}
	v.secrets[key] = append(v.secrets[key], sv)
	return sv
}

func (s *Server) list(v *vault, w http.ResponseWriter, r *http.Request, ep Endpoint, name string) {
	q := r.URL.Query()
	size := s.opts.PageSize
	if m, err := strconv.Atoi(q.Get("maxresults")); err == nil && m > 0 && m < size {
		size = m
	}
	skip, _ := strconv.Atoi(q.Get("$skiptoken"))

	var items []map[string]any
	s.mu.Lock()
	switch ep {
	case EndpointListSecrets:
		for _, k := range sortedKeys(v.secrets) {
			sv, _ := latest(v.secrets[k])
			item := s.secretBundle(v, sv, false)
			item["id"] = objectID(v.url, "secrets", sv.name, "")
			delete(item, "kid")
			items = append(items, item)
		}
	case EndpointListSecretVersions:
		for _, sv := range v.secrets[strings.ToLower(name)] {
			item := s.secretBundle(v, sv, false)
			delete(item, "kid")
			items = append(items, item)
		}
	case EndpointListKeys:
		for _, k := range sortedKeys(v.keys) {
			kv, _ := latest(v.keys[k])
			items = append(items, map[string]any{"kid": objectID(v.url, "keys", kv.name, ""), "attributes": kv.attrs, "tags": map[string]string{}, "managed": kv.managed})
		}
	case EndpointListKeyVersions:
		for _, kv := range v.keys[strings.ToLower(name)] {
			items = append(items, map[string]any{"kid": objectID(v.url, "keys", kv.name, kv.version), "attributes": kv.attrs, "tags": map[string]string{}, "managed": kv.managed})
		}
	}
	s.mu.Unlock()

	// Like the service, listing versions of a missing object is an empty list.
	if skip < 0 || skip > len(items) {
		skip = len(items)
	}
	end := min(skip+size, len(items))
	value := items[skip:end]
	if value == nil {
		value = []map[string]any{} // "value":[] rather than null
	}
	page := map[string]any{"value": value, "nextLink": nil}
	if end < len(items) {
		// Absolute, with api-version: the SDK follows it verbatim.
		next := url.Values{}
		next.Set("api-version", q.Get("api-version"))
		next.Set("$skiptoken", strconv.Itoa(end))
		next.Set("maxresults", strconv.Itoa(size))
		page["nextLink"] = strings.TrimSuffix(v.url, "/") + r.URL.Path + "?" + next.Encode()
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) getKey(v *vault, w http.ResponseWriter, name, version string) {
	s.mu.Lock()
	kv, ok := findVersion(v.keys[strings.ToLower(name)], version, func(x *keyVersion) string { return x.version })
	s.mu.Unlock()
	if !ok {
		id := name
		if version != "" {
			id += "/" + version
		}
		writeKVError(w, http.StatusNotFound, "KeyNotFound", notFoundMessage("key", id), "")
		return
	}
	k := kv.key
	k.Kid = objectID(v.url, "keys", kv.name, kv.version)
	writeJSON(w, http.StatusOK, map[string]any{"key": k, "attributes": kv.attrs, "tags": map[string]string{}, "managed": kv.managed})
}

func (s *Server) vault(name string) (*vault, error) {
	v, ok := s.vaults[name]
	if !ok || v.url == "" {
		return nil, fmt.Errorf("fakeazure: unknown vault %q", name)
	}
	return v, nil
}

// SetSecret stores a new version of a secret, as an administrator would
// (no RBAC check), and returns the version id. contentType may be empty.
func (s *Server) SetSecret(vaultName, name, value, contentType string) (string, error) {
	if !objectRE.MatchString(name) {
		return "", fmt.Errorf("fakeazure: secret name %q: use 1-127 letters, digits and hyphens", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vault(vaultName)
	if err != nil {
		return "", err
	}
	return s.addSecretLocked(v, name, value, contentType, newAttributes(), nil, false).version, nil
}

// DeleteSecret removes a secret and all its versions (purged at once; the
// emulator has no soft-delete), so gets answer 404 SecretNotFound.
func (s *Server) DeleteSecret(vaultName, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vault(vaultName)
	if err != nil {
		return err
	}
	if _, ok := v.secrets[strings.ToLower(name)]; !ok {
		return fmt.Errorf("fakeazure: secret %s/%s not found", vaultName, name)
	}
	delete(v.secrets, strings.ToLower(name))
	return nil
}

// SetSecretEnabled enables or disables one version ("" = latest) of a
// secret; getting a disabled version is 403 SecretDisabled.
func (s *Server) SetSecretEnabled(vaultName, name, version string, enabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vault(vaultName)
	if err != nil {
		return err
	}
	sv, ok := findVersion(v.secrets[strings.ToLower(name)], version, func(x *secretVersion) string { return x.version })
	if !ok {
		return fmt.Errorf("fakeazure: secret %s/%s@%s not found", vaultName, name, version)
	}
	sv.attrs.Enabled = enabled
	sv.attrs.Updated = time.Now().Unix()
	return nil
}

// SecretVersions returns the versions of a secret, oldest first.
func (s *Server) SecretVersions(vaultName, name string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vault(vaultName)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sv := range v.secrets[strings.ToLower(name)] {
		out = append(out, sv.version)
	}
	if out == nil {
		return nil, fmt.Errorf("fakeazure: secret %s/%s not found", vaultName, name)
	}
	return out, nil
}

// SecretValue returns the value of a secret version ("" = latest), for
// assertions on what a client wrote with SetSecret.
func (s *Server) SecretValue(vaultName, name, version string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vault(vaultName)
	if err != nil {
		return "", err
	}
	sv, ok := findVersion(v.secrets[strings.ToLower(name)], version, func(x *secretVersion) string { return x.version })
	if !ok {
		return "", errors.New("fakeazure: secret " + vaultName + "/" + name + " not found")
	}
	return sv.value, nil
}
