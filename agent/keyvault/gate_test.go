package keyvault

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestChallengeGate: the first caller goes at once; the others wait, bounded
// by their context, until a request to the gate's vault leaves the transport
// with a token.
func TestChallengeGate(t *testing.T) {
	vault := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer vault.Close()
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer other.Close()
	g := newChallengeGate(strings.TrimPrefix(vault.URL, "http://"))
	isOpen := func() bool {
		select {
		case <-g.opened:
			return true
		default:
			return false
		}
	}

	if first, err := g.enter(t.Context()); !first || err != nil {
		t.Fatalf("first enter = %v, %v; want true, nil", first, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := g.enter(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("second enter before the gate opened = %v, want context.Canceled", err)
	}

	hc := &http.Client{Transport: gateTransport{base: &http.Transport{}}}
	defer hc.CloseIdleConnections()
	send := func(url string, token bool) {
		t.Helper()
		req, err := http.NewRequestWithContext(context.WithValue(t.Context(), gateKey{}, g), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token {
			req.Header.Set("Authorization", "Bearer t")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send(vault.URL, false) // the request that draws the challenge
	if isOpen() {
		t.Fatal("the gate opened on a request without a token")
	}
	send(other.URL, true)
	if isOpen() {
		t.Fatal("the gate opened on a request to another host")
	}
	send(vault.URL, true)
	if !isOpen() {
		t.Fatal("the gate stayed closed after a request to its vault with a token")
	}
	if first, err := g.enter(t.Context()); first || err != nil {
		t.Fatalf("enter after the gate opened = %v, %v; want false, nil", first, err)
	}
}
