package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// The test binary doubles as the command (FAKEAZURE_MAIN=1: main with its
// own arguments) and as a client configured like a pod, from the
// environment only (FAKEAZURE_CLIENT=<vault URL>: print one secret).
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("FAKEAZURE_MAIN") == "1":
		main()
		os.Exit(0)
	case os.Getenv("FAKEAZURE_CLIENT") != "":
		if err := envClient(os.Getenv("FAKEAZURE_CLIENT"), os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// envClient uses the default transport (trust from SSL_CERT_FILE) and the
// AZURE_* variables, setting in code only the two options with no env var.
func envClient(vaultURL, name string) error {
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{DisableInstanceDiscovery: true})
	if err != nil {
		return err
	}
	c, err := azsecrets.NewClient(vaultURL, cred, &azsecrets.ClientOptions{DisableChallengeResourceVerification: true})
	if err != nil {
		return err
	}
	got, err := c.GetSecret(context.Background(), name, "", nil)
	if err != nil {
		return err
	}
	fmt.Print(*got.Value)
	return nil
}

const clientID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

func writeSeed(t *testing.T, path, value string) {
	t.Helper()
	seed := `{
  "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
  "vaults": [{"name": "demo",
    "secrets": [{"name": "db-password", "value": "` + value + `"}],
    "certificates": [{"name": "tls", "contentType": "application/x-pem-file", "keyType": "EC"}],
    "grants": [{"clientId": "` + clientID + `", "role": "Key Vault Secrets User", "object": "*"}]}],
  "federatedCredentials": [{"clientId": "` + clientID + `", "subject": "system:serviceaccount:demo:app"}]
}`
	if err := os.WriteFile(path, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
}

// command is a running fakeazure process.
type command struct {
	cmd    *exec.Cmd
	exited chan error
	stdout string // path
	state  state
}

// startCommand runs the command with args plus -state-file and -ca-file in
// dir, and waits for the state file.
func startCommand(t *testing.T, dir string, args ...string) *command {
	t.Helper()
	statePath := filepath.Join(dir, "state.json")
	args = append(args, "-state-file", statePath, "-ca-file", filepath.Join(dir, "ca.pem"))
	c := &command{cmd: exec.Command(os.Args[0], args...), exited: make(chan error, 1), stdout: filepath.Join(dir, "stdout")}
	c.cmd.Env = append(os.Environ(), "FAKEAZURE_MAIN=1")
	stdout, err := os.Create(c.stdout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close() })
	c.cmd.Stdout, c.cmd.Stderr = stdout, os.Stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() { _ = c.cmd.Process.Kill() })
	poll(t, func() bool {
		b, err := os.ReadFile(statePath)
		return err == nil && json.Unmarshal(b, &c.state) == nil
	})
	return c
}

// secrets is a client for vault configured only from what the command
// published (state file, CA file) and a token file.
func (c *command) secrets(t *testing.T, vault, tokenPath string) *azsecrets.Client {
	t.Helper()
	caPEM, err := os.ReadFile(c.state.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	transport := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: transport, Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: c.state.AuthorityHost}},
		ClientID:      clientID, TenantID: c.state.TenantID, TokenFilePath: tokenPath, DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := azsecrets.NewClient(c.state.Vaults[vault], cred, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: transport}, DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func (c *command) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
}

func TestCommand(t *testing.T) {
	dir := t.TempDir()
	seedPath, caPath, tokenPath := filepath.Join(dir, "seed.json"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "token")
	writeSeed(t, seedPath, "first")
	cmd := startCommand(t, dir, "-seed", seedPath, "-test-issuer", "-token", "demo:app="+tokenPath, "-secret", "demo/api-key=k3y")
	st := cmd.state
	if st.TenantID != "72f988bf-86f1-41af-91ab-2d7cd011db47" || st.Vaults["demo"] == "" || st.Issuer == "" || st.CAFile != caPath {
		t.Fatalf("state = %+v", st)
	}
	c := cmd.secrets(t, "demo", tokenPath)
	ctx := context.Background()
	value := func(name string) string {
		t.Helper()
		got, err := c.GetSecret(ctx, name, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		return *got.Value
	}
	if v := value("db-password"); v != "first" {
		t.Fatalf("db-password = %q", v)
	}
	if v := value("api-key"); v != "k3y" {
		t.Fatalf("api-key = %q", v)
	}
	if v := value("tls"); !strings.Contains(v, "BEGIN PRIVATE KEY") {
		t.Fatal("tls is not a PEM bundle")
	}
	// A separate process configured like a pod: AZURE_* and SSL_CERT_FILE.
	client := exec.Command(os.Args[0], "api-key")
	client.Env = append(os.Environ(), "FAKEAZURE_CLIENT="+st.Vaults["demo"], "SSL_CERT_FILE="+caPath,
		"AZURE_AUTHORITY_HOST="+st.AuthorityHost, "AZURE_TENANT_ID="+st.TenantID,
		"AZURE_CLIENT_ID="+clientID, "AZURE_FEDERATED_TOKEN_FILE="+tokenPath)
	client.Stderr = os.Stderr
	if out, err := client.Output(); err != nil || string(out) != "k3y" {
		t.Fatalf("env-configured client: %q, %v", out, err)
	}
	// The state file is written after the KEY=value lines.
	if out, _ := os.ReadFile(cmd.stdout); !strings.Contains(string(out), "FAKEAZURE_VAULT_DEMO="+st.Vaults["demo"]+"\n") {
		t.Fatalf("stdout lacks the vault URL:\n%s", out)
	}

	// SIGHUP rotates changed secrets from the seed file.
	writeSeed(t, seedPath, "second")
	if err := cmd.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, func() bool { return value("db-password") == "second" })
	cmd.stop(t)
}

// With -issuer-kubeconfig the emulator reads a federated issuer (here a test
// issuer standing in for kube-apiserver) with that kubeconfig's CA and
// credentials.
func TestCommandKubeconfigIssuer(t *testing.T) {
	dir := t.TempDir()
	iss, err := fakeazure.NewIssuer(t.Context(), fakeazure.IssuerOptions{Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	err = os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+iss.URL()+`", certificate-authority-data: "`+base64.StdEncoding.EncodeToString(iss.CA().PEM())+`"}}]
users: [{name: u, user: {token: admin-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	tokenPath := filepath.Join(dir, "token")
	if err := iss.WriteServiceAccountToken(tokenPath, "demo", "app", time.Hour); err != nil {
		t.Fatal(err)
	}
	cmd := startCommand(t, dir, "-issuer-kubeconfig", kubeconfig, "-vault", "kube-kv", "-secret", "kube-kv/s=v",
		"-federated", clientID+","+iss.URL()+",system:serviceaccount:demo:app",
		"-grant", "kube-kv,"+clientID+",Key Vault Secrets User,s")
	got, err := cmd.secrets(t, "kube-kv", tokenPath).GetSecret(context.Background(), "s", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Value != "v" {
		t.Fatalf("got %q", *got.Value)
	}
	cmd.stop(t)
}

func poll(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
