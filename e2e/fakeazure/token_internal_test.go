package fakeazure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Key Vault's side of access tokens: each defect gets the AKV code a user
// would search for.
func TestVerifyAccessToken(t *testing.T) {
	srv, err := Start(t.Context(), Options{TenantID: "tenant-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(mutate func(*accessClaims), key *ecdsa.PrivateKey) string {
		now := time.Now()
		c := accessClaims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: srv.stsIssuer(), Audience: jwt.ClaimStrings{VaultResource},
				ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			},
			TenantID: "tenant-a", AppID: "app", ObjectID: "app",
		}
		mutate(&c)
		s, err := jwt.NewWithClaims(jwt.SigningMethodES256, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name, want string
		token      string
	}{
		{"valid", "", sign(func(*accessClaims) {}, srv.tokenKey)},
		{"expired", "AKV10021", sign(func(c *accessClaims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Second)) }, srv.tokenKey)},
		{"audience", "AKV10022", sign(func(c *accessClaims) { c.Audience = jwt.ClaimStrings{"https://storage.azure.com"} }, srv.tokenKey)},
		{"tenant", "AKV10032", sign(func(c *accessClaims) { c.TenantID, c.Issuer = "tenant-b", "https://sts.windows.net/tenant-b/" }, srv.tokenKey)},
		{"signature", "AKV10032", sign(func(*accessClaims) {}, otherKey)},
		{"garbage", "AKV10032", "not-a-jwt"},
		{"empty", "AKV10000", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := srv.verifyAccessToken(tc.token)
			if tc.want == "" {
				if err != nil || c.AppID != "app" {
					t.Fatalf("valid token rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("want %s, got %v", tc.want, err)
			}
		})
	}
}
