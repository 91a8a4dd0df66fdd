package e2e

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/injector"
)

// The agent on the real node (see node_test.go): the pod is created through
// the API server and injected by the webhook, and the kubelet runs it as
// admitted; the projected token is the kubelet's, and the emulated Entra ID
// verifies it against the API server's own issuer (OIDC discovery and JWKS).

// Files appear as the app container sees them, with the values the vault
// holds and the modes asked for: a secret, a certificate with its key and
// chain, a key's public half, a template over them.
func TestAgentFiles(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	const clientID = "00000000-0000-0000-0000-0000000a9e01"
	ns := nodeNamespace(t, s, "web", clientID)

	s.secretFor(t, clientID, "files-db-password", "correct horse battery staple")
	cert, err := s.srv.AddCertificate(vaultName, "files-tls", fakeazure.ContentTypePFX)
	if err != nil {
		t.Fatal(err)
	}
	s.grant(t, clientID, fakeazure.RoleSecretsUser, "files-tls")
	key, err := s.srv.AddKey(vaultName, "files-signing", "EC")
	if err != nil {
		t.Fatal(err)
	}
	s.grant(t, clientID, fakeazure.RoleReader, "files-signing")

	pod := runPod(t, s, ns, "web", nodePodSpec("web", map[string]string{
		"kvinject.io/secret-db-password": "files-db-password",
		"kvinject.io/cert-tls.pem":       "files-tls",
		"kvinject.io/key-signing.pub":    "files-signing",
		"kvinject.io/template-app.env":   `DB_PASSWORD={{ secret "db-password" | envQuote }}`,
		"kvinject.io/objects":            "- {objectName: files-db-password, objectType: secret, objectAlias: db-password.copy, filePermission: \"0640\"}",
	}))
	if agent := initStatus(pod, injector.AgentContainer); agent == nil || agent.State.Terminated == nil || agent.State.Terminated.ExitCode != 0 {
		t.Fatalf("the init agent did not complete: %+v", agent)
	}
	r := waitReport(t, s, ns, pod.Name, time.Minute, func(appReport) bool { return true })
	read := func(name string, mode os.FileMode) []byte {
		t.Helper()
		f, ok := r.Files[name]
		if !ok {
			t.Fatalf("app container reads /mnt/secrets/%s: %v", name, r.ReadErrors[name])
		}
		if f.Mode != fmt.Sprintf("%04o", mode) {
			t.Errorf("/mnt/secrets/%s: mode %s, want %04o", name, f.Mode, mode)
		}
		return []byte(f.Content)
	}

	if got := read("db-password", 0o440); string(got) != "correct horse battery staple" {
		t.Errorf("db-password differs from the vault's value (%d bytes)", len(got))
	}
	if got := read("db-password.copy", 0o640); string(got) != "correct horse battery staple" {
		t.Errorf("db-password.copy differs from the vault's value (%d bytes)", len(got))
	}
	if got := read("app.env", 0o440); string(got) != `DB_PASSWORD='correct horse battery staple'` {
		t.Errorf("app.env is not the rendered template (%d bytes)", len(got))
	}

	// tls.pem: the private key and the chain, leaf first, that verifies.
	var certs []*x509.Certificate
	var priv crypto.Signer
	for rest := read("tls.pem", 0o440); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, c)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			priv = k.(crypto.Signer)
		default:
			t.Errorf("tls.pem has an unexpected %s block", b.Type)
		}
	}
	if len(certs) != 3 || !certs[0].Equal(cert.Leaf) || !certs[1].Equal(cert.Intermediate) || !certs[2].Equal(cert.Root) {
		t.Fatalf("tls.pem holds %d certificates, want leaf, intermediate, root of %s", len(certs), cert.Name)
	}
	if priv == nil || !priv.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(certs[0].PublicKey) {
		t.Errorf("tls.pem: private key missing or not the leaf's")
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: cert.Roots(), Intermediates: cert.Intermediates()}); err != nil {
		t.Errorf("tls.pem chain does not verify: %v", err)
	}

	// signing.pub: the key's public half.
	b, _ := pem.Decode(read("signing.pub", 0o440))
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("signing.pub is not a PEM PUBLIC KEY")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public) {
		t.Errorf("signing.pub is not the public key of %s", key.ID)
	}
}

// A pod of another ServiceAccount cannot read the first one's secrets, even
// when it names the first one's client id: Entra ID finds no federated
// credential for its token's subject (AADSTS70021), and the termination
// message says so and what the federated credential would have to be.
func TestAgentOtherServiceAccount(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	const clientID = "00000000-0000-0000-0000-0000000a9e04"
	ns := nodeNamespace(t, s, "checkout", clientID)
	createServiceAccount(t, s, ns, "intruder", "")
	s.secretFor(t, clientID, "sa-db-password", "checkout only")
	ann := map[string]string{"kvinject.io/secret-db-password": "sa-db-password"}

	owner := runPod(t, s, ns, "checkout", nodePodSpec("checkout", ann))
	waitReport(t, s, ns, owner.Name, time.Minute, func(r appReport) bool { return r.Files["db-password"].Content == "checkout only" })
	gets := s.srv.Count(fakeazure.EndpointGetSecret, clientID)

	ann["kvinject.io/client-id"] = clientID
	tmpl := nodePodSpec("intruder", ann)
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	intruder := failedPod(t, s, ns, "intruder", tmpl)
	checkLines(t, intruder.State.Terminated.Message, []string{
		"kvinject agent: could not fetch 1 object(s) as client " + clientID,
		"- secret sa-db-password: sign-in failed: HTTP 400 AADSTS70021: …",
		fmt.Sprintf("  Fix: add a federated identity credential to the app registration or managed identity %s: issuer = this cluster's service account issuer URL, subject = system:serviceaccount:%s:intruder, audience = api://AzureADTokenExchange", clientID, ns),
	})
	if n := s.srv.Count(fakeazure.EndpointGetSecret, clientID) - gets; n != 0 {
		t.Errorf("the vault saw %d GET(s) from client %s after the intruder started, want none", n, clientID)
	}
}

// trust creates ServiceAccount sa for clientID and lets Entra ID accept its
// tokens from the API server's issuer for that client.
func (s *stack) trust(t *testing.T, ns, sa, clientID string) {
	t.Helper()
	createServiceAccount(t, s, ns, sa, clientID)
	if err := s.srv.AddFederatedCredential(clientID, s.c.Issuer, "system:serviceaccount:"+ns+":"+sa); err != nil {
		t.Fatal(err)
	}
}

func (s *stack) setSecret(t *testing.T, name, value string) {
	t.Helper()
	if _, err := s.srv.SetSecret(vaultName, name, value, ""); err != nil {
		t.Fatal(err)
	}
}

// secretFor stores a secret and lets clientID read it (Key Vault Secrets
// User on that secret only).
func (s *stack) secretFor(t *testing.T, clientID, name, value string) {
	t.Helper()
	s.setSecret(t, name, value)
	s.grant(t, clientID, fakeazure.RoleSecretsUser, name)
}

func (s *stack) grant(t *testing.T, clientID string, role fakeazure.Role, object string) {
	t.Helper()
	if err := s.srv.Grant(vaultName, clientID, role, object); err != nil {
		t.Fatal(err)
	}
}

// checkLines checks that msg consists of the want lines, in order, where a
// line ending in "…" only has to start with the rest (it goes on with the
// service's own wording).
func checkLines(t *testing.T, msg string, want []string) {
	t.Helper()
	got := strings.Split(msg, "\n")
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		if prefix, cut := strings.CutSuffix(want[i], "…"); cut {
			ok = strings.HasPrefix(got[i], prefix)
		} else {
			ok = got[i] == want[i]
		}
	}
	if !ok {
		var w bytes.Buffer
		for _, l := range want {
			fmt.Fprintf(&w, "  %s\n", l)
		}
		t.Errorf("termination message:\n%s\nwant the lines:\n%s", msg, w.String())
	}
}
