package grants

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	clientOrders   = "0000000a-0000-0000-0000-00000000000a"
	clientPayments = "0000000b-0000-0000-0000-00000000000b"
	tenant         = "11111111-1111-1111-1111-111111111111"
	issuerEU       = "https://westeurope.oic.prod-aks.azure.com/11111111-1111-1111-1111-111111111111/aaaaaaaa-0000-0000-0000-000000000001/"
	issuerUS       = "https://eastus.oic.prod-aks.azure.com/11111111-1111-1111-1111-111111111111/bbbbbbbb-0000-0000-0000-000000000002/"
)

func defaults() injector.Defaults {
	c, _ := config.KnownCloud("")
	return injector.Defaults{Image: "ghcr.io/kvinject/kvinject:test", Cloud: c, Sidecar: injector.SidecarNative,
		MountPath: injector.DefaultMountPath, TenantID: tenant}
}

func readShop(t *testing.T, doc []byte) []Workload {
	t.Helper()
	ws, problems, err := Read(bytes.NewReader(doc), ReadOptions{Namespace: "default", Defaults: defaults()})
	if err != nil || len(problems) > 0 {
		t.Fatalf("Read: %v %q", err, problems)
	}
	return ws
}

func shop(t *testing.T) []byte {
	b, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// options: vaults in two resource groups, identities in a third.
func options(scope string) Options {
	return Options{Subscription: "22222222-2222-2222-2222-222222222222", ResourceGroup: "rg-shop",
		VaultResourceGroups: map[string]string{"shared-kv": "rg-shared"}, IdentityResourceGroup: "rg-identities",
		Identities: map[string]string{clientOrders: "id-orders"}, Issuers: []string{issuerEU, issuerUS}, Scope: scope}
}

// oneGroup: everything in one resource group, as a Bicep file deploys.
func oneGroup(scope string) Options {
	return Options{Subscription: "22222222-2222-2222-2222-222222222222", ResourceGroup: "rg-shop",
		Identities: map[string]string{clientOrders: "id-orders", clientPayments: "id-payments"},
		Issuers:    []string{issuerEU}, Scope: scope}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./grants -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test ./grants -update rewrites it):\n%s", name, got)
	}
}

func TestExplainGolden(t *testing.T) {
	es := Explain(readShop(t, shop(t)), options(ScopeObject))
	var text, js bytes.Buffer
	if err := WriteText(&text, es); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&js, es); err != nil {
		t.Fatal(err)
	}
	golden(t, "explain.txt", text.Bytes())
	golden(t, "explain.json", js.Bytes())
}

func render(t *testing.T, doc []byte, o Options, format string, azurerm ...int) []byte {
	t.Helper()
	s, err := Derive(readShop(t, doc), o)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	ro := RenderOptions{}
	if len(azurerm) > 0 {
		ro.AzureRM = azurerm[0]
	}
	if err := Render(&b, s, format, ro); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		file, format string
		o            Options
		azurerm      int
	}{
		{"az-object.sh", "az", options(ScopeObject), 0},
		{"az-vault.sh", "az", options(ScopeVault), 0},
		{"terraform-object.tf", "terraform", options(ScopeObject), 5},
		{"terraform-vault-azurerm4.tf", "terraform", options(ScopeVault), 4},
		{"bicep-object.bicep", "bicep", oneGroup(ScopeObject), 0},
		{"bicep-vault.bicep", "bicep", oneGroup(ScopeVault), 0},
	} {
		t.Run(tc.file, func(t *testing.T) { golden(t, tc.file, render(t, shop(t), tc.o, tc.format, tc.azurerm)) })
	}
}

// The least-privilege facts an auditor checks, independent of formatting.
func TestDeriveLeastPrivilege(t *testing.T) {
	s, err := Derive(readShop(t, shop(t)), options(ScopeObject))
	if err != nil {
		t.Fatal(err)
	}
	base := "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/"
	want := map[string]string{
		"id-orders " + base + "rg-shop/providers/Microsoft.KeyVault/vaults/shop-kv/secrets/db-password":         SecretsUser.Name,
		"id-orders " + base + "rg-shop/providers/Microsoft.KeyVault/vaults/shop-kv/secrets/orders-tls":          SecretsUser.Name,
		"id-orders " + base + "rg-shop/providers/Microsoft.KeyVault/vaults/shop-kv/keys/orders-signing":         Reader.Name,
		"id-orders " + base + "rg-shared/providers/Microsoft.KeyVault/vaults/shared-kv/certificates/partner-ca": Reader.Name,
		"payments-api " + base + "rg-shop/providers/Microsoft.KeyVault/vaults/payments-kv/secrets/stripe-key":   SecretsUser.Name,
	}
	got := map[string]string{}
	for _, a := range s.Assignments {
		got[a.Identity.Name+" "+a.Scope] = a.Role.Name
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("assignments:\n got %v\nwant %v", got, want)
	}
	// db-password: the Deployment (latest) and the CronJob (pinned) share one assignment.
	for _, a := range s.Assignments {
		if a.Object == "db-password" && len(a.For) != 2 {
			t.Errorf("db-password is for %q, want the Deployment and the CronJob", a.For)
		}
	}
	// One credential per identity, subject and issuer; subjects from the ServiceAccounts.
	var creds []string
	for _, c := range s.Credentials {
		creds = append(creds, c.Identity.Name+" "+c.Subject+" "+c.Issuer)
		if c.Audience != "api://AzureADTokenExchange" {
			t.Errorf("audience %s", c.Audience)
		}
	}
	wantCreds := []string{
		"id-orders system:serviceaccount:shop:orders " + issuerUS, "id-orders system:serviceaccount:shop:orders " + issuerEU,
		"payments-api system:serviceaccount:payments:api " + issuerUS, "payments-api system:serviceaccount:payments:api " + issuerEU,
	}
	if fmt.Sprint(creds) != fmt.Sprint(wantCreds) {
		t.Errorf("credentials:\n got %q\nwant %q", creds, wantCreds)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], clientPayments) {
		t.Errorf("warnings %q, want one naming the unnamed identity %s", s.Warnings, clientPayments)
	}
}

// Document order does not change the output.
func TestDeterministic(t *testing.T) {
	docs := strings.Split(string(shop(t)), "\n---\n")
	reversed := make([]string, len(docs))
	for i, d := range docs {
		reversed[len(docs)-1-i] = d
	}
	a := render(t, shop(t), options(ScopeObject), "terraform")
	b := render(t, []byte(strings.Join(reversed, "\n---\n")), options(ScopeObject), "terraform")
	if !bytes.Equal(a, b) {
		t.Errorf("reordering the documents changed the output:\n%s\n---\n%s", a, b)
	}
}

// Past Entra's 20 federated credentials per identity, a warning says so.
func TestCredentialLimit(t *testing.T) {
	var doc strings.Builder
	for i := range 11 {
		fmt.Fprintf(&doc, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p%d\n  namespace: ns%d\n  annotations:\n    kvinject.io/inject: \"true\"\n    kvinject.io/client-id: %s\n    kvinject.io/secret-s: kv-one/s\nspec:\n  containers:\n  - {name: app, image: app}\n", i, i, clientOrders)
	}
	o := options(ScopeObject)
	s, err := Derive(readShop(t, []byte(doc.String())), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Credentials) != 22 {
		t.Fatalf("%d credentials, want 11 subjects x 2 issuers", len(s.Credentials))
	}
	if w := strings.Join(s.Warnings, "\n"); !strings.Contains(w, "22 federated credentials, past Entra's 20") ||
		!strings.Contains(w, "sign in through identity bindings instead (kvinject.io/identity-binding") {
		t.Errorf("warnings %q lack the limit or the way past it", s.Warnings)
	}

	// The same workloads through AKS identity bindings need no federated
	// credential; their subjects are listed for the ClusterRoleBindings.
	d := defaults()
	d.IdentityBinding = injector.IdentityBinding{TokenProxy: "https://kubernetes.default.svc", Default: true, Audience: injector.IdentityBindingAudience}
	ws, problems, err := Read(strings.NewReader(doc.String()), ReadOptions{Namespace: "default", Defaults: d})
	if err != nil || len(problems) > 0 {
		t.Fatalf("Read: %v %q", err, problems)
	}
	o.Issuers = nil // AKS keeps the one federated credential: no issuer needed
	if s, err = Derive(ws, o); err != nil {
		t.Fatal(err)
	}
	if len(s.Credentials) != 0 || len(s.Warnings) != 0 || len(s.IdentityBindings) != 1 || len(s.IdentityBindings[0].Subjects) != 11 ||
		s.IdentityBindings[0].Identity.Name != "id-orders" || len(s.Assignments) != 1 {
		t.Errorf("with identity bindings: %d credentials, warnings %q, bindings %+v, %d assignments; want none, none, id-orders for 11 subjects, 1",
			len(s.Credentials), s.Warnings, s.IdentityBindings, len(s.Assignments))
	}
	var az bytes.Buffer
	if err := Render(&az, s, "az", RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Identity id-orders signs in through AKS identity bindings for system:serviceaccount:ns0:default",
		"az aks identity-binding create", "use-managed-identity on resource " + clientOrders + " of API group cid.wi.aks.azure.com"} {
		if !strings.Contains(az.String(), want) {
			t.Errorf("az output lacks %q:\n%s", want, az.String())
		}
	}
	if strings.Contains(az.String(), "federated-credential create") {
		t.Errorf("az output creates federated credentials for workloads on identity bindings:\n%s", az.String())
	}
	var text bytes.Buffer
	if err := WriteText(&text, Explain(ws[:1], o)); err != nil {
		t.Fatal(err)
	}
	if want := "identity binding: system:serviceaccount:ns0:default signs in through the AKS token proxy (audience api://AKSIdentityBinding)"; !strings.Contains(text.String(), want) {
		t.Errorf("explain lacks %q:\n%s", want, text.String())
	}
}

func TestBicepOneResourceGroup(t *testing.T) {
	s, err := Derive(readShop(t, shop(t)), options(ScopeObject))
	if err != nil {
		t.Fatal(err)
	}
	err = Render(&bytes.Buffer{}, s, "bicep", RenderOptions{})
	if err == nil || !strings.Contains(err.Error(), "rg-identities, rg-shared, rg-shop") {
		t.Errorf("bicep over three resource groups: %v", err)
	}
}

func TestDeriveRejects(t *testing.T) {
	ws := readShop(t, shop(t))
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "no issuer"},
		{Options{Issuers: []string{"http://insecure"}}, "not an https:// URL"},
		{Options{Issuers: []string{issuerEU}, Scope: "subscription"}, `scope "subscription"`},
	} {
		if _, err := Derive(ws, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
}

// The Terraform output is HCL, with the resources azurerm documents.
func TestTerraformParses(t *testing.T) {
	for _, azurerm := range []int{4, 5} {
		terraformParses(t, azurerm)
	}
}

func terraformParses(t *testing.T, azurerm int) {
	out := render(t, shop(t), options(ScopeObject), "terraform", azurerm)
	f, diags := hclsyntax.ParseConfig(out, "grants.tf", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("not HCL: %v", diags)
	}
	// The arguments each azurerm major requires, and no other.
	fic := []string{"name", "user_assigned_identity_id", "audience", "issuer", "subject", "depends_on"}
	if azurerm == 4 {
		fic = []string{"name", "resource_group_name", "parent_id", "audience", "issuer", "subject", "depends_on"}
	}
	required := map[string][]string{
		"azurerm_user_assigned_identity":        {"name", "resource_group_name"},
		"azurerm_role_assignment":               {"scope", "role_definition_name", "principal_id", "principal_type"},
		"azurerm_federated_identity_credential": fic,
	}
	count := map[string]int{}
	for _, b := range f.Body.(*hclsyntax.Body).Blocks {
		typ := b.Labels[0]
		count[typ]++
		for _, attr := range required[typ] {
			if _, ok := b.Body.Attributes[attr]; !ok && attr != "depends_on" {
				t.Errorf("azurerm %d: %s %s has no %s", azurerm, typ, b.Labels[1], attr)
			}
		}
		for attr := range b.Body.Attributes {
			if !slices.Contains(required[typ], attr) {
				t.Errorf("azurerm %d: %s %s has %s, which the provider does not take", azurerm, typ, b.Labels[1], attr)
			}
		}
	}
	if count["azurerm_role_assignment"] != 5 || count["azurerm_federated_identity_credential"] != 4 || count["azurerm_user_assigned_identity"] != 2 {
		t.Errorf("blocks %v", count)
	}
}

// Hostile values are quoted, never spliced into code.
func TestQuoting(t *testing.T) {
	s := &Set{Scope: ScopeObject,
		Identities:  []Identity{{Name: "x'; rm -rf / #", ResourceGroup: "rg ${evil}", ClientID: clientOrders}},
		Credentials: []Credential{{Identity: Identity{Name: "x'; rm -rf / #", ResourceGroup: "rg ${evil}", ClientID: clientOrders}, Name: "n", Issuer: "https://x/'${a}\"", Subject: "s", Audience: "a"}}}
	var az, tf, bicep bytes.Buffer
	if err := Render(&az, s, "az", RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(az.String(), `--name 'x'\''; rm -rf / #'`) || !strings.Contains(az.String(), `--issuer 'https://x/'\''${a}"'`) {
		t.Errorf("az quoting:\n%s", az.String())
	}
	if err := Render(&tf, s, "terraform", RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tf.String(), `"rg $${evil}"`) {
		t.Errorf("terraform quoting:\n%s", tf.String())
	}
	if err := Render(&bicep, s, "bicep", RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bicep.String(), `issuer: 'https://x/\'\${a}"'`) {
		t.Errorf("bicep quoting:\n%s", bicep.String())
	}
}

// A vault URL whose host is not <name>.<vault suffix> gets a warning: the
// role would go to the vault named by its first label.
func TestForeignVaultHost(t *testing.T) {
	doc := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    kvinject.io/inject: \"true\"\n    kvinject.io/client-id: " + clientOrders +
		"\n    kvinject.io/secret-s: https://shop-kv.vault.azure.net.example.com/secrets/s\nspec:\n  containers:\n  - {name: app, image: app}\n"
	ws := readShop(t, []byte(doc))
	s, err := Derive(ws, options(ScopeObject))
	if err != nil {
		t.Fatal(err)
	}
	want := "vault https://shop-kv.vault.azure.net.example.com/ is not <name>.vault.azure.net; its scope assumes the vault is named shop-kv"
	if !slices.Contains(s.Warnings, want) {
		t.Errorf("grants warnings %q lack %q", s.Warnings, want)
	}
	if es := Explain(ws, options(ScopeObject)); !slices.Contains(es[0].Warnings, want) {
		t.Errorf("explain warnings %q lack %q", es[0].Warnings, want)
	}
}
