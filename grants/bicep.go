package grants

import (
	"fmt"
	"sort"
	"strings"
)

// API versions of the Bicep resources.
const (
	bicepVaultAPI       = "2023-07-01"
	bicepIdentityAPI    = "2023-01-31"
	bicepAssignmentsAPI = "2022-04-01"
)

// bicepString is a Bicep string literal: single quotes, with \, ' and ${
// escaped.
func bicepString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return "'" + r.Replace(s) + "'"
}

// renderBicep writes one Bicep file for the resource group that holds the
// vaults and identities.
//
//  1. Identities, vaults and, at object scope, each secret and key are
//     `existing` resources; a role assignment's `scope` is the object it
//     grants, so the assignment is a child of the secret in Azure.
//  2. Assignment names are guid(scope id, identity id, role id): stable,
//     computable at the start of the deployment, one per triple.
//  3. Federated credentials are children of their identity, each
//     dependsOn the one before on the same identity (Azure rejects
//     concurrent writes there).
//
// A Bicep file deploys into one resource group; vaults or identities in
// others are an error that says which.
func renderBicep(s *Set) (string, error) {
	groups := map[string]bool{}
	for _, id := range s.Identities {
		groups[id.ResourceGroup] = true
	}
	for _, a := range s.Assignments {
		groups[a.VaultResourceGroup] = true
	}
	if len(groups) > 1 {
		var gs []string
		for g := range groups {
			gs = append(gs, g)
		}
		sort.Strings(gs)
		return "", fmt.Errorf("bicep deploys into one resource group, and these grants span %s: run grants once per resource group (vaults and identities in one), or use --format az or terraform", strings.Join(gs, ", "))
	}
	var b strings.Builder
	b.WriteString(header(s, "//"))
	b.WriteString("// Deploy: az deployment group create --resource-group <group> --template-file grants.bicep\n")
	b.WriteString("targetScope = 'resourceGroup'\n\n")
	roles := map[string]Role{}
	for _, a := range s.Assignments {
		roles[a.Role.ID] = a.Role
	}
	roleSym := func(r Role) string { return "role_" + label(roleShort(r)) }
	var ids []string
	for id := range roles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r := roles[id]
		fmt.Fprintf(&b, "// %s\nvar %s = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', %s)\n\n", r.Name, roleSym(r), bicepString(r.ID))
	}
	idSym := map[string]string{}
	for _, id := range s.Identities {
		sym := label("identity", id.Name)
		idSym[id.ClientID] = sym
		fmt.Fprintf(&b, "// client %s, tenant %s\nresource %s 'Microsoft.ManagedIdentity/userAssignedIdentities@%s' existing = {\n  name: %s\n}\n\n",
			id.ClientID, id.TenantID, sym, bicepIdentityAPI, bicepString(id.Name))
	}
	vaultSym := map[string]string{}
	objSym := map[string]string{}
	for _, a := range s.Assignments {
		if vaultSym[a.Vault] == "" {
			vaultSym[a.Vault] = label("vault", a.Vault)
			fmt.Fprintf(&b, "resource %s 'Microsoft.KeyVault/vaults@%s' existing = {\n  name: %s\n}\n\n", vaultSym[a.Vault], bicepVaultAPI, bicepString(a.Vault))
		}
		if a.Collection == "" {
			continue
		}
		key := a.Vault + "/" + a.Collection + "/" + a.Object
		if objSym[key] == "" {
			objSym[key] = label(a.Vault, a.Collection, a.Object)
			if a.Collection == "certificates" {
				// ARM has no certificates type; the existing reference
				// only names the scope (Bicep warns BCP081).
				b.WriteString("#disable-next-line BCP081\n")
			}
			fmt.Fprintf(&b, "resource %s 'Microsoft.KeyVault/vaults/%s@%s' existing = {\n  parent: %s\n  name: %s\n}\n\n",
				objSym[key], a.Collection, bicepVaultAPI, vaultSym[a.Vault], bicepString(a.Object))
		}
	}
	for _, a := range s.Assignments {
		scope := vaultSym[a.Vault]
		if a.Collection != "" {
			scope = objSym[a.Vault+"/"+a.Collection+"/"+a.Object]
		}
		id := idSym[a.Identity.ClientID]
		for _, f := range a.For {
			fmt.Fprintf(&b, "// for %s\n", f)
		}
		fmt.Fprintf(&b, "resource %s 'Microsoft.Authorization/roleAssignments@%s' = {\n", label("ra", scope, id, roleShort(a.Role)), bicepAssignmentsAPI)
		fmt.Fprintf(&b, "  name: guid(%s.id, %s.id, %s)\n  scope: %s\n  properties: {\n", scope, id, roleSym(a.Role), scope)
		fmt.Fprintf(&b, "    roleDefinitionId: %s\n    principalId: %s.properties.principalId\n    principalType: 'ServicePrincipal'\n  }\n}\n\n", roleSym(a.Role), id)
	}
	prev := map[string]string{}
	for _, c := range s.Credentials {
		sym := label("fic", c.Name)
		id := idSym[c.Identity.ClientID]
		fmt.Fprintf(&b, "resource %s 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@%s' = {\n  parent: %s\n  name: %s\n",
			sym, bicepIdentityAPI, id, bicepString(c.Name))
		fmt.Fprintf(&b, "  properties: {\n    issuer: %s\n    subject: %s\n    audiences: [\n      %s\n    ]\n  }\n", bicepString(c.Issuer), bicepString(c.Subject), bicepString(c.Audience))
		if p := prev[c.Identity.ClientID]; p != "" {
			fmt.Fprintf(&b, "  dependsOn: [\n    %s\n  ]\n", p)
		}
		b.WriteString("}\n\n")
		prev[c.Identity.ClientID] = sym
	}
	return strings.TrimRight(b.String(), "\n") + "\n", nil
}
