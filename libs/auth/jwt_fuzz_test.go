package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tenantbase/libs/auth"
)

// FuzzParse hands Parse arbitrary tokens for a tenant audience: it never
// panics, and whatever it accepts was signed by the key for this issuer
// and this audience, unexpired, naming the tenant it was issued for.
func FuzzParse(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	keys := auth.NewKeys(issuer, priv)
	otherKeys := auth.NewKeys(issuer, stranger)
	mint := func(k *auth.Keys, aud string, tid int64) string {
		tok, err := k.Sign(auth.TenantClaims{RegisteredClaims: k.Registered("42", aud, time.Minute), TenantID: tid, Role: "member"})
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	good := mint(keys, auth.TenantAudience(7), 7)
	for _, seed := range []string{
		good, good + "x", strings.Replace(good, ".", "..", 1),
		mint(keys, auth.TenantAudience(8), 8), mint(keys, auth.CoreAudience, 7), mint(otherKeys, auth.TenantAudience(7), 7),
		"", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiJ9.",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		var c auth.TenantClaims
		if err := keys.Parse(token, auth.TenantAudience(7), &c); err != nil {
			return
		}
		if c.Issuer != issuer || len(c.Audience) != 1 || c.Audience[0] != auth.TenantAudience(7) ||
			c.ExpiresAt == nil || !c.ExpiresAt.After(time.Now().Add(-time.Minute)) {
			t.Fatalf("accepted %q with claims %+v", token, c)
		}
		if _, err := jwt.NewParser().Parse(token, func(*jwt.Token) (any, error) { return priv.Public(), nil }); err != nil {
			t.Fatalf("accepted %q, which the signing key does not verify: %v", token, err)
		}
	})
}
