package agent

import (
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/agent/keyvault"
)

// TestExplainNetworkClasses: the failures the live tests cannot cause on
// loopback (a name that does not resolve, a certificate for another name,
// a timeout), as the transport reports them, reach the termination message
// with their Fix line and retry decision.
func TestExplainNetworkClasses(t *testing.T) {
	leaf := &x509.Certificate{DNSNames: []string{"proxy.corp.example"}}
	for _, tc := range []struct {
		name      string
		err       error
		retryable bool
		want      []string
	}{
		{"name does not resolve", &net.DNSError{Err: "no such host", Name: "shop-kv.vault.azure.net", IsNotFound: true}, false,
			[]string{"shop-kv.vault.azure.net does not resolve (no such host)", "Fix: shop-kv.vault.azure.net:443 does not resolve from the pod", "private DNS zone"}},
		{"resolver failure", &net.DNSError{Err: "server misbehaving", Name: "shop-kv.vault.azure.net", IsTemporary: true}, true,
			[]string{"does not resolve (server misbehaving)", "Fix: shop-kv.vault.azure.net:443 does not resolve"}},
		{"certificate for another name", x509.HostnameError{Certificate: leaf, Host: "shop-kv.vault.azure.net"}, false,
			[]string{"is not valid for that name (it is for proxy.corp.example", "Fix: the pod reached a server that is not shop-kv.vault.azure.net:443"}},
		{"timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, true,
			[]string{"no answer from shop-kv.vault.azure.net:443 in time", "Fix: no answer from shop-kv.vault.azure.net:443: egress"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := keyvault.Classify(&url.Error{Op: "Get", URL: "https://shop-kv.vault.azure.net/secrets/db", Err: keyvault.ClassifyTransportError("shop-kv.vault.azure.net:443", tc.err)})
			if f.Retryable != tc.retryable {
				t.Errorf("retryable = %v, want %v", f.Retryable, tc.retryable)
			}
			p := &pod{cfg: &config.Config{Namespace: "shop", ServiceAccount: "web"}, id: keyvault.Identity{ClientID: "c", TenantID: "t"}, deadline: DefaultDeadline}
			fe := &FetchError{Ref: keyvault.Ref{Vault: "https://shop-kv.vault.azure.net/", Collection: "secrets", Name: "db"}, Kind: "secret", Files: []string{"db"}, Failure: f, Attempts: 1}
			path := filepath.Join(t.TempDir(), "termination-log")
			if err := writeTermination(path, p.explain(fe)); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			for _, w := range tc.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("termination message lacks %q:\n%s", w, b)
				}
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
