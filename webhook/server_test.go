package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// servingCert is a self-signed serving certificate for localhost.
type servingCert struct {
	serial  *big.Int
	cert    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
}

func newServingCert(t *testing.T, serial int64) servingCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "kvinject-webhook"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return servingCert{
		serial:  tmpl.SerialNumber,
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

// writeSecretVolume writes c into dir the way kubelet updates a mounted
// Secret: a new timestamped directory, an atomic swap of the ..data symlink,
// then removal of the old directory. tls.crt and tls.key are stable symlinks
// through ..data.
func writeSecretVolume(t *testing.T, dir string, c servingCert, generation int) {
	t.Helper()
	ts := "..gen" + strconv.Itoa(generation)
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": c.certPEM, "tls.key": c.keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, ts, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer runs the real webhook server (as Start configures it) on
// loopback with the handler, until the test ends or stop is called. stop
// returns once the server has shut down.
func startServer(t *testing.T, o Options, h http.Handler) (stop func()) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	srv := newServer(o, mux)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	eventually(t, 10*time.Second, "server started", func() error { return srv.StartedChecker()(nil) })
	return stop
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// servedSerial does one TLS handshake, verifying the server against roots,
// and returns the serial number of the certificate it presented.
func servedSerial(addr string, roots *x509.CertPool) (*big.Int, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func TestServerReloadsRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	a, b := newServingCert(t, 1001), newServingCert(t, 2002)
	roots := x509.NewCertPool()
	roots.AddCert(a.cert)
	roots.AddCert(b.cert)
	writeSecretVolume(t, dir, a, 1)
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	startServer(t, Options{Host: "127.0.0.1", Port: port, CertDir: dir}, newHarness(serviceAccounts{"shop/web": webSA}).h)

	serial, err := servedSerial(addr, roots)
	if err != nil || serial.Cmp(a.serial) != 0 {
		t.Fatalf("first handshake: serial %v, err %v; want cert A (%v)", serial, err, a.serial)
	}

	writeSecretVolume(t, dir, b, 2)
	// The certwatcher sees the swap through inotify, or at the latest on its
	// 10s poll.
	eventually(t, 30*time.Second, "new certificate served", func() error {
		s, err := servedSerial(addr, roots)
		if err != nil {
			return err
		}
		if s.Cmp(b.serial) != 0 {
			return &wrongSerial{s}
		}
		return nil
	})

	// A review over the rotated connection still works end to end.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer client.CloseIdleConnections()
	res, err := client.Post("https://"+addr+Path, "application/json", bytes.NewReader(review(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Response == nil || !out.Response.Allowed || out.Response.Patch == nil {
		t.Fatalf("review over HTTPS: %v %+v", err, out.Response)
	}
}

type wrongSerial struct{ got *big.Int }

func (e *wrongSerial) Error() string { return "still serving serial " + e.got.String() }

func TestServerEnforcesMinimumTLSVersion(t *testing.T) {
	dir := t.TempDir()
	c := newServingCert(t, 1)
	writeSecretVolume(t, dir, c, 1)
	port := freePort(t)
	startServer(t, Options{Host: "127.0.0.1", Port: port, CertDir: dir, TLSMinVersion: tls.VersionTLS13}, http.NotFoundHandler())
	roots := x509.NewCertPool()
	roots.AddCert(c.cert)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: tls.VersionTLS12})
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.2 handshake succeeded with --tls-min-version=1.3")
	}
	conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS 1.3 handshake: %v", err)
	}
	conn.Close()
}

// On shutdown the server stops accepting connections but lets a review that
// is already running finish and answers it.
func TestServerFinishesInFlightReviewsOnShutdown(t *testing.T) {
	dir := t.TempDir()
	c := newServingCert(t, 1)
	writeSecretVolume(t, dir, c, 1)
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	entered, release := make(chan struct{}), make(chan struct{})
	h := newHarness(serviceAccounts{"shop/web": webSA}).h
	stop := startServer(t, Options{Host: "127.0.0.1", Port: port, CertDir: dir}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		h.ServeHTTP(w, r)
	}))
	roots := x509.NewCertPool()
	roots.AddCert(c.cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer client.CloseIdleConnections()

	type result struct {
		res *http.Response
		err error
	}
	resc := make(chan result, 1)
	go func() {
		res, err := client.Post("https://"+addr+Path, "application/json", bytes.NewReader(review(t, nil)))
		resc <- result{res, err}
	}()
	<-entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	eventually(t, 10*time.Second, "listener closed", func() error {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return errors.New("still accepting connections")
		}
		return nil
	})
	select {
	case <-stopped:
		t.Fatal("server stopped before its in-flight review finished")
	default:
	}
	close(release)
	r := <-resc
	if r.err != nil {
		t.Fatalf("in-flight review: %v", r.err)
	}
	defer r.res.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(r.res.Body).Decode(&out); err != nil || out.Response == nil || !out.Response.Allowed {
		t.Fatalf("in-flight review: HTTP %d, %v %+v", r.res.StatusCode, err, out.Response)
	}
	<-stopped
}

// The API server talks HTTP/2 to webhooks: a review over HTTP/2 is answered.
func TestServerAnswersOverHTTP2(t *testing.T) {
	dir := t.TempDir()
	c := newServingCert(t, 1)
	writeSecretVolume(t, dir, c, 1)
	port := freePort(t)
	startServer(t, Options{Host: "127.0.0.1", Port: port, CertDir: dir}, newHarness(serviceAccounts{"shop/web": webSA}).h)
	roots := x509.NewCertPool()
	roots.AddCert(c.cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer client.CloseIdleConnections()
	res, err := client.Post("https://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(port))+Path, "application/json", bytes.NewReader(review(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", res.Proto)
	}
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Response == nil || out.Response.Patch == nil {
		t.Fatalf("review over HTTP/2: %v %+v", err, out.Response)
	}
}

// The hostile patterns of issue 14 against the real server: 20 connections
// announcing 7 MiB bodies and sending one byte, 64 slow bodies, 200 stalled
// HTTP/2 streams. The Go heap (the attacking clients' included: they run in
// this process) stays under half of the Deployment's 128 Mi limit, and a
// genuine review is answered meanwhile.
func TestHostileTrafficStaysBounded(t *testing.T) {
	dir := t.TempDir()
	c := newServingCert(t, 1)
	writeSecretVolume(t, dir, c, 1)
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	h := newHarness(serviceAccounts{"shop/web": webSA}).h
	startServer(t, Options{Host: "127.0.0.1", Port: port, CertDir: dir}, h)
	roots := x509.NewCertPool()
	roots.AddCert(c.cert)
	tlsConfig := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	before := heapInUse()

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// 20 HTTP/1.1 requests announcing 7 MiB, sending "{".
	for range 20 {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", Path, 7<<20)
	}
	// 64 slow bodies: 64 KiB sent, then nothing.
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	for range 64 {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", Path, 3<<20)
		_, _ = conn.Write(chunk)
	}
	// 200 stalled HTTP/2 streams.
	h2 := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: tlsConfig.Clone()}}
	defer h2.CloseIdleConnections()
	var writers []*io.PipeWriter
	defer func() {
		for _, w := range writers {
			w.Close()
		}
	}()
	for range 200 {
		r, w := io.Pipe()
		writers = append(writers, w)
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+Path, r)
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = 7 << 20
		go func() {
			if res, err := h2.Do(req); err == nil {
				res.Body.Close()
			}
		}()
		go func() { _, _ = w.Write([]byte("{")) }()
	}
	time.Sleep(2 * time.Second) // let the server take in what was sent
	// The attacking clients run in this process too: their buffers count.
	if grown := int64(heapInUse()) - int64(before); grown > 64<<20 {
		t.Errorf("hostile traffic grew the heap by %d MiB, want < 64 (half the Deployment's 128 Mi limit), the clients' own buffers included", grown>>20)
	}
	// A genuine review is answered meanwhile.
	// Within the webhook's timeoutSeconds in manifests/.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone()}}
	defer client.CloseIdleConnections()
	res, err := client.Post("https://"+addr+Path, "application/json", bytes.NewReader(review(t, nil)))
	if err != nil {
		t.Fatalf("genuine review under hostile traffic: %v", err)
	}
	defer res.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Response == nil || out.Response.Patch == nil {
		t.Fatalf("genuine review under hostile traffic: %v %+v", err, out.Response)
	}
	t.Logf("heap grew by %.1f MiB under hostile traffic", float64(int64(heapInUse())-int64(before))/(1<<20))
}

// A connection the API server dialed and kept idle in its pool before its
// first request (Go's Transport parks a spare dialed connection) must still
// get its review answered: the body's deadline counts from the request's
// arrival, not from the TLS handshake.
func TestFirstRequestOnAParkedConnectionIsAnswered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newServingCert(t, 1)
	writeSecretVolume(t, dir, c, 1)
	port := freePort(t)
	startServer(t, Options{Host: "127.0.0.1", Port: port, CertDir: dir}, newHarness(serviceAccounts{"shop/web": webSA}).h)
	roots := x509.NewCertPool()
	roots.AddCert(c.cert)
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Parked for longer than the body's bound, less than the header bound.
	time.Sleep(readTimeout + 500*time.Millisecond)
	body := review(t, nil)
	req, _ := http.NewRequest(http.MethodPost, "https://localhost"+Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Response == nil || out.Response.Patch == nil {
		t.Fatalf("review on a parked connection: %v %+v", err, out.Response)
	}
}
