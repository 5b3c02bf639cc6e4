package app_test

import (
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/tenantapi"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
)

// TestPasswordChangeReachesTenants changes an owner's core password: the
// owner's admin row in each of their tenant databases follows, and other
// owners' tenants are untouched.
func TestPasswordChangeReachesTenants(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	other := cp.SignUpOwner(t, "other@example.com", ownerPassword)
	var ownTenants []tenantapi.Tenant
	for _, name := range []string{"First", "Second"} {
		ownTenants = append(ownTenants, cp.Tenant(t, cp.CreateReadyOrganization(t, owner, name).ID))
	}
	otherTenant := cp.Tenant(t, cp.CreateReadyOrganization(t, other, "Other").ID)
	var refresh struct {
		RefreshToken string `json:"refresh_token"`
	}
	cp.Do(t, http.MethodPost, "/auth/login", "", map[string]string{"email": owner.Email, "password": ownerPassword}).
		Expect(t, http.StatusOK).Decode(t, &refresh)

	refused := []struct {
		name   string
		token  string
		body   map[string]string
		status int
		code   string
	}{
		{"no token", "", map[string]string{"current_password": ownerPassword, "new_password": "brand-new-password"}, http.StatusUnauthorized, "unauthorized"},
		{"wrong current password", owner.AccessToken, map[string]string{"current_password": "not-my-password", "new_password": "brand-new-password"}, http.StatusUnauthorized, "invalid_credentials"},
		{"missing current password", owner.AccessToken, map[string]string{"new_password": "brand-new-password"}, http.StatusUnprocessableEntity, "validation_failed"},
		{"new password too short", owner.AccessToken, map[string]string{"current_password": ownerPassword, "new_password": "short"}, http.StatusUnprocessableEntity, "validation_failed"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			expectProblem(t, cp.Do(t, http.MethodPost, "/auth/password", tc.token, tc.body), tc.status, tc.code)
		})
	}

	const newPassword = "brand-new-password"
	cp.Do(t, http.MethodPost, "/auth/password", owner.AccessToken,
		map[string]string{"current_password": ownerPassword, "new_password": newPassword}).Expect(t, http.StatusNoContent)

	cp.Login(t, owner.Email, newPassword)
	expectProblem(t, cp.Do(t, http.MethodPost, "/auth/login", "", map[string]string{"email": owner.Email, "password": ownerPassword}),
		http.StatusUnauthorized, "invalid_credentials")
	expectProblem(t, cp.Do(t, http.MethodPost, "/auth/refresh", "", map[string]string{"refresh_token": refresh.RefreshToken}),
		http.StatusUnauthorized, "invalid_refresh_token")

	tenantHash := func(t *testing.T, tenant tenantapi.Tenant, email string) string {
		var hash string
		testenv.QueryRow(t, cptest.DSN(tenant.Database), `SELECT password_hash FROM tenantuser WHERE email = $1`, []any{email}, &hash)
		return hash
	}
	for i, tenant := range ownTenants {
		testenv.Eventually(t, 30*time.Second, func() bool {
			return bcrypt.CompareHashAndPassword([]byte(tenantHash(t, tenant, owner.Email)), []byte(newPassword)) == nil
		}, "tenant admin row follows the new password")
		t.Logf("tenant %d of the owner follows", i+1)
	}
	if bcrypt.CompareHashAndPassword([]byte(tenantHash(t, otherTenant, other.Email)), []byte(ownerPassword)) != nil {
		t.Fatal("another owner's tenant admin lost its password")
	}
}
