// Command fakeazure runs the Key Vault + Entra ID emulator standalone, for
// the demo and for local development against the real Azure SDKs.
//
//	fakeazure -tenant 0000... -ca-file /tmp/fakeazure-ca.pem \
//	    -vault demo=127.0.0.1:8443 -secret demo/db-password=s3cret \
//	    -federated "$CLIENT_ID,https://127.0.0.1:6443/,system:serviceaccount:demo:app" \
//	    -grant "demo,$CLIENT_ID,Key Vault Secrets User,*"
//
// or with a JSON seed file (-seed, see seedFile). Once serving it prints
// shell-friendly KEY=value lines (AZURE_TENANT_ID, AZURE_AUTHORITY_HOST,
// FAKEAZURE_CA_FILE, FAKEAZURE_VAULT_<NAME>, FAKEAZURE_ISSUER) and writes the
// same facts as JSON to -state-file. SIGHUP re-reads the seed file and stores
// a new version of every secret whose value changed (rotation for demos).
// SIGINT/SIGTERM shut it down cleanly.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// seedFile is the -seed format. Secret values in it are test data.
type seedFile struct {
	TenantID string      `json:"tenantId"`
	Vaults   []seedVault `json:"vaults"`
	// FederatedCredentials: an empty issuer means the -test-issuer.
	FederatedCredentials []struct {
		ClientID string `json:"clientId"`
		Issuer   string `json:"issuer"`
		Subject  string `json:"subject"`
	} `json:"federatedCredentials"`
}

type seedVault struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"` // default 127.0.0.1:0
	Secrets []struct {
		Name        string `json:"name"`
		Value       string `json:"value"`
		ContentType string `json:"contentType"`
	} `json:"secrets"`
	Certificates []struct {
		Name        string `json:"name"`
		ContentType string `json:"contentType"` // application/x-pkcs12 (default) or application/x-pem-file
		KeyType     string `json:"keyType"`     // RSA (default) or EC
	} `json:"certificates"`
	Keys []struct {
		Name string `json:"name"`
		Kty  string `json:"kty"` // RSA or EC
	} `json:"keys"`
	Grants []struct {
		ClientID string `json:"clientId"`
		Role     string `json:"role"`   // e.g. "Key Vault Secrets User"
		Object   string `json:"object"` // object name or "*"
	} `json:"grants"`
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type config struct {
	entraAddr, tenant, seed, caFile, stateFile string
	issuerCAFile, issuerTokenFile              string
	issuerKubeconfig                           string
	testIssuer                                 bool
	tokenTTL                                   time.Duration
	verbose                                    bool
	vaults, secrets, certs, keys, feds, grants listFlag
	tokens                                     listFlag
}

func main() {
	var c config
	fs := flag.NewFlagSet("fakeazure", flag.ExitOnError)
	fs.StringVar(&c.entraAddr, "entra-addr", "127.0.0.1:0", "loopback listen address of Entra ID (the authority host)")
	fs.StringVar(&c.tenant, "tenant", "", "tenant id (default: from -seed, else random)")
	fs.StringVar(&c.seed, "seed", "", "JSON seed file with vaults, objects, grants and federated credentials")
	fs.StringVar(&c.caFile, "ca-file", "", "write the CA certificate (PEM) here; default <tmp>/fakeazure-ca.pem")
	fs.StringVar(&c.stateFile, "state-file", "", "write tenant, authority host, CA file and vault URLs here as JSON")
	fs.StringVar(&c.issuerCAFile, "issuer-ca-file", "", "extra CA bundle to trust when fetching federated issuers' discovery and JWKS (e.g. kube-apiserver's CA)")
	fs.StringVar(&c.issuerTokenFile, "issuer-token-file", "", "bearer token sent to federated issuers (kube-apiserver serves its JWKS to authenticated callers)")
	fs.StringVar(&c.issuerKubeconfig, "issuer-kubeconfig", "", "kubeconfig whose server CA and credentials are used to fetch federated issuers (kube-apiserver's discovery and JWKS); overrides -issuer-ca-file and -issuer-token-file")
	fs.BoolVar(&c.testIssuer, "test-issuer", false, "also run a test OIDC issuer (no Kubernetes needed); federated credentials with an empty issuer use it")
	fs.DurationVar(&c.tokenTTL, "access-token-ttl", time.Hour, "lifetime of issued access tokens")
	fs.BoolVar(&c.verbose, "v", false, "log every request (never secret values)")
	fs.Var(&c.vaults, "vault", "vault `name[=addr]` (repeatable)")
	fs.Var(&c.secrets, "secret", "secret `vault/name=value` (repeatable)")
	fs.Var(&c.certs, "certificate", "certificate `vault/name[:pem|pfx]` (repeatable)")
	fs.Var(&c.keys, "key", "key `vault/name[:RSA|EC]` (repeatable)")
	fs.Var(&c.feds, "federated", "federated credential `clientID,issuer,subject` (repeatable; empty issuer = -test-issuer)")
	fs.Var(&c.grants, "grant", "role assignment `vault,clientID,role,object` (repeatable; object \"*\" = whole vault)")
	fs.Var(&c.tokens, "token", "with -test-issuer: write a service-account token `ns:sa=path` valid 24h (repeatable)")
	_ = fs.Parse(os.Args[1:])

	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "fakeazure:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	var seed seedFile
	if c.seed != "" {
		if err := readSeed(c.seed, &seed); err != nil {
			return err
		}
	}
	if c.tenant == "" {
		c.tenant = seed.TenantID
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ca, err := fakeazure.NewCA()
	if err != nil {
		return err
	}
	issuerClient, err := newIssuerClient(ca, c.issuerCAFile, c.issuerTokenFile)
	if err != nil {
		return err
	}
	if c.issuerKubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.issuerKubeconfig)
		if err != nil {
			return fmt.Errorf("-issuer-kubeconfig: %w", err)
		}
		if issuerClient, err = rest.HTTPClientFor(cfg); err != nil {
			return fmt.Errorf("-issuer-kubeconfig: %w", err)
		}
	}
	srv, err := fakeazure.Start(ctx, fakeazure.Options{
		TenantID: c.tenant, CA: ca, IssuerClient: issuerClient, EntraAddr: c.entraAddr,
		AccessTokenTTL: c.tokenTTL, Logger: log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	var iss *fakeazure.Issuer
	if c.testIssuer {
		if iss, err = fakeazure.NewIssuer(ctx, fakeazure.IssuerOptions{CA: ca}); err != nil {
			return err
		}
		defer iss.Close()
	}
	if err := apply(srv, iss, &seed, c); err != nil {
		return err
	}
	for _, t := range c.tokens {
		if iss == nil {
			return errors.New("-token needs -test-issuer")
		}
		sa, path, ok := strings.Cut(t, "=")
		ns, name, ok2 := strings.Cut(sa, ":")
		if !ok || !ok2 || path == "" {
			return fmt.Errorf("-token %q: want ns:sa=path", t)
		}
		if err := iss.WriteServiceAccountToken(path, ns, name, 24*time.Hour); err != nil {
			return err
		}
	}

	if c.caFile == "" {
		c.caFile = filepath.Join(os.TempDir(), "fakeazure-ca.pem")
	}
	if err := srv.WriteCAFile(c.caFile); err != nil {
		return err
	}
	if err := report(srv, iss, c); err != nil {
		return err
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "fakeazure: shutting down")
			return nil
		case <-hup:
			if c.seed == "" {
				continue
			}
			var fresh seedFile
			if err := readSeed(c.seed, &fresh); err != nil {
				log.Error("reload seed", "err", err)
				continue
			}
			if err := reloadSecrets(srv, &fresh); err != nil {
				log.Error("reload seed", "err", err)
				continue
			}
			fmt.Fprintln(os.Stderr, "fakeazure: seed reloaded")
		}
	}
}

func readSeed(path string, s *seedFile) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read seed: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(s); err != nil {
		return fmt.Errorf("seed %s: %w", path, err)
	}
	return nil
}

// newIssuerClient trusts the emulator CA plus an optional extra bundle and
// adds an optional bearer token, for fetching kube-apiserver's JWKS.
func newIssuerClient(ca *fakeazure.CA, caFile, tokenFile string) (*http.Client, error) {
	client := ca.Client()
	tr := client.Transport.(*http.Transport)
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("-issuer-ca-file: %w", err)
		}
		pool := ca.Pool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("-issuer-ca-file %s: no PEM certificates found", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	if tokenFile != "" {
		client.Transport = &bearer{next: tr, file: tokenFile}
	}
	return client, nil
}

// bearer adds Authorization from a file read on each request, so a rotated
// token file keeps working.
type bearer struct {
	next http.RoundTripper
	file string
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := os.ReadFile(b.file)
	if err != nil {
		return nil, fmt.Errorf("-issuer-token-file: %w", err)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	return b.next.RoundTrip(r)
}

// apply adds the seed file's objects and then the flags' objects.
func apply(srv *fakeazure.Server, iss *fakeazure.Issuer, seed *seedFile, c config) error {
	for _, v := range seed.Vaults {
		if err := addVault(srv, v.Name, v.Addr); err != nil {
			return err
		}
		for _, s := range v.Secrets {
			if _, err := srv.SetSecret(v.Name, s.Name, s.Value, s.ContentType); err != nil {
				return err
			}
		}
		for _, ct := range v.Certificates {
			if _, err := srv.AddCertificateWith(v.Name, ct.Name, fakeazure.CertificateOptions{ContentType: ct.ContentType, KeyType: ct.KeyType}); err != nil {
				return err
			}
		}
		for _, k := range v.Keys {
			if _, err := srv.AddKey(v.Name, k.Name, k.Kty); err != nil {
				return err
			}
		}
		for _, g := range v.Grants {
			if err := srv.Grant(v.Name, g.ClientID, fakeazure.Role(g.Role), g.Object); err != nil {
				return err
			}
		}
	}
	for _, f := range seed.FederatedCredentials {
		if err := addFederated(srv, iss, f.ClientID, f.Issuer, f.Subject); err != nil {
			return err
		}
	}

	for _, v := range c.vaults {
		name, addr, _ := strings.Cut(v, "=")
		if err := addVault(srv, name, addr); err != nil {
			return err
		}
	}
	for _, s := range c.secrets {
		ref, value, ok := strings.Cut(s, "=")
		vault, name, ok2 := strings.Cut(ref, "/")
		if !ok || !ok2 {
			return fmt.Errorf("-secret %q: want vault/name=value", ref)
		}
		if _, err := srv.SetSecret(vault, name, value, ""); err != nil {
			return err
		}
	}
	for _, s := range c.certs {
		ref, format, _ := strings.Cut(s, ":")
		vault, name, ok := strings.Cut(ref, "/")
		ct := map[string]string{"": fakeazure.ContentTypePFX, "pfx": fakeazure.ContentTypePFX, "pem": fakeazure.ContentTypePEM}[format]
		if !ok || ct == "" {
			return fmt.Errorf("-certificate %q: want vault/name[:pem|pfx]", s)
		}
		if _, err := srv.AddCertificate(vault, name, ct); err != nil {
			return err
		}
	}
	for _, s := range c.keys {
		ref, kty, _ := strings.Cut(s, ":")
		vault, name, ok := strings.Cut(ref, "/")
		if !ok {
			return fmt.Errorf("-key %q: want vault/name[:RSA|EC]", s)
		}
		if kty == "" {
			kty = "RSA"
		}
		if _, err := srv.AddKey(vault, name, kty); err != nil {
			return err
		}
	}
	for _, f := range c.feds {
		parts := strings.SplitN(f, ",", 3)
		if len(parts) != 3 {
			return fmt.Errorf("-federated %q: want clientID,issuer,subject", f)
		}
		if err := addFederated(srv, iss, parts[0], parts[1], parts[2]); err != nil {
			return err
		}
	}
	for _, g := range c.grants {
		parts := strings.SplitN(g, ",", 4)
		if len(parts) != 4 {
			return fmt.Errorf("-grant %q: want vault,clientID,role,object", g)
		}
		if err := srv.Grant(parts[0], parts[1], fakeazure.Role(parts[2]), parts[3]); err != nil {
			return err
		}
	}
	return nil
}

func addVault(srv *fakeazure.Server, name, addr string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	_, err := srv.AddVaultAt(name, addr)
	return err
}

func addFederated(srv *fakeazure.Server, iss *fakeazure.Issuer, clientID, issuer, subject string) error {
	if issuer == "" {
		if iss == nil {
			return fmt.Errorf("federated credential for %s has no issuer: set one or run with -test-issuer", clientID)
		}
		issuer = iss.URL()
	}
	return srv.AddFederatedCredential(clientID, issuer, subject)
}

// reloadSecrets stores a new version of every seeded secret whose value
// differs from the latest one, and creates missing secrets.
func reloadSecrets(srv *fakeazure.Server, seed *seedFile) error {
	for _, v := range seed.Vaults {
		for _, s := range v.Secrets {
			cur, err := srv.SecretValue(v.Name, s.Name, "")
			if err == nil && cur == s.Value {
				continue
			}
			if _, err := srv.SetSecret(v.Name, s.Name, s.Value, s.ContentType); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "fakeazure: new version of %s/%s\n", v.Name, s.Name)
		}
	}
	return nil
}

type state struct {
	TenantID      string            `json:"tenantId"`
	AuthorityHost string            `json:"authorityHost"`
	CAFile        string            `json:"caFile"`
	Vaults        map[string]string `json:"vaults"`
	Issuer        string            `json:"issuer,omitempty"`
}

func report(srv *fakeazure.Server, iss *fakeazure.Issuer, c config) error {
	st := state{TenantID: srv.TenantID(), AuthorityHost: srv.AuthorityHost(), CAFile: c.caFile, Vaults: srv.Vaults()}
	if iss != nil {
		st.Issuer = iss.URL()
	}
	fmt.Printf("AZURE_TENANT_ID=%s\n", st.TenantID)
	fmt.Printf("AZURE_AUTHORITY_HOST=%s\n", st.AuthorityHost)
	fmt.Printf("FAKEAZURE_CA_FILE=%s\n", st.CAFile)
	for _, name := range sortedNames(st.Vaults) {
		fmt.Printf("FAKEAZURE_VAULT_%s=%s\n", envName(name), st.Vaults[name])
	}
	if st.Issuer != "" {
		fmt.Printf("FAKEAZURE_ISSUER=%s\n", st.Issuer)
	}
	// Last, so that a script which waits for the file has everything.
	if c.stateFile != "" {
		// Write then rename, so a script polling for the file never reads
		// half of it.
		b, _ := json.MarshalIndent(st, "", "  ")
		tmp := c.stateFile + ".tmp"
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write state file: %w", err)
		}
		if err := os.Rename(tmp, c.stateFile); err != nil {
			return fmt.Errorf("write state file: %w", err)
		}
	}
	return nil
}

func envName(s string) string {
	return strings.ToUpper(strings.ReplaceAll(s, "-", "_"))
}

func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
