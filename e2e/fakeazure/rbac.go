package fakeazure

import (
	"fmt"
	"slices"
	"strings"
)

// Role is an Azure built-in Key Vault data-plane role (RBAC permission model).
type Role string

// Built-in roles and what they allow here.
const (
	// RoleSecretsUser reads secret values and metadata
	// (certificate-backed secrets included).
	RoleSecretsUser Role = "Key Vault Secrets User"
	// RoleSecretsOfficer is RoleSecretsUser plus set.
	RoleSecretsOfficer Role = "Key Vault Secrets Officer"
	// RoleCryptoUser reads keys.
	RoleCryptoUser Role = "Key Vault Crypto User"
	// RoleCertificateUser reads certificates, with their secret and key.
	RoleCertificateUser Role = "Key Vault Certificate User"
	// RoleReader reads metadata (lists, keys, certificates) but no secret value.
	RoleReader Role = "Key Vault Reader"
	// RoleAdministrator allows everything.
	RoleAdministrator Role = "Key Vault Administrator"
)

// Data actions the emulator checks, as Azure names them.
const (
	actionGetSecret    = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
	actionReadSecret   = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
	actionSetSecret    = "Microsoft.KeyVault/vaults/secrets/setSecret/action"
	actionReadKey      = "Microsoft.KeyVault/vaults/keys/read"
	actionReadCert     = "Microsoft.KeyVault/vaults/certificates/read"
	fakeSubscriptionID = "00000000-0000-0000-0000-00000000c0de"
	fakeResourceGroup  = "rg-kvinject-e2e"
)

var roleActions = map[Role][]string{
	RoleSecretsUser:     {actionGetSecret, actionReadSecret},
	RoleSecretsOfficer:  {actionGetSecret, actionReadSecret, actionSetSecret},
	RoleCryptoUser:      {actionReadKey},
	RoleCertificateUser: {actionReadCert, actionGetSecret, actionReadSecret, actionReadKey},
	RoleReader:          {actionReadSecret, actionReadKey, actionReadCert},
	RoleAdministrator:   {actionGetSecret, actionReadSecret, actionSetSecret, actionReadKey, actionReadCert},
}

type grant struct {
	vault, clientID string
	role            Role
	object          string // "*" = the whole vault
}

// Grant assigns role to clientID on one object of the vault (object name,
// which covers the secret, key and certificate of that name) or on the whole
// vault ("*"). Listing secrets needs a vault-wide grant, as in Azure.
func (s *Server) Grant(vault, clientID string, role Role, object string) error {
	if _, ok := roleActions[role]; !ok {
		return fmt.Errorf("fakeazure: unknown role %q (use one of the fakeazure.Role constants)", role)
	}
	if object == "" {
		return fmt.Errorf("fakeazure: grant object is empty: use an object name or \"*\" for the whole vault")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.vaults[vault]; !ok {
		return fmt.Errorf("fakeazure: grant on unknown vault %q", vault)
	}
	s.grants = append(s.grants, grant{vault: vault, clientID: clientID, role: role, object: object})
	return nil
}

// Revoke removes every grant of clientID on the vault.
func (s *Server) Revoke(vault, clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants = slices.DeleteFunc(s.grants, func(g grant) bool { return g.vault == vault && g.clientID == clientID })
}

// allowed reports whether clientID may perform action on object ("" for a
// vault-wide operation). Caller holds s.mu.
func (s *Server) allowed(vault, clientID, action, object string) bool {
	for _, g := range s.grants {
		if g.vault != vault || g.clientID != clientID || !slices.Contains(roleActions[g.role], action) {
			continue
		}
		if g.object == "*" || (object != "" && g.object == object) {
			return true
		}
	}
	return false
}

// forbiddenMessage is Key Vault's RBAC 403 message.
func (s *Server) forbiddenMessage(vault string, c *accessClaims, action, collection, object string) string {
	resource := fmt.Sprintf("/subscriptions/%s/resourcegroups/%s/providers/microsoft.keyvault/vaults/%s",
		fakeSubscriptionID, fakeResourceGroup, strings.ToLower(vault))
	if object != "" {
		resource += "/" + collection + "/" + object
	}
	return "Caller is not authorized to perform action on resource.\r\n" +
		"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" +
		fmt.Sprintf("Caller: appid=%s;oid=%s;iss=%s\r\n", c.AppID, c.ObjectID, c.Issuer) +
		fmt.Sprintf("Action: '%s'\r\n", action) +
		fmt.Sprintf("Resource: '%s'\r\n", resource) +
		"Assignment: (not found)\r\n" +
		"DenyAssignmentId: null\r\n" +
		"DecisionReason: null \r\n" +
		fmt.Sprintf("Vault: %s;location=westeurope\r\n", vault)
}
