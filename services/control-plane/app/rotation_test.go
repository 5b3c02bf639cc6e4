package app_test

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"testing"

	"tenantbase/libs/config"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

func newKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// TestKeyRotation rotates the JWT signing key and the credentials key of a
// running deployment in two restarts: with the old keys kept as previous
// ones, tokens they signed still work and the JWKS publishes both, stored
// tenant passwords still open and are sealed again with the new key; with
// the old keys retired, the old tokens stop working and the tenants are
// still reachable.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	core := cptest.CoreDatabase(t)
	jwt1, jwt2, cred1, cred2 := newKey(t), newKey(t), newKey(t), newKey(t)
	start := func(jwt, jwtPrev, cred, credPrev string) *cptest.ControlPlane {
		return cptest.Start(t, cptest.Options{DatabaseURL: core, Configure: func(c *app.Config) {
			c.JWTSigningKey, c.JWTPreviousKeys = config.Secret(jwt), config.Secret(jwtPrev)
			c.CredentialsKey, c.CredentialsPreviousKeys = config.Secret(cred), config.Secret(credPrev)
		}})
	}
	jwks := func(cp *cptest.ControlPlane) int {
		var doc struct {
			Keys []struct{ Kid string } `json:"keys"`
		}
		cp.Do(t, http.MethodGet, "/.well-known/jwks.json", "", nil).Expect(t, http.StatusOK).Decode(t, &doc)
		return len(doc.Keys)
	}
	reachable := func(cp *cptest.ControlPlane, id int64) {
		t.Helper()
		var n int
		testenv.QueryRow(t, cptest.DSN(cp.Tenant(t, id).Database), `SELECT count(*) FROM tenantuser`, nil, &n)
	}

	before := start(jwt1, "", cred1, "")
	owner := before.SignUpOwner(t, "owner@example.com", ownerPassword)
	org := before.CreateReadyOrganization(t, owner, "Acme")
	if err := before.Stop(); err != nil {
		t.Fatal(err)
	}

	during := start(jwt2, jwt1, cred2, cred1)
	during.Do(t, http.MethodGet, "/auth/me", owner.AccessToken, nil).Expect(t, http.StatusOK)
	if n := jwks(during); n != 2 {
		t.Fatalf("JWKS during the rotation lists %d keys, want the new and the previous one", n)
	}
	reachable(during, org.ID)
	fresh := during.Login(t, owner.Email, ownerPassword)
	// Resealing runs at start, before the job workers; by the time a job
	// ran, it is done. A second organization's provisioning is one.
	second := during.CreateReadyOrganization(t, cptest.User{ID: owner.ID, Email: owner.Email, Password: owner.Password, AccessToken: fresh}, "Globex")
	if err := during.Stop(); err != nil {
		t.Fatal(err)
	}

	after := start(jwt2, "", cred2, "")
	after.Do(t, http.MethodGet, "/auth/me", owner.AccessToken, nil).Expect(t, http.StatusUnauthorized)
	after.Do(t, http.MethodGet, "/auth/me", fresh, nil).Expect(t, http.StatusOK)
	if n := jwks(after); n != 1 {
		t.Fatalf("JWKS after the rotation lists %d keys, want only the new one", n)
	}
	reachable(after, org.ID)
	reachable(after, second.ID)
}
