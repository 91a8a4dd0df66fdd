package e2e

import (
	"encoding/pem"
	"testing"
	"time"

	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// A SecretProviderClass's objects give the files the Secrets Store CSI Azure
// provider writes: objectType secret of a certificate is its key and chain
// as PEM, objectType cert the public certificate only. The native
// public-cert annotation needs nothing but certificate read (Key Vault
// Reader on the certificate).
func TestAgentCSIObjectsAndPublicCert(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	const clientID = "00000000-0000-0000-0000-0000000a9e31"
	ns := nodeNamespace(t, s, "web", clientID)
	cert, err := s.srv.AddCertificate(vaultName, "objects-tls", fakeazure.ContentTypePFX)
	if err != nil {
		t.Fatal(err)
	}
	s.grant(t, clientID, fakeazure.RoleSecretsUser, "objects-tls")
	s.grant(t, clientID, fakeazure.RoleReader, "objects-tls") // objectType cert reads the certificate
	ca, err := s.srv.AddCertificate(vaultName, "objects-ca", fakeazure.ContentTypePFX)
	if err != nil {
		t.Fatal(err)
	}
	s.grant(t, clientID, fakeazure.RoleReader, "objects-ca")

	pod := runPod(t, s, ns, "web", nodePodSpec("web", map[string]string{
		"kvinject.io/objects": "array:\n- |\n  objectName: objects-tls\n  objectType: secret\n  objectAlias: tls.pem\n" +
			"- |\n  objectName: objects-tls\n  objectType: cert\n  objectAlias: tls.crt\n",
		"kvinject.io/public-cert-ca.crt": "objects-ca",
	}))
	r := waitReport(t, s, ns, pod.Name, time.Minute, func(appReport) bool { return true })
	read := func(name string) []byte {
		t.Helper()
		f, ok := r.Files[name]
		if !ok {
			t.Fatalf("app container reads /mnt/secrets/%s: %v", name, r.ReadErrors[name])
		}
		return []byte(f.Content)
	}
	var blocks []string
	for rest := read("tls.pem"); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks = append(blocks, b.Type)
	}
	if len(blocks) != 4 || blocks[0] != "PRIVATE KEY" {
		t.Errorf("tls.pem (objectType secret) blocks %v, want the private key, then leaf, intermediate, root", blocks)
	}
	onlyLeaf := func(name string, want *fakeazure.Certificate) {
		t.Helper()
		b, rest := pem.Decode(read(name))
		if b == nil || b.Type != "CERTIFICATE" || len(rest) != 0 {
			t.Fatalf("%s is not one PEM certificate", name)
		}
		if string(b.Bytes) != string(want.Leaf.Raw) {
			t.Errorf("%s is not the certificate of %s", name, want.Name)
		}
	}
	onlyLeaf("tls.crt", cert)
	onlyLeaf("ca.crt", ca)
}
