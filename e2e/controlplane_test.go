package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kvinject/kvinject/e2e/cluster"
)

// The server reports the version hack/controlplane.sh stamped into it, in a
// form semver parsers (like the workload-identity webhook's) accept.
func TestControlPlaneVersion(t *testing.T) {
	c := testCluster(t)
	info, err := c.Kube.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	v, err := version.ParseSemantic(info.GitVersion)
	if err != nil {
		t.Fatalf("/version gitVersion %q is not semver: %v", info.GitVersion, err)
	}
	if info.Major != "1" || info.Minor != fmt.Sprint(v.Minor()) {
		t.Errorf("/version major/minor = %q/%q, want 1/%d (from %s)", info.Major, info.Minor, v.Minor(), info.GitVersion)
	}
	if v.LessThan(version.MustParseSemantic("v1.33.0")) {
		t.Errorf("server %s is older than the oldest supported release 1.33", info.GitVersion)
	}
	// The build script records what it built; the server must say the same.
	stamp, err := os.ReadFile(filepath.Join(os.Getenv(cluster.AssetsEnv), ".stamp"))
	if err == nil && !strings.Contains(string(stamp), "kubernetes "+info.GitVersion+"\n") {
		t.Errorf("server says %s, build stamp says %q", info.GitVersion, stamp)
	}
	t.Logf("kube-apiserver %s", info.GitVersion)
}

// A pod-bound token for the Azure audience verifies against the keys the
// issuer publishes through OIDC discovery, fetched over loopback only.
func TestServiceAccountIssuer(t *testing.T) {
	c := testCluster(t)
	ctx := t.Context()
	ns := testNamespace(t, c, nil)

	if _, err := c.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "workload"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := c.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{
			ServiceAccountName: "workload",
			Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.PodToken(ctx, pod, cluster.AzureAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	header, claims, signed, sig := splitJWT(t, tok.Token)
	if claims.Issuer != c.Issuer {
		t.Errorf("token iss = %q, want %q", claims.Issuer, c.Issuer)
	}
	if !slices.Equal(claims.Audience, []string{cluster.AzureAudience}) {
		t.Errorf("token aud = %q, want [%s]", claims.Audience, cluster.AzureAudience)
	}
	if want := "system:serviceaccount:" + ns + ":workload"; claims.Subject != want {
		t.Errorf("token sub = %q, want %q", claims.Subject, want)
	}
	if claims.Kubernetes.Pod.Name != "app" || claims.Kubernetes.Pod.UID != string(pod.UID) {
		t.Errorf("token bound to pod %+v, want app/%s", claims.Kubernetes.Pod, pod.UID)
	}

	var discovery struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, c.IssuerHTTPClient, strings.TrimSuffix(c.Issuer, "/")+"/.well-known/openid-configuration", &discovery)
	if discovery.Issuer != c.Issuer {
		t.Errorf("discovery issuer = %q, want %q", discovery.Issuer, c.Issuer)
	}
	var jwks struct {
		Keys []jwk `json:"keys"`
	}
	getJSON(t, c.IssuerHTTPClient, discovery.JWKSURI, &jwks)

	i := slices.IndexFunc(jwks.Keys, func(k jwk) bool { return k.Kid == header.Kid })
	if i < 0 {
		t.Fatalf("token kid %q not among the %d JWKS keys", header.Kid, len(jwks.Keys))
	}
	if err := jwks.Keys[i].verify(header.Alg, signed, sig); err != nil {
		t.Fatalf("token signature does not verify against the issuer's JWKS: %v", err)
	}
}

// cert-manager's CRDs are established and serve objects.
func TestCertManagerCRDs(t *testing.T) {
	c := testCluster(t)
	ctx := t.Context()
	for _, name := range []string{
		"certificates.cert-manager.io", "certificaterequests.cert-manager.io",
		"issuers.cert-manager.io", "clusterissuers.cert-manager.io",
		"orders.acme.cert-manager.io", "challenges.acme.cert-manager.io",
	} {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, u); err != nil {
			t.Errorf("CRD %s: %v", name, err)
			continue
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		established := slices.ContainsFunc(conds, func(c any) bool {
			m, _ := c.(map[string]any)
			return m["type"] == string(apiextensionsv1.Established) && m["status"] == "True"
		})
		if !established {
			t.Errorf("CRD %s not established: %v", name, conds)
		}
	}

	ns := testNamespace(t, c, nil)
	issuer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cert-manager.io/v1",
		"kind":       "Issuer",
		"metadata":   map[string]any{"name": "selfsigned", "namespace": ns},
		"spec":       map[string]any{"selfSigned": map[string]any{}},
	}}
	if err := c.Client.Create(ctx, issuer); err != nil {
		t.Fatalf("create cert-manager Issuer: %v", err)
	}
}

// kube-controller-manager turns a Deployment into a ReplicaSet and a Pod (which
// stays Pending: there are no nodes) and publishes kube-root-ca.crt.
func TestControllerManager(t *testing.T) {
	c := testCluster(t)
	ctx := t.Context()
	ns := testNamespace(t, c, nil)

	labels := map[string]string{"app": "web"}
	dep, err := c.Kube.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var pod *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		pod = &pods.Items[0]
		return true, nil
	})
	if err != nil {
		t.Fatalf("no pod from deployment %s: %v\nkube-controller-manager log:\n%s", dep.Name, err, c.ControllerManagerLog())
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil || owner.Kind != "ReplicaSet" {
		t.Fatalf("pod %s controlled by %+v, want a ReplicaSet", pod.Name, owner)
	}
	rs, err := c.Kube.AppsV1().ReplicaSets(ns).Get(ctx, owner.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if o := metav1.GetControllerOf(rs); o == nil || o.Kind != "Deployment" || o.UID != dep.UID {
		t.Fatalf("replicaset %s controlled by %+v, want deployment %s", rs.Name, o, dep.Name)
	}

	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cm, err := c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil && strings.Contains(cm.Data["ca.crt"], "BEGIN CERTIFICATE"), nil
	})
	if err != nil {
		t.Errorf("kube-root-ca.crt not published in %s: %v", ns, err)
	}
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	Issuer     string   `json:"iss"`
	Subject    string   `json:"sub"`
	Audience   []string `json:"aud"`
	Kubernetes struct {
		Pod struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

func splitJWT(t *testing.T, token string) (h jwtHeader, c jwtClaims, signed, sig []byte) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	for i, v := range []any{&h, &c} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("token signature: %v", err)
	}
	return h, c, []byte(parts[0] + "." + parts[1]), sig
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// verify checks a JWS signature with this key (ES256 or RS256, the algorithms
// kube-apiserver signs service-account tokens with).
func (k jwk) verify(alg string, signed, sig []byte) error {
	b := func(s string) *big.Int {
		v, _ := base64.RawURLEncoding.DecodeString(s)
		return new(big.Int).SetBytes(v)
	}
	digest := sha256.Sum256(signed)
	switch {
	case alg == "ES256" && k.Kty == "EC" && k.Crv == "P-256":
		pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: b(k.X), Y: b(k.Y)}
		if len(sig) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return fmt.Errorf("ES256 signature invalid")
		}
		return nil
	case alg == "RS256" && k.Kty == "RSA":
		pub := &rsa.PublicKey{N: b(k.N), E: int(b(k.E).Int64())}
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
	}
	return fmt.Errorf("unsupported alg %s for %s key", alg, k.Kty)
}

// getJSON fetches a URL that must be on loopback (the only place tests may
// send packets) and decodes its JSON body.
func getJSON(t *testing.T, hc *http.Client, rawURL string, v any) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parse %q: %v", rawURL, err)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Fatalf("refusing to fetch %s: not a loopback address", rawURL)
	}
	resp, err := hc.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", rawURL, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", rawURL, err)
	}
}
