package fakeazure

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"
)

// Endpoint names a kind of request, for counters and fault targets.
type Endpoint string

// Endpoints the emulator serves.
const (
	EndpointOpenIDConfiguration Endpoint = "entra.openid-configuration"
	EndpointToken               Endpoint = "entra.token"
	EndpointEntraKeys           Endpoint = "entra.keys"
	// EndpointChallenge is any vault request without a bearer token, answered
	// with 401 and WWW-Authenticate. The SDK sends one per client.
	EndpointChallenge          Endpoint = "vault.challenge"
	EndpointGetSecret          Endpoint = "secrets.get"
	EndpointSetSecret          Endpoint = "secrets.set"
	EndpointListSecrets        Endpoint = "secrets.list"
	EndpointListSecretVersions Endpoint = "secrets.versions"
	EndpointGetKey             Endpoint = "keys.get"
	EndpointListKeys           Endpoint = "keys.list"
	EndpointListKeyVersions    Endpoint = "keys.versions"
	EndpointGetCertificate     Endpoint = "certificates.get"
	// EndpointUnknown is any other vault request (answered 400 or 405).
	EndpointUnknown Endpoint = "vault.unknown"
)

// AnyClient matches every client id in Count.
const AnyClient = "*"

// Target selects requests. Empty fields match anything; the zero Target
// matches every request, Entra ID included. Vault is "" for Entra requests.
// ClientID is the client_id form field at the token endpoint and the token's
// appid at a vault; unauthenticated vault requests have no client id.
type Target struct {
	Vault    string
	Endpoint Endpoint
	ClientID string
}

func (t Target) matches(vault string, ep Endpoint, clientID string) bool {
	return (t.Vault == "" || t.Vault == vault) &&
		(t.Endpoint == "" || t.Endpoint == ep) &&
		(t.ClientID == "" || t.ClientID == clientID)
}

// Fault replaces the answer to a request.
type Fault struct {
	// Status is the HTTP status to send, e.g. 429, 500, 503. The body is the
	// one the service sends for it (Key Vault or Entra shape).
	Status int
	// RetryAfter, when positive, adds a Retry-After header in whole seconds
	// (rounded up).
	RetryAfter time.Duration
	// Reset drops the TCP connection with a RST instead of answering (over
	// HTTP/2, with every other request on it, as a real reset would). Note
	// that Go's transport replays an idempotent request once by itself when a
	// reused connection resets, so use n = 2 for a caller to see one error.
	Reset bool
	// Body, if set, replaces the default JSON body.
	Body string
}

type faultEntry struct {
	target    Target
	fault     Fault
	remaining int // <0: until cleared
}

type latencyEntry struct {
	target Target
	delay  time.Duration
}

// Fail makes the next n requests matching t fail with f; n < 0 means every
// matching request until ClearFaults. Faults queue in call order. Vault
// faults apply to authenticated requests (after the challenge), so the fault
// hits the request the client cares about; outage applies to all.
func (s *Server) Fail(t Target, n int, f Fault) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &faultEntry{target: t, fault: f, remaining: n})
}

// ClearFaults removes pending faults, latencies and the outage.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults, s.latency, s.outage = nil, nil, false
}

// SetLatency delays every request matching t by d before it is answered
// (d = 0 removes the delay for t). The largest matching delay applies. A
// client that gives up (context cancelled) stops the wait.
func (s *Server) SetLatency(t Target, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.latency[:0]
	for _, l := range s.latency {
		if l.target != t {
			out = append(out, l)
		}
	}
	if d > 0 {
		out = append(out, latencyEntry{target: t, delay: d})
	}
	s.latency = out
}

// SetOutage makes every listener (Entra ID and vaults) answer 503 to every
// request while on.
func (s *Server) SetOutage(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = on
}

// intercept counts the request, applies latency, outage and faults, and
// reports whether it answered. authenticated is false only for vault
// challenge requests.
func (s *Server) intercept(w http.ResponseWriter, r *http.Request, vault string, ep Endpoint, clientID string) bool {
	s.mu.Lock()
	s.counts[countKey{vault, ep, clientID}]++
	var delay time.Duration
	for _, l := range s.latency {
		if l.target.matches(vault, ep, clientID) && l.delay > delay {
			delay = l.delay
		}
	}
	outage := s.outage
	var fault *Fault
	if !outage && ep != EndpointChallenge {
		for i, f := range s.faults {
			if f.target.matches(vault, ep, clientID) {
				fc := f.fault
				fault = &fc
				if f.remaining > 0 {
					f.remaining--
					if f.remaining == 0 {
						s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
					}
				}
				break
			}
		}
	}
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	if outage {
		fault = &Fault{Status: http.StatusServiceUnavailable}
	}
	if fault == nil {
		return false
	}
	s.log.Debug("fakeazure: injecting fault", "vault", vault, "endpoint", ep, "client_id", clientID, "status", fault.Status, "reset", fault.Reset)
	if fault.Reset {
		resetConn(w, r)
		return true
	}
	if fault.RetryAfter > 0 {
		secs := (fault.RetryAfter + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", fmt.Sprint(int64(secs)))
	}
	status := fault.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if fault.Body != "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(fault.Body))
		return true
	}
	if vault == "" {
		code, errCode, msg := 90033, "temporarily_unavailable", "A transient error has occurred. Please try again."
		if status == http.StatusTooManyRequests {
			code, errCode, msg = 90055, "temporarily_unavailable", "The request was throttled because the number of requests to the tenant exceeded the throttling threshold. Please try again later."
		} else if status < 500 {
			errCode = "invalid_request"
		}
		s.writeEntraError(w, status, errCode, code, msg)
		return true
	}
	switch status {
	case http.StatusTooManyRequests:
		writeKVError(w, status, "Throttled", "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached", "")
	case http.StatusServiceUnavailable:
		writeKVError(w, status, "ServiceUnavailable", "The service is temporarily unavailable. Please retry later.", "")
	default:
		writeKVError(w, status, "InternalServerError", "An unexpected error occurred while processing the request.", "")
	}
	return true
}

// resetConn closes the client connection with a TCP RST (SO_LINGER 0).
func resetConn(w http.ResponseWriter, r *http.Request) {
	if hj, ok := w.(http.Hijacker); ok {
		conn, _, err := hj.Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		resetTCP(conn)
		return
	}
	// HTTP/2 has no hijacking: reset the connection under the streams, and
	// end this stream's handler.
	if conn, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		resetTCP(conn)
	}
	panic(http.ErrAbortHandler)
}

func resetTCP(conn net.Conn) {
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
			_ = tcp.Close()
			return
		}
	}
	_ = conn.Close()
}

type countKey struct {
	vault    string
	endpoint Endpoint
	clientID string
}

// CountEntry is one counter: requests that reached Vault ("" for Entra) on
// Endpoint from ClientID ("" when unauthenticated).
type CountEntry struct {
	Vault    string
	Endpoint Endpoint
	ClientID string
	N        int
}

// Count returns how many requests for ep came from clientID (AnyClient sums
// all), over every vault. Faulted requests count too.
func (s *Server) Count(ep Endpoint, clientID string) int {
	return s.CountVault("", ep, clientID)
}

// CountVault is Count restricted to one vault ("" = all vaults and Entra).
func (s *Server) CountVault(vault string, ep Endpoint, clientID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.counts {
		if (vault == "" || k.vault == vault) && k.endpoint == ep && (clientID == AnyClient || k.clientID == clientID) {
			n += v
		}
	}
	return n
}

// Counts returns a snapshot of every counter, sorted.
func (s *Server) Counts() []CountEntry {
	s.mu.Lock()
	out := make([]CountEntry, 0, len(s.counts))
	for k, v := range s.counts {
		out = append(out, CountEntry{Vault: k.vault, Endpoint: k.endpoint, ClientID: k.clientID, N: v})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Vault != b.Vault {
			return a.Vault < b.Vault
		}
		if a.Endpoint != b.Endpoint {
			return a.Endpoint < b.Endpoint
		}
		return a.ClientID < b.ClientID
	})
	return out
}

// ResetCounts zeroes every counter.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = map[countKey]int{}
}
