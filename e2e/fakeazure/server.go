package fakeazure

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sort"
	"sync"
	"time"
)

// VaultResource is the audience of Key Vault access tokens and the resource
// Key Vault names in its challenge.
const VaultResource = "https://vault.azure.net"

// TokenExchangeAudience is the audience Entra ID requires on federated
// client assertions by default.
const TokenExchangeAudience = "api://AzureADTokenExchange"

// Options configure a Server. The zero value is usable.
type Options struct {
	// TenantID is the only tenant the emulator knows. Default: a random UUID,
	// see Server.TenantID.
	TenantID string
	// CA signs the serving certificates. Default: a new CA. Pass the CA of an
	// Issuer to trust it without setting IssuerClient.
	CA *CA
	// CAFile, if set, is where Start writes the CA certificate as PEM (for
	// SSL_CERT_FILE or another process).
	CAFile string
	// IssuerClient fetches OIDC discovery documents and JWKS of federated
	// issuers (a test Issuer, or kube-apiserver with its CA and credentials).
	// Default: a client that trusts CA. Only loopback issuers are contacted
	// whatever the client.
	IssuerClient *http.Client
	// EntraAddr is the listen address of the Entra ID endpoint.
	// Default "<Host>:0".
	EntraAddr string
	// Host is the address the Entra ID endpoint and AddVault's vaults listen
	// on, and the serving certificate names besides loopback. Default
	// 127.0.0.1. Anything else must be an address of an interface of this
	// network namespace: the e2e node's pod bridge (cluster.BridgeIP), inside
	// a namespace the test run made with no link to the machine's network, so
	// pods can reach the emulator.
	Host net.IP
	// AccessTokenTTL is the lifetime of issued access tokens. Default 1h
	// (expires_in 3599, like Entra). MSAL treats a token as expired 5 minutes
	// before its end and azcore refreshes at most every 30 s, so a TTL of 5
	// minutes or less makes busy clients call the token endpoint about every
	// 30 s.
	AccessTokenTTL time.Duration
	// ClockSkew is the leeway on exp/nbf of client assertions. Default 1m.
	ClockSkew time.Duration
	// PageSize is the number of items per list page. Default 25, the service
	// maximum; set it low to exercise nextLink paging.
	PageSize int
	// Logger receives one line per request (never a secret value).
	// Default: discard.
	Logger *slog.Logger
}

// Server is a running emulator: one Entra ID listener plus one listener per
// vault. All methods are safe for concurrent use.
type Server struct {
	opts     Options
	ca       *CA
	tls      *tls.Config
	log      *slog.Logger
	tokenKey *ecdsa.PrivateKey
	tokenKid string
	entra    *listener
	issuers  *jwksCache

	mu     sync.Mutex
	closed bool
	vaults map[string]*vault
	apps   map[string][]FederatedCredential // by client id
	// bindings and proxies: AKS identity bindings (tokenproxy.go).
	bindings []IdentityBinding
	proxies  []*TokenProxy
	grants   []grant
	pki      *pki
	faults   []*faultEntry
	latency  []latencyEntry
	outage   bool
	counts   map[countKey]int
	stopCtx  func() bool
}

type listener struct {
	ln  net.Listener
	tls *tls.Config
	srv *http.Server
	url string
	log *slog.Logger
	wg  sync.WaitGroup
}

// Start starts the Entra ID listener. Vaults are added with AddVault. The
// server stops when ctx is done or Close is called.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.TenantID == "" {
		opts.TenantID = newUUID()
	}
	if !tenantRE.MatchString(opts.TenantID) {
		return nil, fmt.Errorf("fakeazure: Options.TenantID %q: use letters, digits, '.' and '-' only (a GUID)", opts.TenantID)
	}
	if opts.Host == nil {
		opts.Host = net.IPv4(127, 0, 0, 1)
	} else if !opts.Host.IsLoopback() && !isLocalAddress(opts.Host) {
		return nil, fmt.Errorf("fakeazure: Options.Host %s: not loopback and not an address of this network namespace's interfaces", opts.Host)
	}
	if opts.EntraAddr == "" {
		opts.EntraAddr = net.JoinHostPort(opts.Host.String(), "0")
	}
	if opts.AccessTokenTTL <= 0 {
		opts.AccessTokenTTL = time.Hour
	}
	if opts.ClockSkew <= 0 {
		opts.ClockSkew = time.Minute
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 25
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	ca, tlsCfg, err := serving(opts.CA, opts.Host)
	if err != nil {
		return nil, err
	}
	if opts.CAFile != "" {
		if err := ca.WriteFile(opts.CAFile); err != nil {
			return nil, fmt.Errorf("fakeazure: Options.CAFile: %w", err)
		}
	}
	if opts.IssuerClient == nil {
		opts.IssuerClient = ca.Client()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: generate token signing key: %w", err)
	}
	s := &Server{
		opts:     opts,
		ca:       ca,
		tls:      tlsCfg,
		log:      opts.Logger,
		tokenKey: key,
		tokenKid: randomHex(8),
		issuers:  newJWKSCache(opts.IssuerClient),
		vaults:   map[string]*vault{},
		apps:     map[string][]FederatedCredential{},
		counts:   map[countKey]int{},
	}
	s.entra, err = listen(opts.EntraAddr, tlsCfg, http.HandlerFunc(s.serveEntra), s.log)
	if err != nil {
		return nil, fmt.Errorf("fakeazure: Entra ID listener: %w", err)
	}
	s.entra.serve()
	s.stopCtx = context.AfterFunc(ctx, s.Close)
	return s, nil
}

var (
	tenantRE    = regexp.MustCompile(`^[A-Za-z0-9.-]+$`)
	vaultNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$`)
	objectRE    = regexp.MustCompile(`^[A-Za-z0-9-]{1,127}$`)
)

// listen binds a loopback address; serve starts answering. They are split so
// that the URL is known before the first request.
func listen(addr string, tlsCfg *tls.Config, h http.Handler, log *slog.Logger) (*listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback() && !isLocalAddress(ip)) {
		return nil, fmt.Errorf("listen address %q: only loopback addresses (e.g. 127.0.0.1:0) or Options.Host are allowed", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &listener{
		ln:  ln,
		tls: tlsCfg,
		log: log,
		url: "https://" + ln.Addr().String() + "/",
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			// Faults reset the connection a request came on (HTTP/1.1 or 2).
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, connKey{}, c)
			},
			// TLS handshake noise (clients that give up) is not interesting.
			ErrorLog: stdlog.New(io.Discard, "", 0),
		},
	}
	return l, nil
}

// connKey holds a request's connection in its context.
type connKey struct{}

func (l *listener) serve() {
	tl := tls.NewListener(l.ln, l.tls)
	l.wg.Go(func() {
		if err := l.srv.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("fakeazure listener stopped", "addr", l.ln.Addr().String(), "err", err)
		}
	})
}

func (l *listener) close() {
	_ = l.srv.Close()
	l.wg.Wait()
}

// Close stops every listener and drops open connections. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	ls := []*listener{s.entra}
	for _, p := range s.proxies {
		ls = append(ls, p.l)
	}
	for _, v := range s.vaults {
		if v.l != nil { // nil while AddVaultAt is still listening
			ls = append(ls, v.l)
		}
	}
	s.mu.Unlock()
	if s.stopCtx != nil {
		s.stopCtx()
	}
	for _, l := range ls {
		l.close()
	}
}

// TenantID returns the emulated tenant.
func (s *Server) TenantID() string { return s.opts.TenantID }

// AuthorityHost returns the Entra ID origin, e.g. "https://127.0.0.1:40123/",
// for azidentity's cloud configuration or AZURE_AUTHORITY_HOST.
func (s *Server) AuthorityHost() string { return s.entra.url }

// CA returns the CA that signs every serving certificate.
func (s *Server) CA() *CA { return s.ca }

// CAPEM returns the CA certificate as PEM.
func (s *Server) CAPEM() []byte { return s.ca.PEM() }

// WriteCAFile writes the CA certificate as PEM to path.
func (s *Server) WriteCAFile(path string) error { return s.ca.WriteFile(path) }

// Client returns a new HTTP client that trusts the emulator's CA, for
// azcore.ClientOptions.Transport of both the credential and the vault clients.
func (s *Server) Client() *http.Client { return s.ca.Client() }

// AddVault starts a vault on its own listener at 127.0.0.1:0 and returns its
// URL ("https://127.0.0.1:<port>/"). Vault names follow Azure's rule: 3-24
// letters, digits and hyphens, starting with a letter.
func (s *Server) AddVault(name string) (string, error) {
	return s.AddVaultAt(name, net.JoinHostPort(s.opts.Host.String(), "0"))
}

// isLocalAddress reports whether ip is assigned to an interface of this
// network namespace (listening there sends nothing anywhere).
func isLocalAddress(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// AddVaultAt is AddVault on a fixed loopback address such as "127.0.0.1:8443".
func (s *Server) AddVaultAt(name, addr string) (string, error) {
	if !vaultNameRE.MatchString(name) {
		return "", fmt.Errorf("fakeazure: vault name %q: use 3-24 letters, digits and hyphens, starting with a letter", name)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", errors.New("fakeazure: server is closed")
	}
	if _, ok := s.vaults[name]; ok {
		s.mu.Unlock()
		return "", fmt.Errorf("fakeazure: vault %q already exists", name)
	}
	v := &vault{name: name, secrets: map[string][]*secretVersion{}, keys: map[string][]*keyVersion{}, certs: map[string][]*certVersion{}}
	s.vaults[name] = v // reserve the name while listening
	s.mu.Unlock()

	l, err := listen(addr, s.tls, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveVault(v, w, r) }), s.log)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.vaults, name)
		return "", fmt.Errorf("fakeazure: vault %q: %w", name, err)
	}
	if s.closed {
		_ = l.ln.Close()
		return "", errors.New("fakeazure: server is closed")
	}
	v.l = l
	v.url = l.url
	l.serve()
	return l.url, nil
}

// VaultURL returns the URL of a vault, or "" if there is no such vault.
func (s *Server) VaultURL(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.vaults[name]; ok {
		return v.url
	}
	return ""
}

// Vaults returns the vault names and URLs.
func (s *Server) Vaults() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]string, len(s.vaults))
	for n, v := range s.vaults {
		m[n] = v.url
	}
	return m
}

// FederatedCredential is a federated identity credential on an app
// registration: Entra accepts an assertion for ClientID whose iss, sub and
// aud match exactly.
type FederatedCredential struct {
	ClientID string
	Issuer   string
	Subject  string
	// Audience defaults to api://AzureADTokenExchange.
	Audience string
}

// AddFederatedCredential registers the app clientID (if new) and trusts
// assertions from issuer with the given subject
// (e.g. "system:serviceaccount:ns:sa").
func (s *Server) AddFederatedCredential(clientID, issuer, subject string) error {
	return s.AddFederatedCredentialFor(FederatedCredential{ClientID: clientID, Issuer: issuer, Subject: subject})
}

// AddFederatedCredentialFor is AddFederatedCredential with a custom audience.
func (s *Server) AddFederatedCredentialFor(fc FederatedCredential) error {
	if fc.ClientID == "" || fc.Issuer == "" || fc.Subject == "" {
		return errors.New("fakeazure: federated credential needs ClientID, Issuer and Subject")
	}
	if fc.Audience == "" {
		fc.Audience = TokenExchangeAudience
	}
	if err := checkLoopbackURL(fc.Issuer); err != nil {
		return fmt.Errorf("fakeazure: federated credential issuer: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[fc.ClientID] = append(s.apps[fc.ClientID], fc)
	return nil
}

// RemoveFederatedCredentials deletes every federated credential of clientID
// (the app stays registered), as when an operator deletes them in the portal.
func (s *Server) RemoveFederatedCredentials(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.apps[clientID]; ok {
		s.apps[clientID] = nil
	}
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
