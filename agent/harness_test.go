package agent_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// ca signs every emulator of this test binary: Go reads SSL_CERT_FILE once
// per process, so one trust anchor must serve all tests.
var ca *fakeazure.CA

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		if ca, err = fakeazure.NewCA(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dir, err := os.MkdirTemp("", "kvinject-agent-test")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		caFile := filepath.Join(dir, "ca.pem")
		if err := ca.WriteFile(caFile); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// The product trusts the system roots; SSL_CERT_FILE is how a test
		// (and a private cloud) adds the emulator's CA.
		os.Setenv("SSL_CERT_FILE", caFile)
		return m.Run()
	}())
}

const (
	namespace      = "shop"
	serviceAccount = "checkout"
	vaultName      = "shop-kv"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is one emulated Azure (Entra ID, a test OIDC issuer, one vault) and
// one pod's worth of agent inputs. Every value it serves is recorded, and at
// cleanup every output of the agent (logs, errors, termination message) is
// scanned for them.
type harness struct {
	t         *testing.T
	srv       *fakeazure.Server
	iss       *fakeazure.Issuer
	vaultURL  string
	clientID  string
	tokenFile string
	dir       string
	termLog   string
	logs      syncBuffer
	// extraEnv is added to the agent's environment.
	extraEnv map[string]string

	mu     sync.Mutex
	served map[string]string // what → value
	errs   []string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, fakeazure.Options{CA: ca})
}

// newHarnessWith is newHarness on an emulator started with opts.
func newHarnessWith(t *testing.T, opts fakeazure.Options) *harness {
	t.Helper()
	iss, err := fakeazure.NewIssuer(t.Context(), fakeazure.IssuerOptions{CA: ca})
	must(t, err)
	t.Cleanup(iss.Close)
	srv, err := fakeazure.Start(t.Context(), opts)
	must(t, err)
	t.Cleanup(srv.Close)
	vaultURL, err := srv.AddVault(vaultName)
	must(t, err)
	h := &harness{
		t: t, srv: srv, iss: iss, vaultURL: vaultURL,
		clientID:  "0f5d1c9e-8a2b-4c3d-9e4f-a1b2c3d4e5f6",
		tokenFile: filepath.Join(t.TempDir(), "token"),
		dir:       t.TempDir(),
		termLog:   filepath.Join(t.TempDir(), "termination-log"),
		served:    map[string]string{},
	}
	must(t, srv.AddFederatedCredential(h.clientID, iss.URL(), "system:serviceaccount:"+namespace+":"+serviceAccount))
	must(t, srv.Grant(vaultName, h.clientID, fakeazure.RoleSecretsUser, "*"))
	must(t, srv.Grant(vaultName, h.clientID, fakeazure.RoleCryptoUser, "*"))
	must(t, iss.WriteServiceAccountToken(h.tokenFile, namespace, serviceAccount, time.Hour))
	t.Cleanup(h.scan)
	return h
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// secret stores a new version of a secret and returns its version.
func (h *harness) secret(name, value string) string {
	h.t.Helper()
	v, err := h.srv.SetSecret(vaultName, name, value, "")
	must(h.t, err)
	h.remember("secret "+name+"@"+v, value)
	return v
}

func (h *harness) remember(what, value string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.served[what] = value
}

// cert creates a certificate and records its backing secret and private key.
func (h *harness) cert(name string, o fakeazure.CertificateOptions) *fakeazure.Certificate {
	h.t.Helper()
	c, err := h.srv.AddCertificateWith(vaultName, name, o)
	must(h.t, err)
	value, err := h.srv.SecretValue(vaultName, name, c.Version)
	must(h.t, err)
	h.remember("cert secret "+name, value)
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	must(h.t, err)
	// The first line of the key's PEM body is enough to spot a leak.
	h.remember("cert key "+name, base64.StdEncoding.EncodeToString(der)[:64])
	return c
}

func (h *harness) object(kind config.Kind, name, version string) *config.Object {
	return &config.Object{Vault: h.vaultURL, Kind: kind, Name: name, Version: version}
}

func (h *harness) config(refresh time.Duration, files ...config.File) *config.Config {
	return &config.Config{
		Version: config.Version,
		Dir:     h.dir,
		Refresh: config.Duration(refresh),
		Cloud: config.Cloud{
			Name:          config.CustomCloud,
			AuthorityHost: h.srv.AuthorityHost(),
			// The emulator's vaults answer for resource https://vault.azure.net.
			VaultSuffix:                          "vault.azure.net",
			DisableInstanceDiscovery:             true,
			DisableChallengeResourceVerification: true,
		},
		Namespace:      namespace,
		ServiceAccount: serviceAccount,
		MetricsAddr:    "127.0.0.1:0",
		Files:          files,
	}
}

// env is the agent container's environment as the injector writes it.
func (h *harness) env(c *config.Config) map[string]string {
	h.t.Helper()
	raw, err := json.Marshal(c)
	must(h.t, err)
	env := map[string]string{
		config.EnvVar:                string(raw),
		"AZURE_CLIENT_ID":            h.clientID,
		"AZURE_TENANT_ID":            h.srv.TenantID(),
		"AZURE_FEDERATED_TOKEN_FILE": h.tokenFile,
		"AZURE_AUTHORITY_HOST":       h.srv.AuthorityHost(),
	}
	for k, v := range h.extraEnv {
		env[k] = v
	}
	return env
}

// run runs the agent through its Go entry point, configured through the
// environment like in a pod.
func (h *harness) run(ctx context.Context, mode agent.Mode, c *config.Config, opts ...func(*agent.Options)) error {
	env := h.env(c)
	o := agent.Options{
		Mode:           mode,
		Getenv:         func(k string) string { return env[k] },
		TerminationLog: h.termLog,
		Logger:         slog.New(slog.NewJSONHandler(&h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range opts {
		f(&o)
	}
	err := agent.Run(ctx, o)
	if err != nil {
		h.mu.Lock()
		h.errs = append(h.errs, err.Error(), fmt.Sprintf("%+v", err))
		h.mu.Unlock()
	}
	return err
}

// start runs a sidecar in the background; stop cancels it (SIGTERM) and
// returns its result.
func (h *harness) start(c *config.Config, opts ...func(*agent.Options)) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.run(ctx, agent.ModeSidecar, c, opts...) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("sidecar did not stop within 30s of cancellation")
			}
		})
		return err
	}
	h.t.Cleanup(func() { _ = stop() })
	return stop
}

func (h *harness) termination() string {
	b, err := os.ReadFile(h.termLog)
	if err != nil {
		return ""
	}
	return string(b)
}

func (h *harness) read(name string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, name))
	must(h.t, err)
	return string(b)
}

func (h *harness) dataTarget() string {
	h.t.Helper()
	target, err := os.Readlink(filepath.Join(h.dir, "..data"))
	must(h.t, err)
	return target
}

// scan fails the test if any served value shows up in the agent's output.
func (h *harness) scan() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, leak := range leaks(h.served, map[string]string{
		"logs":                h.logs.String(),
		"termination message": h.termination(),
		"returned errors":     strings.Join(h.errs, "\n"),
	}) {
		h.t.Error(leak)
	}
}

// leaks lists every served value (by what it is, never the value) found in
// any output.
func leaks(served, outputs map[string]string) []string {
	var out []string
	for what, value := range served {
		if value == "" {
			continue
		}
		for where, text := range outputs {
			if strings.Contains(text, value) {
				out = append(out, fmt.Sprintf("%s reveal the value of %s", where, what))
			}
		}
	}
	return out
}

func TestLeakScanFindsValues(t *testing.T) {
	served := map[string]string{"secret a": "hunter2-Aa1", "secret b": "other-Bb2"}
	got := leaks(served, map[string]string{"logs": `{"msg":"fetch","error":"bad value hunter2-Aa1"}`, "termination message": "fine"})
	if len(got) != 1 || got[0] != "logs reveal the value of secret a" {
		t.Errorf("leaks = %q", got)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logLines returns the JSON log records with the given message.
func (h *harness) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(h.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}
