package agent_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

func secretFile(h *harness, file, name, version string) config.File {
	return config.File{Name: file, Mode: 0o440, Object: h.object(config.KindSecret, name, version)}
}

// pemBlocks splits a PEM file into its blocks' types and DER bytes.
func pemBlocks(t *testing.T, data string) (types []string, ders [][]byte) {
	t.Helper()
	rest := []byte(data)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		types = append(types, b.Type)
		ders = append(ders, b.Bytes)
	}
	if strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("trailing non-PEM data in %q", rest)
	}
	return types, ders
}

func checkCertPEM(t *testing.T, name, data string, c *fakeazure.Certificate) {
	t.Helper()
	types, ders := pemBlocks(t, data)
	if strings.Join(types, ",") != "PRIVATE KEY,CERTIFICATE,CERTIFICATE,CERTIFICATE" {
		t.Fatalf("%s: PEM blocks %v, want key then leaf, intermediate, root", name, types)
	}
	key, err := x509.ParsePKCS8PrivateKey(ders[0])
	must(t, err)
	if !key.(interface{ Equal(crypto.PrivateKey) bool }).Equal(c.Key) {
		t.Errorf("%s: private key is not the certificate's", name)
	}
	for i, want := range []*x509.Certificate{c.Leaf, c.Intermediate, c.Root} {
		if got, _ := x509.ParseCertificate(ders[i+1]); got == nil || !got.Equal(want) {
			t.Errorf("%s: certificate %d is not %s", name, i, want.Subject.CommonName)
		}
	}
}

// TestInitEveryKindAndFormat fetches secrets (plain, base64, hex, pinned),
// certificates (PFX- and PEM-backed, as PEM and as PKCS#12), RSA and EC keys
// and a template, and checks each file as a user would, plus the call budget:
// one token, one GET per distinct object.
func TestInitEveryKindAndFormat(t *testing.T) {
	h := newHarness(t)
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	h.remember("raw bytes", string(raw))
	v1 := h.secret("db-password", "pw-first-Zq8v")
	h.secret("db-password", "pw-second-Zq8v")
	h.secret("db-user", "app-user-Zq8v")
	h.secret("blob-b64", base64.StdEncoding.EncodeToString(raw))
	h.secret("blob-hex", hex.EncodeToString(raw))
	pfxCert := h.cert("tls-pfx", fakeazure.CertificateOptions{ContentType: fakeazure.ContentTypePFX})
	pemCert := h.cert("tls-pem", fakeazure.CertificateOptions{ContentType: fakeazure.ContentTypePEM, KeyType: "EC"})
	rsaKey, err := h.srv.AddKey(vaultName, "signing-rsa", "RSA")
	must(t, err)
	ecKey, err := h.srv.AddKey(vaultName, "signing-ec", "EC")
	must(t, err)

	files := []config.File{
		secretFile(h, "password", "db-password", ""),
		secretFile(h, "password-again", "db-password", ""), // same object: one GET
		secretFile(h, "password-v1", "db-password", v1),
		secretFile(h, "user", "db-user", ""),
		{Name: "blob.b64", Mode: 0o400, Encoding: config.EncodingBase64, Object: h.object(config.KindSecret, "blob-b64", "")},
		{Name: "blob.hex", Mode: 0o400, Encoding: config.EncodingHex, Object: h.object(config.KindSecret, "blob-hex", "")},
		{Name: "tls-pfx.pem", Mode: 0o440, Object: h.object(config.KindCert, "tls-pfx", "")},
		{Name: "tls-pfx.p12", Mode: 0o440, Format: config.FormatPFX, Object: h.object(config.KindCert, "tls-pfx", "")},
		{Name: "tls-pem.pem", Mode: 0o440, Object: h.object(config.KindCert, "tls-pem", "")},
		{Name: "tls-pem.p12", Mode: 0o440, Format: config.FormatPFX, Object: h.object(config.KindCert, "tls-pem", "")},
		{Name: "rsa.pub", Mode: 0o444, Object: h.object(config.KindKey, "signing-rsa", "")},
		{Name: "ec.pub", Mode: 0o444, Object: h.object(config.KindKey, "signing-ec", "")},
		{Name: "db.env", Mode: 0o400, Template: "DB_USER={{ secret \"user\" | envQuote }}\nDB_PASSWORD={{ secret \"password\" | envQuote }}\n"},
	}
	if err := h.run(t.Context(), agent.ModeInit, h.config(0, files...)); err != nil {
		t.Fatalf("init: %v\n%s", err, h.termination())
	}

	if got := h.read("password"); got != "pw-second-Zq8v" {
		t.Errorf("password: latest version not written")
	}
	if h.read("password-again") != h.read("password") {
		t.Errorf("password-again differs from password")
	}
	if got := h.read("password-v1"); got != "pw-first-Zq8v" {
		t.Errorf("password-v1: pinned version not honoured")
	}
	if h.read("blob.b64") != string(raw) || h.read("blob.hex") != string(raw) {
		t.Errorf("decoded blobs differ from the stored bytes")
	}
	checkCertPEM(t, "tls-pfx.pem", h.read("tls-pfx.pem"), pfxCert)
	checkCertPEM(t, "tls-pem.pem", h.read("tls-pem.pem"), pemCert)
	for name, c := range map[string]*fakeazure.Certificate{"tls-pfx.p12": pfxCert, "tls-pem.p12": pemCert} {
		key, leaf, cas, err := pkcs12.DecodeChain([]byte(h.read(name)), "")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !key.(interface{ Equal(crypto.PrivateKey) bool }).Equal(c.Key) || !leaf.Equal(c.Leaf) || len(cas) != 2 {
			t.Errorf("%s: wrong key, leaf or chain length %d", name, len(cas))
		}
	}
	for name, want := range map[string]crypto.PublicKey{"rsa.pub": rsaKey.Public, "ec.pub": ecKey.Public} {
		types, ders := pemBlocks(t, h.read(name))
		if len(types) != 1 || types[0] != "PUBLIC KEY" {
			t.Fatalf("%s: blocks %v", name, types)
		}
		pub, err := x509.ParsePKIXPublicKey(ders[0])
		must(t, err)
		if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
			t.Errorf("%s: not the key's public key", name)
		}
	}
	if _, ok := ecKey.Public.(*ecdsa.PublicKey); !ok {
		t.Fatalf("EC key is %T", ecKey.Public)
	}
	if got, want := h.read("db.env"), "DB_USER='app-user-Zq8v'\nDB_PASSWORD='pw-second-Zq8v'\n"; got != want {
		t.Errorf("db.env is not the rendered template")
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(h.dir, f.Name))
		must(t, err)
		if fi.Mode().Perm() != os.FileMode(f.Mode) {
			t.Errorf("%s: mode %v, want %v", f.Name, fi.Mode().Perm(), f.Mode)
		}
	}
	must(t, agent.Probe(h.dir))

	// Call budget: one token for the process; one GET per distinct object
	// (db-password latest and v1, db-user, two blobs, two certs; two keys).
	if n := h.srv.Count(fakeazure.EndpointToken, h.clientID); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
	if n := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); n != 7 {
		t.Errorf("secret GETs = %d, want 7", n)
	}
	if n := h.srv.Count(fakeazure.EndpointGetKey, h.clientID); n != 2 {
		t.Errorf("key GETs = %d, want 2", n)
	}
	// One audit line per GET, naming vault, object, version and client id.
	audits := h.logLines("fetch")
	if len(audits) != 9 {
		t.Errorf("audit lines = %d, want 9", len(audits))
	}
	for _, a := range audits {
		if a["vault"] != h.vaultURL || a["clientId"] != h.clientID || a["object"] == "" || a["version"] == "" || a["result"] != "success" {
			t.Errorf("audit line lacks vault, object, version, client id or result: %v", a)
		}
	}
}

// TestSidecarRotationAndUnchangedCycles: cycles that see no change publish
// nothing; a rotated secret reaches the file with the first cycle that starts
// after the rotation.
func TestSidecarRotationAndUnchangedCycles(t *testing.T) {
	h := newHarness(t)
	h.secret("api-key", "key-one-Yy7")
	h.secret("other", "other-Yy7")
	c := h.config(200*time.Millisecond, secretFile(h, "api-key", "api-key", ""), secretFile(h, "other", "other", ""))
	stop := h.start(c)
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	if h.read("api-key") != "key-one-Yy7" {
		t.Fatal("first value not written")
	}
	first := h.dataTarget()
	gets := func() int { return h.srv.Count(fakeazure.EndpointGetSecret, h.clientID) }
	n := gets()
	eventually(t, "two more cycles", 30*time.Second, func() bool { return gets() >= n+4 })
	if got := h.dataTarget(); got != first {
		t.Errorf("unchanged cycles published a new snapshot: %s -> %s", first, got)
	}

	logMark := len(h.logs.String())
	h.secret("api-key", "key-two-Yy7")
	eventually(t, "the rotated value", 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, "api-key"))
		return string(b) == "key-two-Yy7"
	})
	// From the log, which is in order: at most the fetch in flight at the
	// rotation and the next one succeed before the new snapshot.
	fetches := 0
	for _, line := range strings.Split(h.logs.String()[logMark:], "\n") {
		if strings.Contains(line, `"msg":"files written"`) {
			break
		}
		if strings.Contains(line, `"msg":"fetch"`) && strings.Contains(line, `"object":"api-key"`) && strings.Contains(line, `"result":"success"`) {
			fetches++
		}
	}
	if fetches > 2 {
		t.Errorf("rotation reached the file after %d fetches, want the next cycle's", fetches)
	}
	if h.read("other") != "other-Yy7" {
		t.Errorf("other file changed")
	}
	if err := stop(); err != nil {
		t.Fatalf("sidecar after SIGTERM: %v", err)
	}
	if h.termination() != "" {
		t.Errorf("clean exit wrote a termination message: %s", h.termination())
	}
}

// metric reads one sample from the sidecar's metrics endpoint.
func metric(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	lines := h.logLines("serving metrics")
	if len(lines) == 0 {
		t.Fatal("no metrics listener logged")
	}
	resp, err := http.Get("http://" + lines[0]["addr"].(string) + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("metric %s not found in:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	must(t, err)
	return v
}

// TestSidecarOutageKeepsLastGoodFiles: while everything answers 503 the files
// and the snapshot stay as they were, failures show in the metrics, and the
// agent recovers when the service does.
func TestSidecarOutageKeepsLastGoodFiles(t *testing.T) {
	h := newHarness(t)
	h.secret("api-key", "key-one-Xx6")
	c := h.config(200*time.Millisecond, secretFile(h, "api-key", "api-key", ""))
	stop := h.start(c)
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	first := h.dataTarget()
	lastSuccess := metric(t, h, "kvinject_agent_last_success_timestamp_seconds")
	if lastSuccess == 0 {
		t.Errorf("last success time not set after the first fetch")
	}

	h.srv.SetOutage(true)
	h.secret("api-key", "key-two-Xx6") // stored, but not served during the outage
	eventually(t, "two failed cycles", 30*time.Second, func() bool {
		return metric(t, h, `kvinject_agent_cycles_total{result="error"}`) >= 2
	})
	if h.read("api-key") != "key-one-Xx6" || h.dataTarget() != first {
		t.Fatal("the outage changed the files")
	}
	during := metric(t, h, "kvinject_agent_last_success_timestamp_seconds")
	eventually(t, "two more failed cycles", 30*time.Second, func() bool {
		return metric(t, h, `kvinject_agent_cycles_total{result="error"}`) >= 4
	})
	if got := metric(t, h, "kvinject_agent_last_success_timestamp_seconds"); got != during || got < lastSuccess {
		t.Errorf("last success moved during the outage: %v -> %v", during, got)
	}
	if metric(t, h, `kvinject_agent_fetches_total{result="retryable_error"}`) == 0 {
		t.Errorf("failed fetches not counted")
	}
	if len(h.logLines("refresh failed; keeping the last good files")) == 0 {
		t.Errorf("no log line for the failed refresh")
	}

	h.srv.SetOutage(false)
	eventually(t, "recovery", 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, "api-key"))
		return string(b) == "key-two-Xx6"
	})
	must(t, stop())
}

// TestInitRidesOut429Storm: throttled GETs are retried with backoff until
// every object is fetched; each 429 costs exactly one extra request.
func TestInitRidesOut429Storm(t *testing.T) {
	h := newHarness(t)
	var files []config.File
	for i := range 12 {
		name := "s" + strconv.Itoa(i)
		h.secret(name, "storm-value-"+name+"-Ww5")
		files = append(files, secretFile(h, name, name, ""))
	}
	const faults = 24
	h.srv.Fail(fakeazure.Target{Endpoint: fakeazure.EndpointGetSecret}, faults, fakeazure.Fault{Status: http.StatusTooManyRequests})
	if err := h.run(t.Context(), agent.ModeInit, h.config(0, files...)); err != nil {
		t.Fatalf("init: %v", err)
	}
	for i := range 12 {
		name := "s" + strconv.Itoa(i)
		if h.read(name) != "storm-value-"+name+"-Ww5" {
			t.Errorf("%s: wrong content", name)
		}
	}
	if n := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); n != 12+faults {
		t.Errorf("GETs = %d, want %d (one per object plus one per 429)", n, 12+faults)
	}
}

// TestInitHonoursRetryAfter: a 429 with Retry-After delays the retry by at
// least that long (backoff alone would retry within 500ms).
func TestInitHonoursRetryAfter(t *testing.T) {
	h := newHarness(t)
	h.secret("s", "value-Vv4")
	h.srv.Fail(fakeazure.Target{Endpoint: fakeazure.EndpointGetSecret}, 1, fakeazure.Fault{Status: http.StatusTooManyRequests, RetryAfter: 2 * time.Second})
	start := time.Now()
	if err := h.run(t.Context(), agent.ModeInit, h.config(0, secretFile(h, "s", "s", ""))); err != nil {
		t.Fatalf("init: %v", err)
	}
	if elapsed := time.Since(start); elapsed < 2*time.Second {
		t.Errorf("retried after %s, before Retry-After's 2s", elapsed)
	}
}

// TestInitGivesUpAtDeadline: an outage longer than the deadline fails init
// with the last status and how many attempts were made.
func TestInitGivesUpAtDeadline(t *testing.T) {
	h := newHarness(t)
	h.secret("s", "value-Uu3")
	h.srv.SetOutage(true)
	err := h.run(t.Context(), agent.ModeInit, h.config(0, secretFile(h, "s", "s", "")), func(o *agent.Options) { o.Deadline = 3 * time.Second })
	if err == nil {
		t.Fatal("init succeeded during an outage")
	}
	msg := h.termination()
	t.Logf("termination message:\n%s", msg)
	for _, want := range []string{"secret s", h.vaultURL, "HTTP 503", "gave up after", "3s deadline", h.clientID, "usually temporary"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	if _, err := os.Lstat(filepath.Join(h.dir, "..data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed init published a snapshot")
	}
}

// TestForbiddenFailsFastWithFix: 403 is not retried, and the termination
// message says which object, vault, status, code and client, and which role
// to grant.
func TestForbiddenFailsFastWithFix(t *testing.T) {
	h := newHarness(t)
	h.secret("db-password", "value-Tt2")
	_, err := h.srv.AddKey(vaultName, "signing", "RSA")
	must(t, err)
	h.srv.Revoke(vaultName, h.clientID)
	c := h.config(0,
		secretFile(h, "password", "db-password", ""),
		config.File{Name: "signing.pub", Mode: 0o444, Object: h.object(config.KindKey, "signing", "")})
	if err := h.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("init succeeded without a role assignment")
	}
	msg := h.termination()
	t.Logf("termination message:\n%s", msg)
	for _, want := range []string{
		"secret db-password (file password)", "key signing (file signing.pub)", h.vaultURL,
		"HTTP 403 ForbiddenByRbac", h.clientID, `"Key Vault Secrets User"`, `"Key Vault Reader"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	if n := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); n != 1 {
		t.Errorf("secret GETs = %d: a 403 was retried", n)
	}
}

// TestFederationMismatchNamesTheSubject: without a federated credential for
// the pod's service account Entra answers AADSTS70021, which is not retried,
// and the fix names the subject to federate.
func TestFederationMismatchNamesTheSubject(t *testing.T) {
	h := newHarness(t)
	h.secret("s", "value-Ss1")
	h.secret("t", "value-Tt1")
	_, err := h.srv.AddKey(vaultName, "k", "EC")
	must(t, err)
	h.srv.RemoveFederatedCredentials(h.clientID)
	must(t, h.srv.AddFederatedCredential(h.clientID, h.iss.URL(), "system:serviceaccount:"+namespace+":someone-else"))
	c := h.config(0, secretFile(h, "s", "s", ""), secretFile(h, "t", "t", ""),
		config.File{Name: "k.pub", Mode: 0o444, Object: h.object(config.KindKey, "k", "")})
	if err := h.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("init succeeded without a matching federated credential")
	}
	msg := h.termination()
	t.Logf("termination message:\n%s", msg)
	// Every object failed the same way: one entry, one fix.
	if n := strings.Count(msg, "Fix:"); n != 1 {
		t.Errorf("%d fixes for one sign-in failure", n)
	}
	for _, want := range []string{"secret s, secret t, key k: sign-in failed", "HTTP 400 AADSTS70021", h.clientID,
		"federated identity credential", "subject = system:serviceaccount:shop:checkout", "api://AzureADTokenExchange"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	if n := h.srv.Count(fakeazure.EndpointToken, h.clientID); n != 1 {
		t.Errorf("token requests = %d: AADSTS70021 was asked again (per object or as a retry)", n)
	}
	if n := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); n != 0 {
		t.Errorf("secret GETs = %d without a token", n)
	}
}

func TestNotFoundNamesTheObject(t *testing.T) {
	h := newHarness(t)
	h.secret("present", "value-Rr0")
	c := h.config(0, secretFile(h, "present", "present", ""), secretFile(h, "gone", "missing", ""),
		config.File{Name: "tls.pem", Mode: 0o440, Object: h.object(config.KindCert, "no-cert", "")})
	if err := h.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("init succeeded with a missing object")
	}
	msg := h.termination()
	t.Logf("termination message:\n%s", msg)
	for _, want := range []string{"HTTP 404 SecretNotFound", `no secret named "missing"`, `no secret named "no-cert"`, "read through the secret of the same name"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	if _, err := os.Lstat(filepath.Join(h.dir, "present")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed init wrote some of the files")
	}
}

// TestTemplateErrors: a reference to an unknown file fails before any request;
// one only known at render time fails after the fetch, without writing
// anything. Both name the template file and line.
func TestTemplateErrors(t *testing.T) {
	h := newHarness(t)
	h.secret("pw", "value-Qq9")
	c := h.config(0, secretFile(h, "pw", "pw", ""),
		config.File{Name: "app.env", Mode: 0o440, Template: "A=1\nB={{ secret \"pwd\" }}\n"})
	if err := h.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("init succeeded with a broken template")
	}
	if msg := h.termination(); !strings.Contains(msg, "app.env:2") || !strings.Contains(msg, `no object file "pwd"`) {
		t.Errorf("termination message does not name the template, line and file:\n%s", msg)
	}
	if n := len(h.srv.Counts()); n != 0 {
		t.Errorf("%d kinds of requests sent for a config that cannot render", n)
	}

	c = h.config(0, secretFile(h, "pw", "pw", ""),
		config.File{Name: "app.env", Mode: 0o440, Template: "A=1\n\nB={{ \"pwd\" | secret }}\n"})
	if err := h.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("init succeeded with a broken template")
	}
	if msg := h.termination(); !strings.Contains(msg, "app.env:3") || !strings.Contains(msg, `secret takes exactly one file name in double quotes`) {
		t.Errorf("termination message does not name the template and line:\n%s", msg)
	}
	if _, err := os.Lstat(filepath.Join(h.dir, "pw")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("files were written although a template failed")
	}
}

// TestSidecarTerminates: SIGTERM ends the sidecar with success whether it is
// idle between cycles, retrying its first fetch, or configured without
// refresh.
func TestSidecarTerminates(t *testing.T) {
	h := newHarness(t)
	h.secret("s", "value-Pp8")
	for _, refresh := range []time.Duration{time.Hour, 0} {
		stop := h.start(h.config(refresh, secretFile(h, "s", "s", "")))
		eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
		if err := stop(); err != nil {
			t.Fatalf("refresh %s: %v", refresh, err)
		}
	}

	h2 := newHarness(t)
	h2.secret("s", "value-Pp8")
	h2.srv.SetOutage(true)
	stop := h2.start(h2.config(time.Hour, secretFile(h2, "s", "s", "")))
	eventually(t, "a failed attempt", 30*time.Second, func() bool { return len(h2.logLines("fetch")) > 0 })
	if err := stop(); err != nil {
		t.Fatalf("during the first fetch: %v", err)
	}
	if h2.termination() != "" {
		t.Errorf("SIGTERM wrote a termination message: %s", h2.termination())
	}
}

func TestConfigErrorsGoToTheTerminationMessage(t *testing.T) {
	h := newHarness(t)
	err := agent.Run(context.Background(), agent.Options{
		Mode: agent.ModeInit, Getenv: func(string) string { return "" }, TerminationLog: h.termLog,
		Logger: slog.New(slog.NewJSONHandler(&h.logs, nil)),
	})
	if err == nil || !strings.Contains(h.termination(), config.EnvVar+" is not set") {
		t.Errorf("missing config: err %v, termination %q", err, h.termination())
	}
	env := h.env(h.config(0, secretFile(h, "s", "s", "")))
	delete(env, "AZURE_CLIENT_ID")
	err = agent.Run(context.Background(), agent.Options{
		Mode: agent.ModeInit, Getenv: func(k string) string { return env[k] }, TerminationLog: h.termLog,
		Logger: slog.New(slog.NewJSONHandler(&h.logs, nil)),
	})
	if err == nil || !strings.Contains(h.termination(), "AZURE_CLIENT_ID not set") {
		t.Errorf("missing identity: err %v, termination %q", err, h.termination())
	}
}

// TestSidecarSurvivesLostAccess: a role assignment removed while the sidecar
// runs fails its cycles (not the process) and keeps the files; restoring it
// lets the next cycle through.
func TestSidecarSurvivesLostAccess(t *testing.T) {
	h := newHarness(t)
	h.secret("api-key", "key-one-Nn5")
	stop := h.start(h.config(200*time.Millisecond, secretFile(h, "api-key", "api-key", "")))
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	first := h.dataTarget()

	h.srv.Revoke(vaultName, h.clientID)
	h.secret("api-key", "key-two-Nn5")
	eventually(t, "two failed cycles", 30*time.Second, func() bool {
		return len(h.logLines("refresh failed; keeping the last good files")) >= 2
	})
	if h.read("api-key") != "key-one-Nn5" || h.dataTarget() != first {
		t.Fatal("lost access changed the files")
	}
	if last := h.logLines("refresh failed; keeping the last good files"); !strings.Contains(last[0]["error"].(string), "HTTP 403 ForbiddenByRbac") {
		t.Errorf("failed refresh logged without the cause: %v", last[0])
	}

	must(t, h.srv.Grant(vaultName, h.clientID, fakeazure.RoleSecretsUser, "*"))
	eventually(t, "recovery", 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, "api-key"))
		return string(b) == "key-two-Nn5"
	})
	must(t, stop())
}

// TestSidecarAfterInit: in classic mode an init container writes the files
// and a sidecar takes over; finding the same content, it publishes nothing.
func TestSidecarAfterInit(t *testing.T) {
	h := newHarness(t)
	h.secret("api-key", "key-Mm4")
	c := h.config(time.Hour, secretFile(h, "api-key", "api-key", ""))
	must(t, h.run(t.Context(), agent.ModeInit, c))
	first := h.dataTarget()
	stop := h.start(c)
	eventually(t, "the sidecar's first fetch", 30*time.Second, func() bool {
		return len(h.logLines("files unchanged")) == 1
	})
	must(t, stop())
	if h.dataTarget() != first || len(h.logLines("files written")) != 1 {
		t.Errorf("the sidecar republished unchanged files")
	}
}

// TestNoFiles: a pod that asks for nothing still gets a ready (empty) snapshot.
func TestNoFiles(t *testing.T) {
	h := newHarness(t)
	must(t, h.run(t.Context(), agent.ModeInit, h.config(0)))
	must(t, agent.Probe(h.dir))
}

// TestWrongVaultSuffixCostsOneRequest: the agent signs in ahead for
// https://<VaultSuffix>; when that is not the resource the vault names in its
// challenge, the guess is wasted (AADSTS500011) but the fetch still works.
func TestWrongVaultSuffixCostsOneRequest(t *testing.T) {
	h := newHarness(t)
	h.secret("s", "value-Ll3")
	c := h.config(0, secretFile(h, "s", "s", ""))
	c.Cloud.VaultSuffix = "vault.example.test"
	if err := h.run(t.Context(), agent.ModeInit, c); err != nil {
		t.Fatalf("init: %v\n%s", err, h.termination())
	}
	if h.read("s") != "value-Ll3" {
		t.Error("wrong content")
	}
	if n := h.srv.Count(fakeazure.EndpointToken, h.clientID); n != 2 {
		t.Errorf("token requests = %d, want 2 (the wasted guess and the real one)", n)
	}
}

// TestSidecarHonoursRetryAfterAcrossCycles: a 429 whose Retry-After outlasts
// the cycle fails the cycle, and the next attempt waits for Retry-After
// rather than the shorter failure backoff.
func TestSidecarHonoursRetryAfterAcrossCycles(t *testing.T) {
	h := newHarness(t)
	h.secret("s", "value-Kk2")
	stop := h.start(h.config(200*time.Millisecond, secretFile(h, "s", "s", "")))
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	h.srv.Fail(fakeazure.Target{Endpoint: fakeazure.EndpointGetSecret}, 1, fakeazure.Fault{Status: http.StatusTooManyRequests, RetryAfter: 2 * time.Second})
	throttledAt := func() time.Time {
		for _, l := range h.logLines("fetch") {
			if l["status"] == float64(429) {
				ts, _ := time.Parse(time.RFC3339Nano, l["time"].(string))
				return ts
			}
		}
		return time.Time{}
	}
	eventually(t, "the 429", 30*time.Second, func() bool { return !throttledAt().IsZero() })
	at := throttledAt()
	eventually(t, "the next fetch", 30*time.Second, func() bool {
		lines := h.logLines("fetch")
		return lines[len(lines)-1]["status"] == nil && len(h.logLines("refresh failed; keeping the last good files")) > 0
	})
	must(t, stop())
	for _, l := range h.logLines("fetch") {
		ts, _ := time.Parse(time.RFC3339Nano, l["time"].(string))
		if ts.After(at) && ts.Sub(at) < 2*time.Second {
			t.Errorf("fetched %s after a 429 with Retry-After: 2s", ts.Sub(at))
		}
	}
}

// TestThrottleWithoutRetryAfterWaitsOneSecond: Key Vault often sends 429 and
// 503 without Retry-After; the agent never retries sooner than 1 s.
func TestThrottleWithoutRetryAfterWaitsOneSecond(t *testing.T) {
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		h := newHarness(t)
		h.secret("s", "value-Tt6")
		h.srv.Fail(fakeazure.Target{Endpoint: fakeazure.EndpointGetSecret}, 3, fakeazure.Fault{Status: status})
		if err := h.run(t.Context(), agent.ModeInit, h.config(0, secretFile(h, "s", "s", ""))); err != nil {
			t.Fatalf("init: %v", err)
		}
		var at []time.Time
		for _, l := range h.logLines("fetch") {
			ts, _ := time.Parse(time.RFC3339Nano, l["time"].(string))
			at = append(at, ts)
		}
		if len(at) != 4 {
			t.Fatalf("%d: %d fetch lines, want 4", status, len(at))
		}
		for i := 1; i < len(at); i++ {
			if d := at[i].Sub(at[i-1]); d < time.Second {
				t.Errorf("%d: attempt %d came %s after the one before, want ≥ 1s", status, i+1, d)
			}
		}
	}
}

// TestSidecarOutageNeverRaisesTheRate: during an outage a sidecar asks no
// more often than when healthy: one GET per object per refresh interval.
func TestSidecarOutageNeverRaisesTheRate(t *testing.T) {
	h := newHarness(t)
	h.secret("a", "value-Uu7")
	h.secret("b", "value-Uu8")
	const interval = 300 * time.Millisecond
	stop := h.start(h.config(interval, secretFile(h, "a", "a", ""), secretFile(h, "b", "b", "")))
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	h.srv.SetOutage(true)
	before, from := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID), time.Now()
	eventually(t, "six failed refreshes", 30*time.Second, func() bool {
		return len(h.logLines("refresh failed; keeping the last good files")) >= 6
	})
	gets, elapsed := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID)-before, time.Since(from)
	must(t, stop())
	// Healthy: 2 GETs per interval; allow the slot in progress.
	if limit := 2 * (int(elapsed/interval) + 2); gets > limit {
		t.Errorf("%d GETs in %s of outage, more than the healthy %d", gets, elapsed.Round(time.Millisecond), limit)
	}
}

// scrape reads the sidecar's whole metrics page.
func scrape(t *testing.T, h *harness) string {
	t.Helper()
	lines := h.logLines("serving metrics")
	if len(lines) == 0 {
		t.Fatal("no metrics listener logged")
	}
	resp, err := http.Get("http://" + lines[0]["addr"].(string) + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return string(body)
}

// TestSidecarCertificateExpiry: a file holding a certificate, read as a cert
// or through its backing secret, exports its leaf's NotAfter by file name,
// follows a renewed certificate, and a plain secret exports none. The page
// names files only: no object, no vault, no value.
func TestSidecarCertificateExpiry(t *testing.T) {
	h := newHarness(t)
	h.secret("db-password", "pw-Tt4")
	first := h.cert("web-cert", fakeazure.CertificateOptions{ContentType: fakeazure.ContentTypePEM, Validity: 10 * 24 * time.Hour})
	c := h.config(200*time.Millisecond,
		config.File{Name: "tls.pem", Mode: 0o440, Object: h.object(config.KindCert, "web-cert", "")},
		secretFile(h, "backing.pem", "web-cert", ""),
		secretFile(h, "password", "db-password", ""))
	stop := h.start(c)
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	for _, f := range []string{"tls.pem", "backing.pem"} {
		if got := metric(t, h, `kvinject_agent_certificate_expiration_timestamp_seconds{file="`+f+`"}`); got != float64(first.Leaf.NotAfter.Unix()) {
			t.Errorf("%s: expiry %v, want the leaf's %d", f, got, first.Leaf.NotAfter.Unix())
		}
	}
	body := scrape(t, h)
	if strings.Contains(body, `file="password"`) {
		t.Errorf("a plain secret has an expiry:\n%s", body)
	}
	for _, name := range []string{"web-cert", "db-password", strings.TrimPrefix(strings.TrimSuffix(h.vaultURL, "/"), "https://")} {
		if strings.Contains(body, name) {
			t.Errorf("the metrics name %q:\n%s", name, body)
		}
	}
	h.mu.Lock()
	for _, leak := range leaks(h.served, map[string]string{"metrics": body}) {
		t.Error(leak)
	}
	h.mu.Unlock()

	renewed := h.cert("web-cert", fakeazure.CertificateOptions{ContentType: fakeazure.ContentTypePEM, Validity: 20 * 24 * time.Hour})
	eventually(t, "the renewed certificate's expiry", 30*time.Second, func() bool {
		return metric(t, h, `kvinject_agent_certificate_expiration_timestamp_seconds{file="tls.pem"}`) == float64(renewed.Leaf.NotAfter.Unix())
	})
	must(t, stop())
}

// TestConfigOfAnotherRelease: a config of a schema version this agent does
// not read stops the agent before any request, and the termination message
// names the version it got, the ones it supports and the fix.
func TestConfigOfAnotherRelease(t *testing.T) {
	h := newHarness(t)
	h.secret("s", "value-Vv3")
	c := h.config(0, secretFile(h, "s", "s", ""))
	c.Version = config.VersionEnv + 1
	if err := h.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("init accepted a config of another schema version")
	}
	msg := h.termination()
	for _, want := range []string{
		fmt.Sprintf("KVINJECT_CONFIG has schema version %d", config.VersionEnv+1),
		fmt.Sprintf("this agent supports version %d, %d", config.Version, config.VersionEnv),
		"Fix: run an agent image of the same release as the webhook",
		"KVINJECT_AGENT_IMAGE",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	if n := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); n != 0 {
		t.Errorf("%d GETs with a config the agent cannot read", n)
	}
}

// TestEnvFile: the variables are written into the env file in the kubelet's
// format, in the same snapshot as the files; a value the format cannot carry
// fails the cycle before anything is written, naming the variable, the file
// and the object, never the value.
func TestEnvFile(t *testing.T) {
	h := newHarness(t)
	h.secret("db-password", "pw $one\"#-Ee4")
	c := h.config(0, secretFile(h, "db-password", "db-password", ""),
		config.File{Name: "dsn", Mode: 0o440, Template: `Server=db;Password={{ secret "db-password" }}`})
	c.Version = config.VersionEnv
	c.Env = []config.Env{{Name: "ConnectionStrings__Db", File: "dsn"}, {Name: "DB_PASSWORD", File: "db-password"}}
	if err := h.run(t.Context(), agent.ModeInit, c); err != nil {
		t.Fatalf("init: %v\n%s", err, h.termination())
	}
	want := config.EnvCheck + "='" + config.EnvCheckValue + "'\nConnectionStrings__Db='Server=db;Password=pw $one\"#-Ee4'\nDB_PASSWORD='pw $one\"#-Ee4'\n"
	if got := h.read(config.EnvFile); got != want {
		t.Errorf("%s = %q, want %q", config.EnvFile, got, want)
	}
	fi, err := os.Stat(filepath.Join(h.dir, h.dataTarget(), config.EnvFile))
	must(t, err)
	if fi.Mode().Perm() != 0o440 {
		t.Errorf("env file mode %v, want 0440 (the files' group may read it)", fi.Mode().Perm())
	}

	h2 := newHarness(t)
	h2.secret("api-key", "it's-Ff5")
	c = h2.config(0, secretFile(h2, "api-key", "api-key", ""))
	c.Version = config.VersionEnv
	c.Env = []config.Env{{Name: "API_KEY", File: "api-key"}}
	if err := h2.run(t.Context(), agent.ModeInit, c); err == nil {
		t.Fatal("init succeeded with a value the env file cannot carry")
	}
	msg := h2.termination()
	for _, want := range []string{`environment variable "API_KEY"`, "single quote", "from file api-key (secret api-key in vault", "Fix:"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message lacks %q:\n%s", want, msg)
		}
	}
	if _, err := os.Lstat(filepath.Join(h2.dir, "api-key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("files were written although the env file could not be")
	}
}

// TestSidecarRestartOnChange: with OnChange restart the sidecar keeps
// running while refreshes find nothing new, returns ErrRestart (and writes
// no termination message) only after a refresh published the new snapshot,
// and a restarted sidecar whose first cycle writes (the vault changed during
// the restart) or finds the snapshot does not exit again: no restart loop.
func TestSidecarRestartOnChange(t *testing.T) {
	h := newHarness(t)
	h.secret("api-key", "key-one-Rr2")
	c := h.config(200*time.Millisecond, secretFile(h, "api-key", "api-key", ""))
	c.Version, c.OnChange = config.VersionEnv, config.OnChangeRestart
	c.Env = []config.Env{{Name: "API_KEY", File: "api-key"}}
	sidecar := func() (<-chan error, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.run(ctx, agent.ModeSidecar, c) }()
		return done, cancel
	}
	gets := func() int { return h.srv.Count(fakeazure.EndpointGetSecret, h.clientID) }
	stillRunning := func(done <-chan error, what string) {
		n := gets()
		eventually(t, "three refreshes", 30*time.Second, func() bool { return gets() >= n+3 })
		select {
		case err := <-done:
			t.Fatalf("%s: the sidecar exited (%v) although nothing changed", what, err)
		default:
		}
	}

	done, cancel := sidecar()
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	stillRunning(done, "unchanged refreshes")
	h.secret("api-key", "key-two-Rr2")
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrRestart) {
			t.Fatalf("after a change: %v, want ErrRestart", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sidecar did not exit after the change")
	}
	cancel()
	if got := h.read(config.EnvFile); !strings.Contains(got, "API_KEY='key-two-Rr2'") {
		t.Errorf("the sidecar exited before publishing the new value")
	}
	if msg := h.termination(); msg != "" {
		t.Errorf("a restart wrote a termination message: %s", msg)
	}

	// Restarted while the vault changed again: its first cycle writes the
	// new value for the restarting apps, and it does not exit for it.
	h.secret("api-key", "key-three-Rr2")
	done, cancel = sidecar()
	defer cancel()
	eventually(t, "the value of the restart", 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(h.dir, "api-key"))
		return string(b) == "key-three-Rr2"
	})
	stillRunning(done, "after a restart")
}

// TestSidecarHook: a refresh that published a new snapshot POSTs to the
// on-change hook once the files hold the new value, retrying a failed call;
// unchanged refreshes and the first cycle call nothing.
func TestSidecarHook(t *testing.T) {
	h := newHarness(t)
	h.secret("api-key", "key-one-Hh3")
	var mu sync.Mutex
	var seen []string // the file's content at each call
	fail := 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/reload" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		b, _ := os.ReadFile(filepath.Join(h.dir, "api-key"))
		seen = append(seen, string(b))
		if fail > 0 {
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c := h.config(200*time.Millisecond, secretFile(h, "api-key", "api-key", ""))
	c.Version, c.OnChange = config.VersionEnv, srv.URL+"/reload"
	stop := h.start(c)
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	gets := func() int { return h.srv.Count(fakeazure.EndpointGetSecret, h.clientID) }
	n := gets()
	eventually(t, "three refreshes", 30*time.Second, func() bool { return gets() >= n+3 })
	mu.Lock()
	if len(seen) != 0 {
		t.Errorf("the hook was called %d times without a change", len(seen))
	}
	mu.Unlock()
	h.secret("api-key", "key-two-Hh3")
	eventually(t, "the hook's retry", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2
	})
	must(t, stop())
	mu.Lock()
	defer mu.Unlock()
	if seen[0] != "key-two-Hh3" || seen[1] != "key-two-Hh3" {
		t.Errorf("the hook saw %q, want the new value at every call", seen)
	}
}
