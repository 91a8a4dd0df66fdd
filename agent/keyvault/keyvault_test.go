package keyvault

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/agent/config"
)

func TestRefOf(t *testing.T) {
	secret, err := RefOf(config.Object{Vault: "https://MyVault.vault.azure.net", Kind: config.KindSecret, Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := RefOf(config.Object{Vault: "https://myvault.vault.azure.net/", Kind: config.KindCert, Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if secret != cert {
		t.Errorf("a cert and a secret of the same name are different GETs: %v vs %v", secret, cert)
	}
	if got := secret.String(); got != "https://myvault.vault.azure.net/secrets/db" {
		t.Errorf("String() = %q", got)
	}
	key, err := RefOf(config.Object{Vault: "https://myvault.vault.azure.net/", Kind: config.KindKey, Name: "db", Version: "abc"})
	if err != nil || key.Collection != "keys" || key.String() != "https://myvault.vault.azure.net/keys/db/abc" {
		t.Errorf("key ref %v, %v", key, err)
	}
	for _, o := range []config.Object{
		{Vault: "http://myvault.vault.azure.net/", Kind: config.KindSecret, Name: "db"},
		{Vault: "https://myvault.vault.azure.net/secrets", Kind: config.KindSecret, Name: "db"},
		{Vault: "myvault", Kind: config.KindSecret, Name: "db"},
		{Vault: "https://myvault.vault.azure.net/", Kind: "blob", Name: "db"},
		{Vault: "https://myvault.vault.azure.net/", Kind: config.KindSecret},
	} {
		if _, err := RefOf(o); err == nil {
			t.Errorf("RefOf(%+v) accepted", o)
		}
	}
}

func TestIdentityFromEnv(t *testing.T) {
	env := map[string]string{"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/f"}
	id, err := IdentityFromEnv(func(k string) string { return env[k] })
	if err != nil || id != (Identity{ClientID: "c", TenantID: "t", TokenFile: "/f"}) {
		t.Errorf("IdentityFromEnv = %+v, %v", id, err)
	}
	delete(env, "AZURE_TENANT_ID")
	delete(env, "AZURE_FEDERATED_TOKEN_FILE")
	_, err = IdentityFromEnv(func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE not set") {
		t.Errorf("err = %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		header http.Header
		min    time.Duration
		max    time.Duration
	}{
		{http.Header{"Retry-After": {"3"}}, 3 * time.Second, 3 * time.Second},
		{http.Header{"Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{http.Header{"X-Ms-Retry-After-Ms": {"20"}, "Retry-After": {"1"}}, 20 * time.Millisecond, 20 * time.Millisecond},
		{http.Header{"Retry-After": {time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)}}, 50 * time.Second, time.Minute},
		{http.Header{"Retry-After": {"soon"}}, 0, 0},
		{http.Header{}, 0, 0},
	} {
		got := retryAfter(&http.Response{Header: tc.header})
		if got < tc.min || got > tc.max {
			t.Errorf("retryAfter(%v) = %s, want in [%s, %s]", tc.header, got, tc.min, tc.max)
		}
	}
}

func TestClassifyTransportErrorIsRetryable(t *testing.T) {
	f := Classify(errors.New("dial tcp 127.0.0.1:1: connect: connection refused"))
	if !f.Retryable || f.Status != 0 || !strings.Contains(f.Message, "connection refused") {
		t.Errorf("Classify = %+v", f)
	}
}
