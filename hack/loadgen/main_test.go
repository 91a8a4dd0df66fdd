package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	for target, ok := range map[string]bool{
		"https://127.0.0.1:9443/mutate-pods": true,
		"https://[::1]:9443/":                true,
		"https://localhost:9443/":            true,
		"https://10.0.0.1:9443/":             false,
		"https://example.com/":               false,
		"http://127.0.0.1:9443/":             false,
	} {
		if err := checkLoopback(target); (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", target, err, ok)
		}
	}
}

func TestQuantile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{.5: 500 * time.Millisecond, .99: 990 * time.Millisecond, .999: 999 * time.Millisecond, 1: time.Second} {
		if got := quantile(d, q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
}

// server answers like the webhook floor; bad makes it answer without the
// expected string.
func server(t *testing.T, bad *atomic.Bool, served *atomic.Int64) *loader {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Error(err)
		}
		served.Add(1)
		if bad.Load() {
			_, _ = w.Write([]byte(`{"response":{"allowed":false}}`))
			return
		}
		_, _ = w.Write([]byte(`{"response":{"allowed":true}}`))
	}))
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return &loader{client: &http.Client{Transport: tr, Timeout: 5 * time.Second}, url: srv.URL, body: []byte(`{}`), expect: []byte(`"allowed":true`)}
}

func TestFixedRateSendsEveryDueRequest(t *testing.T) {
	var bad atomic.Bool
	var served atomic.Int64
	l := server(t, &bad, &served)
	lat, lag, elapsed := l.fixedRate(context.Background(), 100, 4, 200*time.Millisecond, time.Second, 1000)
	// 100/s over warm-up and measured time: 120 requests, 100 measured.
	if n := served.Load(); n != 120 {
		t.Errorf("served %d requests, want 120", n)
	}
	if len(lat) != 100 || len(lag) != 100 {
		t.Errorf("measured %d latencies and %d lags, want 100", len(lat), len(lag))
	}
	if elapsed != time.Second || l.errors != 0 {
		t.Errorf("elapsed %v, %d errors (%s)", elapsed, l.errors, l.firstErr)
	}
}

func TestSaturationIsBoundedAndCountsWrongAnswers(t *testing.T) {
	var bad atomic.Bool
	var served atomic.Int64
	l := server(t, &bad, &served)
	lat, _ := l.saturate(context.Background(), 4, 0, 10*time.Second, 50)
	if len(lat) != 50 {
		t.Errorf("measured %d requests, want the -max of 50", len(lat))
	}
	if n := served.Load(); n > 50+4 {
		t.Errorf("served %d requests, want at most -max plus one per connection", n)
	}
	bad.Store(true)
	l.saturate(context.Background(), 1, 0, 10*time.Second, 1)
	if l.errors == 0 || !strings.Contains(l.firstErr, `lacks "\"allowed\":true"`) {
		t.Errorf("an answer without the expected string: %d errors, first %q", l.errors, l.firstErr)
	}
}

// -vary makes every body distinct, of the same length, with nothing else changed.
func TestVaryMakesEveryBodyDistinct(t *testing.T) {
	body := []byte(`{"generateName":"web-7d9f-","labels":{"hash":"7d9f"}}`)
	l := &loader{body: body, varyAt: indexAll(body, "7d9f"), varyLen: 4}
	seen := map[string]bool{}
	for range 9999 {
		b := string(l.bodyFor(nil))
		if len(b) != len(body) || seen[b] {
			t.Fatalf("body %s: repeated or resized", b)
		}
		seen[b] = true
	}
	if got := string(l.bodyFor(nil)); got != `{"generateName":"web-0000-","labels":{"hash":"0000"}}` {
		t.Errorf("request 10000 (wider than the string): %s", got)
	}
}
