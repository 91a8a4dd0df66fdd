package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/e2e/podrunner"
	"github.com/kvinject/kvinject/injector"
)

// The agent run as a kubelet would run it (e2e/podrunner): the pod is
// created through the API server and injected by the webhook, read back,
// given a TokenRequest token bound to it, and its agent container runs the
// built kvinject binary with exactly its command, args and env. The emulated
// Entra ID verifies that token against the API server's own issuer (OIDC
// discovery and JWKS); no test issuer is involved.

// Files appear as the app container sees them, with the values the vault
// holds and the modes asked for: a secret, a certificate with its key and
// chain, a key's public half, a template over them.
func TestAgentFiles(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ns := testNamespace(t, s.c, nil)
	const clientID = "00000000-0000-0000-0000-0000000a9e01"
	s.trust(t, ns, "web", clientID)

	s.setSecret(t, "files-db-password", "correct horse battery staple")
	s.grant(t, clientID, fakeazure.RoleSecretsUser, "files-db-password")
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

	p := s.run(t, ns, appPod("web", "web", map[string]string{
		"kvinject.io/secret-db-password": "files-db-password",
		"kvinject.io/cert-tls.pem":       "files-tls",
		"kvinject.io/key-signing.pub":    "files-signing",
		"kvinject.io/template-app.env":   `DB_PASSWORD={{ secret "db-password" | envQuote }}`,
		"kvinject.io/objects":            "- {objectName: files-db-password, objectType: secret, objectAlias: db-password.copy, filePermission: \"0640\"}",
	}))
	if p.Phase() != corev1.PodRunning {
		t.Fatalf("pod phase %s, want Running (the init agent completed)\n%s", p.Phase(), agentReport(p))
	}
	if agent := p.Container(injector.AgentContainer); !agent.Init || agent.Sidecar || agent.ExitCode() != 0 {
		t.Fatalf("agent init=%v sidecar=%v exit=%d, want an init container that exited 0", agent.Init, agent.Sidecar, agent.ExitCode())
	}

	read := func(name string, mode os.FileMode) []byte {
		t.Helper()
		path, err := p.HostPath("app", "/mnt/secrets/"+name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("app container reads /mnt/secrets/%s: %v", name, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("/mnt/secrets/%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, mode)
		}
		return b
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

// A refreshing agent (a native sidecar) brings a new secret version into the
// file within one interval: the first fetch that starts after the rotation
// writes it.
func TestAgentRotation(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ns := testNamespace(t, s.c, nil)
	const clientID = "00000000-0000-0000-0000-0000000a9e02"
	const interval = 2 * time.Second
	s.trust(t, ns, "web", clientID)
	s.setSecret(t, "rotation-api-key", "first")
	s.grant(t, clientID, fakeazure.RoleSecretsUser, "rotation-api-key")

	p := s.run(t, ns, appPod("web", "web", map[string]string{
		"kvinject.io/secret-api-key": "rotation-api-key",
		"kvinject.io/refresh":        interval.String(),
	}))
	agent := p.Container(injector.AgentContainer)
	if p.Phase() != corev1.PodRunning || !agent.Sidecar || !agent.Ready() {
		t.Fatalf("pod phase %s, agent sidecar=%v ready=%v; want Running with a started sidecar\n%s", p.Phase(), agent.Sidecar, agent.Ready(), agentReport(p))
	}
	path, err := p.HostPath("app", "/mnt/secrets/api-key")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "first" {
		t.Fatalf("api-key before the rotation: %q, %v; want first", b, err)
	}

	gets := func() int { return s.srv.Count(fakeazure.EndpointGetSecret, clientID) }
	before := gets()
	rotated := time.Now()
	s.setSecret(t, "rotation-api-key", "second")
	// The deadline only keeps a broken agent from hanging the test; the
	// assertion is on the agent's own cycles below.
	err = wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 10*interval+30*time.Second, true, func(context.Context) (bool, error) {
		if agent.Exited() {
			return false, fmt.Errorf("agent exited")
		}
		b, _ := os.ReadFile(path)
		return string(b) == "second", nil
	})
	if err != nil {
		t.Fatalf("rotation did not reach api-key: %v\n%s", err, agentReport(p))
	}
	// At most two GETs since the rotation: one that may have been in flight
	// with the old value, and the one that brought the new one. Any more
	// means a whole interval passed with the new version in the vault but
	// not in the file.
	if n := gets() - before; n > 2 {
		t.Errorf("the new version took %d GETs of the secret to arrive, want at most 2 (within one %v interval)", n, interval)
	}
	t.Logf("rotation reached the file %v after the vault changed (interval %v)", time.Since(rotated).Round(time.Millisecond), interval)
}

// An identity the vault does not authorize: the init agent fails, and the
// termination message, where `kubectl describe pod` shows it, says which
// client was refused which object in which vault, and what to grant.
func TestAgentForbidden(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ctx := t.Context()
	ns := testNamespace(t, s.c, nil)
	const clientID = "00000000-0000-0000-0000-0000000a9e03"
	s.trust(t, ns, "billing", clientID)
	s.setSecret(t, "forbidden-payments-key", "x")

	p := s.run(t, ns, appPod("billing", "billing", map[string]string{
		"kvinject.io/secret-payments-key": "forbidden-payments-key",
	}))
	failed := p.Failed()
	if p.Phase() != corev1.PodFailed || failed == nil || failed.Name != injector.AgentContainer || failed.ExitCode() == 0 {
		t.Fatalf("pod phase %s, failed container %v; want Failed by %s with a non-zero exit\n%s", p.Phase(), failed, injector.AgentContainer, agentReport(p))
	}
	msg := failed.TerminationMessage()
	want := []string{
		"kvinject agent: could not fetch 1 object(s) as client " + clientID,
		"- secret forbidden-payments-key (file payments-key) in vault " + s.vaultURL + ": HTTP 403 ForbiddenByRbac: Caller is not authorized to perform action on resource.…",
		fmt.Sprintf(`  Fix: grant client %s read access to secrets on vault %s: the "Key Vault Secrets User" role on the vault (Azure RBAC), or the 'get' secret permission in an access policy`, clientID, s.vaultURL),
	}
	checkLines(t, msg, want)

	if err := p.UpdateStatus(ctx); err != nil {
		t.Fatal(err)
	}
	out, _, err := kubectl(ctx, s.c, nil, "describe", "pod", "-n", ns, "billing")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		w = strings.TrimSuffix(strings.TrimSpace(w), "…")
		if !strings.Contains(string(out), w) {
			t.Errorf("kubectl describe pod does not show %q:\n%s", w, out)
		}
	}
}

// A pod of another ServiceAccount cannot read the first one's secrets, even
// when it names the first one's client id: Entra ID finds no federated
// credential for its token's subject (AADSTS70021), and the termination
// message says so and what the federated credential would have to be.
func TestAgentOtherServiceAccount(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ns := testNamespace(t, s.c, nil)
	const clientID = "00000000-0000-0000-0000-0000000a9e04"
	s.trust(t, ns, "checkout", clientID)
	createServiceAccount(t, s, ns, "intruder", "")
	s.setSecret(t, "sa-db-password", "checkout only")
	s.grant(t, clientID, fakeazure.RoleSecretsUser, "sa-db-password")
	ann := map[string]string{"kvinject.io/secret-db-password": "sa-db-password"}

	owner := s.run(t, ns, appPod("checkout", "checkout", ann))
	if owner.Phase() != corev1.PodRunning {
		t.Fatalf("checkout pod phase %s, want Running\n%s", owner.Phase(), agentReport(owner))
	}
	path, err := owner.HostPath("app", "/mnt/secrets/db-password")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "checkout only" {
		t.Fatalf("checkout pod: db-password %q, %v; want the vault's value", b, err)
	}
	gets := s.srv.Count(fakeazure.EndpointGetSecret, clientID)

	ann["kvinject.io/client-id"] = clientID
	intruder := s.run(t, ns, appPod("intruder", "intruder", ann))
	if intruder.Phase() != corev1.PodFailed || intruder.Failed() == nil {
		t.Fatalf("intruder pod phase %s, want Failed\n%s", intruder.Phase(), agentReport(intruder))
	}
	checkLines(t, intruder.Failed().TerminationMessage(), []string{
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

func (s *stack) grant(t *testing.T, clientID string, role fakeazure.Role, object string) {
	t.Helper()
	if err := s.srv.Grant(vaultName, clientID, role, object); err != nil {
		t.Fatal(err)
	}
}

// run creates pod in ns through the API server (the webhook injects it) and
// runs it with podrunner until its init containers are done or one failed.
func (s *stack) run(t *testing.T, ns string, pod *corev1.Pod) *podrunner.Pod {
	t.Helper()
	bin := s.binary(t)
	created, err := s.c.Kube.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	injectedAgent(t, created)
	p, err := podrunner.Start(t.Context(), podrunner.Options{
		Kube: s.c.Kube, Commands: map[string]string{injector.AgentBinary: bin}, CAFile: s.caFile,
	}, ns, pod.Name)
	if p != nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = p.Stop(ctx)
		})
	}
	if err != nil {
		t.Fatalf("run pod %s/%s: %v", ns, pod.Name, err)
	}
	return p
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

// agentReport is the agent's state and logs, for failure messages.
func agentReport(p *podrunner.Pod) string {
	a := p.Container(injector.AgentContainer)
	if a == nil {
		return "agent not started"
	}
	return fmt.Sprintf("agent exit=%d exited=%v termination message:\n%s\nlogs:\n%s", a.ExitCode(), a.Exited(), a.TerminationMessage(), a.Logs())
}
