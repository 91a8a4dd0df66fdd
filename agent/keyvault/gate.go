package keyvault

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
)

// challengeGate lets one request of a vault client go first and holds the
// client's others back until the client has learned the vault's 401
// challenge. Without it, every request sent before the first challenge is
// answered draws a challenge of its own (and, on a fresh transport, its own
// TLS handshake). The gate opens when a request to the vault's host leaves
// the transport with an Authorization header (the challenge is known and the
// token attached: the waiting requests then go straight out with it), or when
// the first request ends, whatever its result, so its errors do not stop the
// others from reporting theirs. Once open it stays open.
type challengeGate struct {
	host    string // lower case, as in Ref.Vault
	claimed atomic.Bool
	opened  chan struct{}
	once    sync.Once
}

func newChallengeGate(host string) *challengeGate {
	return &challengeGate{host: strings.ToLower(host), opened: make(chan struct{})}
}

func (g *challengeGate) open() { g.once.Do(func() { close(g.opened) }) }

// enter returns when the caller may send: at once for the first caller, who
// must call open when done (first is true), and for every caller after the
// gate opened; the others wait for it or for ctx.
func (g *challengeGate) enter(ctx context.Context) (first bool, err error) {
	select {
	case <-g.opened:
		return false, nil
	default:
	}
	if g.claimed.CompareAndSwap(false, true) {
		return true, nil
	}
	select {
	case <-g.opened:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// gateKey carries the first request's gate in its context, down to the
// transport.
type gateKey struct{}

// gateTransport is the process's transport with the one hook the gates need
// (it opens the gate of a request sent to the gate's vault with a token),
// and the classification of network failures (netFailure).
type gateTransport struct{ base *http.Transport }

func (t gateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if g, ok := req.Context().Value(gateKey{}).(*challengeGate); ok &&
		req.Header.Get("Authorization") != "" && strings.EqualFold(req.URL.Host, g.host) {
		g.open()
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		// Classified here, where the host is known, for Classify: as the
		// error itself (vault requests), and in the sign-in's record
		// (azidentity keeps only the text of its transport's errors).
		err = ClassifyTransportError(canonicalHost(req.URL), err)
		if nf, ok := err.(*NetFailure); ok {
			if rec, ok := req.Context().Value(netRecordKey{}).(*netRecord); ok {
				rec.note(nf)
			}
		}
	}
	return resp, err
}

// canonicalHost is u's host with its port, as the transport dials it.
func canonicalHost(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return u.Host + ":443"
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base.
func (t gateTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }
