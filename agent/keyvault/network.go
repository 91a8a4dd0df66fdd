package keyvault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
)

// Classes of failures that got no HTTP response, each with its own advice
// and retry decision (Failure.Class).
const (
	// ClassTLSUntrusted: the server's certificate chains to no CA the agent
	// trusts (a TLS-inspecting proxy, a private cloud). Permanent.
	ClassTLSUntrusted = "tls-untrusted"
	// ClassTLSMismatch: the certificate is not for the host asked. Permanent.
	ClassTLSMismatch = "tls-mismatch"
	// ClassTLSInvalid: expired, not yet valid, or otherwise unusable. Permanent.
	ClassTLSInvalid = "tls-invalid"
	// ClassDNS: the host does not resolve. Permanent when the name does not
	// exist, retried when the resolver failed.
	ClassDNS = "dns"
	// ClassRefused: nothing listens at the address. Retried (a proxy or
	// endpoint that is restarting).
	ClassRefused = "refused"
	// ClassTimeout: no answer in time. Retried.
	ClassTimeout = "timeout"
	// ClassTenantMismatch: the vault's challenge names another tenant than
	// the identity's. Permanent.
	ClassTenantMismatch = "tenant-mismatch"
)

// NetFailure is a classified error of a request that got no response.
type NetFailure struct {
	Class, Host string
	// Detail names what failed: the certificate's subject and issuer, the
	// name that did not resolve. Never a value: it comes from the server's
	// certificate or the network.
	Detail    string
	Retryable bool
	Err       error
}

func (e *NetFailure) Error() string { return e.Detail }
func (e *NetFailure) Unwrap() error { return e.Err }

// netFailure classifies err of a request to host, or returns nil when it is
// none of the classes.
func netFailure(host string, err error) *NetFailure {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		dns      *net.DNSError
		ne       net.Error
	)
	f := &NetFailure{Host: host, Err: err}
	switch {
	case errors.As(err, &unknown):
		f.Class = ClassTLSUntrusted
		f.Detail = "the TLS certificate of " + host + " is not signed by a CA the agent trusts"
		if c := unknown.Cert; c != nil {
			f.Detail += " (subject " + quoteDN(c.Subject.String()) + ", issued by " + quoteDN(c.Issuer.String()) + ")"
		}
	case errors.As(err, &hostname):
		f.Class = ClassTLSMismatch
		f.Detail = "the TLS certificate presented for " + host + " is not valid for that name"
		if c := hostname.Certificate; c != nil {
			f.Detail += " (it is for " + strings.Join(append(c.DNSNames, ipStrings(c.IPAddresses)...), ", ") + "; issued by " + quoteDN(c.Issuer.String()) + ")"
		}
	case errors.As(err, &invalid):
		f.Class = ClassTLSInvalid
		f.Detail = "the TLS certificate of " + host + " is not valid: " + invalid.Error()
	case errors.As(err, &verify):
		f.Class = ClassTLSInvalid
		f.Detail = "the TLS certificate of " + host + " could not be verified: " + verify.Err.Error()
	case errors.As(err, &dns):
		f.Class = ClassDNS
		f.Detail = dns.Name + " does not resolve (" + dns.Err + ")"
		f.Retryable = !dns.IsNotFound
	case errors.Is(err, syscall.ECONNREFUSED):
		f.Class, f.Retryable = ClassRefused, true
		f.Detail = "connection to " + host + " refused"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		f.Class, f.Retryable = ClassTimeout, true
		f.Detail = "no answer from " + host + " in time"
	default:
		return nil
	}
	return f
}

func quoteDN(s string) string {
	if s == "" {
		return `""`
	}
	return `"` + s + `"`
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// netRecord carries, in a sign-in's context, the last classified network
// failure of the sign-in's requests: azidentity keeps only the text of the
// errors it gets from its transport, so the transport notes the error
// itself for Classify.
type netRecord struct {
	mu   sync.Mutex
	last *NetFailure
}

type netRecordKey struct{}

func (r *netRecord) note(f *NetFailure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = f
}

func (r *netRecord) get() *NetFailure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// signInError is a failed sign-in together with the network failure under it.
type signInError struct {
	err error
	net *NetFailure
}

func (e *signInError) Error() string   { return e.err.Error() }
func (e *signInError) Unwrap() []error { return []error{e.err, e.net} }

// ClassifyTransportError is what the process's transport returns for err of
// a request to host: a *NetFailure when err is one of the classes, else err.
func ClassifyTransportError(host string, err error) error {
	if nf := netFailure(host, err); nf != nil {
		return nf
	}
	return err
}
