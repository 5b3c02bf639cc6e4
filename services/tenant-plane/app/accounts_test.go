package app_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"tenantbase/libs/testenv"
	"tenantbase/services/tenant-plane/app"
)

func TestAccountAPI(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *app.Config) { c.LoginMaxFailures = 3 })
	tp, a := w.tp, w.a.ID
	admin := w.ownerLogin(t, a)
	member := tp.register(t, a, "mem@example.com", "member-password-1")
	memberTok := tp.login(t, a, "mem@example.com", "member-password-1")

	raw := func(method, p, contentType string, body []byte, token string) func(t *testing.T) *testenv.Response {
		return func(t *testing.T) *testenv.Response {
			req, err := http.NewRequest(method, tp.PublicURL+p, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-TENANT", strconv.FormatInt(a, 10))
			req.Header.Set("Content-Type", contentType)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			return tp.send(t, req)
		}
	}
	call := func(method, p, token string, body any) func(t *testing.T) *testenv.Response {
		return func(t *testing.T) *testenv.Response { return tp.call(t, method, p, a, token, body) }
	}
	creds := func(email, pw string) map[string]string { return map[string]string{"email": email, "password": pw} }

	cases := []struct {
		name   string
		do     func(t *testing.T) *testenv.Response
		status int
		code   string
	}{
		{"register: malformed JSON", raw(http.MethodPost, "/auth/register", "application/json", []byte(`{"email":`), ""), 400, "malformed_json"},
		{"register: unknown field", call(http.MethodPost, "/auth/register", "", map[string]any{"email": "x@example.com", "password": "long-enough-1", "role": "admin"}), 422, "validation_failed"},
		{"register: not JSON", raw(http.MethodPost, "/auth/register", "text/plain", []byte("email=x"), ""), 415, "unsupported_media_type"},
		{"register: body over 1 MiB", raw(http.MethodPost, "/auth/register", "application/json",
			[]byte(`{"email":"`+strings.Repeat("x", 1<<20)+`"}`), ""), 413, "body_too_large"},
		{"register: invalid email", call(http.MethodPost, "/auth/register", "", creds("not-an-email", "long-enough-1")), 422, "validation_failed"},
		{"register: password over 72 bytes", call(http.MethodPost, "/auth/register", "", creds("x@example.com", strings.Repeat("p", 73))), 422, "validation_failed"},
		{"register: taken", call(http.MethodPost, "/auth/register", "", creds("MEM@example.com", "member-password-1")), 409, "email_taken"},
		{"login: missing password", call(http.MethodPost, "/auth/login", "", map[string]string{"email": "mem@example.com"}), 422, "validation_failed"},
		{"login: wrong password", call(http.MethodPost, "/auth/login", "", creds("mem@example.com", "wrong-password")), 401, "invalid_credentials"},
		{"login: unknown user", call(http.MethodPost, "/auth/login", "", creds("nobody@example.com", "member-password-1")), 401, "invalid_credentials"},
		{"profile: member", call(http.MethodGet, "/profile", memberTok.AccessToken, nil), 200, ""},
		{"profile: set fields", call(http.MethodPatch, "/profile", memberTok.AccessToken,
			map[string]any{"display_name": "Mem", "bio": "Hello", "avatar_url": "https://example.com/m.png"}), 200, ""},
		{"profile: clear a field", call(http.MethodPatch, "/profile", memberTok.AccessToken, map[string]any{"bio": nil}), 200, ""},
		{"profile: wrong type", call(http.MethodPatch, "/profile", memberTok.AccessToken, map[string]any{"display_name": 5}), 400, "malformed_json"},
		{"profile: nothing to change", call(http.MethodPatch, "/profile", memberTok.AccessToken, map[string]any{}), 422, "validation_failed"},
		{"profile: bad avatar", call(http.MethodPatch, "/profile", memberTok.AccessToken, map[string]any{"avatar_url": "javascript:alert(1)"}), 422, "validation_failed"},
		{"profile: unknown field", call(http.MethodPatch, "/profile", memberTok.AccessToken, map[string]any{"email": "new@example.com"}), 422, "validation_failed"},
		{"users: member", call(http.MethodGet, "/users", memberTok.AccessToken, nil), 403, "admin_required"},
		{"users: admin", call(http.MethodGet, "/users", admin.AccessToken, nil), 200, ""},
		{"users: bad cursor", call(http.MethodGet, "/users?cursor=abc", admin.AccessToken, nil), 422, "validation_failed"},
		{"users: bad limit", call(http.MethodGet, "/users?limit=0", admin.AccessToken, nil), 422, "validation_failed"},
		{"user: member may not change", call(http.MethodPatch, path("/users/%d", member.ID), memberTok.AccessToken, map[string]any{"role": "admin"}), 403, "admin_required"},
		{"user: unknown", call(http.MethodPatch, "/users/999999", admin.AccessToken, map[string]any{"role": "admin"}), 404, "user_not_found"},
		{"user: id not a number", call(http.MethodPatch, "/users/abc", admin.AccessToken, map[string]any{"role": "admin"}), 404, "user_not_found"},
		{"user: unknown role", call(http.MethodPatch, path("/users/%d", member.ID), admin.AccessToken, map[string]any{"role": "owner"}), 422, "validation_failed"},
		{"user: last admin demoted", call(http.MethodPatch, path("/users/%d", ownerID(t, w, admin.AccessToken)), admin.AccessToken, map[string]any{"role": "member"}), 409, "last_admin"},
		{"user: last admin deactivated", call(http.MethodPatch, path("/users/%d", ownerID(t, w, admin.AccessToken)), admin.AccessToken, map[string]any{"is_active": false}), 409, "last_admin"},
		{"password: wrong current", call(http.MethodPost, "/profile/password", memberTok.AccessToken,
			map[string]string{"current_password": "wrong-password", "new_password": "member-password-2"}), 403, "wrong_password"},
		{"password: too short", call(http.MethodPost, "/profile/password", memberTok.AccessToken,
			map[string]string{"current_password": "member-password-1", "new_password": "short"}), 422, "validation_failed"},
		{"refresh: empty", call(http.MethodPost, "/auth/refresh", "", map[string]string{"refresh_token": ""}), 422, "validation_failed"},
		{"refresh: unknown", call(http.MethodPost, "/auth/refresh", "", map[string]string{"refresh_token": "nope"}), 401, "invalid_refresh_token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.do(t)
			if tc.code != "" {
				res.ExpectProblem(t, tc.status, tc.code)
				return
			}
			res.Expect(t, tc.status)
		})
	}

	t.Run("profile shows the changes", func(t *testing.T) {
		var p struct {
			DisplayName *string `json:"display_name"`
			Bio         *string `json:"bio"`
			AvatarURL   *string `json:"avatar_url"`
			Role        string  `json:"role"`
		}
		tp.call(t, http.MethodGet, "/profile", a, memberTok.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &p)
		if p.DisplayName == nil || *p.DisplayName != "Mem" || p.Bio != nil || p.AvatarURL == nil || p.Role != "member" {
			t.Errorf("profile = %+v", p)
		}
	})

	t.Run("refresh rotation and logout", func(t *testing.T) {
		s := tp.login(t, a, "mem@example.com", "member-password-1")
		var next tokens
		tp.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": s.RefreshToken}).
			Expect(t, http.StatusOK).Decode(t, &next)
		tp.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": s.RefreshToken}).
			ExpectProblem(t, http.StatusUnauthorized, "invalid_refresh_token")
		tp.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": next.RefreshToken}).
			ExpectProblem(t, http.StatusUnauthorized, "invalid_refresh_token")
		s = tp.login(t, a, "mem@example.com", "member-password-1")
		tp.call(t, http.MethodPost, "/auth/logout", a, "", map[string]string{"refresh_token": s.RefreshToken}).Expect(t, http.StatusNoContent)
		tp.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": s.RefreshToken}).
			ExpectProblem(t, http.StatusUnauthorized, "invalid_refresh_token")
	})

	t.Run("password change ends older tokens", func(t *testing.T) {
		old := tp.login(t, a, "mem@example.com", "member-password-1")
		var fresh tokens
		tp.call(t, http.MethodPost, "/profile/password", a, old.AccessToken,
			map[string]string{"current_password": "member-password-1", "new_password": "member-password-2"}).
			Expect(t, http.StatusOK).Decode(t, &fresh)
		tp.call(t, http.MethodGet, "/profile", a, old.AccessToken, nil).ExpectProblem(t, http.StatusUnauthorized, "unauthorized")
		tp.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": old.RefreshToken}).
			ExpectProblem(t, http.StatusUnauthorized, "invalid_refresh_token")
		tp.call(t, http.MethodGet, "/profile", a, fresh.AccessToken, nil).Expect(t, http.StatusOK)
		memberTok = tp.login(t, a, "mem@example.com", "member-password-2")
	})

	t.Run("users are paginated and filtered", func(t *testing.T) {
		tp.register(t, a, "zed@example.org", "zed-password-1")
		var seen []string
		cursor := ""
		for range 10 {
			var page struct {
				Items      []user  `json:"items"`
				NextCursor *string `json:"next_cursor"`
			}
			tp.call(t, http.MethodGet, "/users?limit=1"+cursor, a, admin.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &page)
			for _, u := range page.Items {
				seen = append(seen, u.Email)
			}
			if page.NextCursor == nil {
				break
			}
			cursor = "&cursor=" + *page.NextCursor
		}
		if len(seen) != 3 {
			t.Errorf("paged through %v, want 3 users", seen)
		}
		var page struct {
			Items []user `json:"items"`
		}
		tp.call(t, http.MethodGet, "/users?email=EXAMPLE.ORG", a, admin.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &page)
		if len(page.Items) != 1 || page.Items[0].Email != "zed@example.org" {
			t.Errorf("filtered users = %+v", page.Items)
		}
	})

	t.Run("deactivation", func(t *testing.T) {
		var u user
		tp.call(t, http.MethodPatch, path("/users/%d", member.ID), a, admin.AccessToken, map[string]any{"is_active": false}).
			Expect(t, http.StatusOK).Decode(t, &u)
		if u.IsActive {
			t.Fatalf("still active: %+v", u)
		}
		tp.call(t, http.MethodGet, "/profile", a, memberTok.AccessToken, nil).ExpectProblem(t, http.StatusUnauthorized, "unauthorized")
		tp.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": memberTok.RefreshToken}).
			ExpectProblem(t, http.StatusUnauthorized, "invalid_refresh_token")
		tp.call(t, http.MethodPost, "/auth/login", a, "", creds("mem@example.com", "member-password-2")).
			ExpectProblem(t, http.StatusForbidden, "user_inactive")
		tp.call(t, http.MethodPatch, path("/users/%d", member.ID), a, admin.AccessToken, map[string]any{"is_active": true, "role": "admin"}).
			Expect(t, http.StatusOK)
		promoted := tp.login(t, a, "mem@example.com", "member-password-2")
		tp.call(t, http.MethodGet, "/users", a, promoted.AccessToken, nil).Expect(t, http.StatusOK)
		tp.call(t, http.MethodPatch, path("/users/%d", ownerID(t, w, admin.AccessToken)), a, promoted.AccessToken,
			map[string]any{"role": "member"}).Expect(t, http.StatusOK)
		// The demotion holds at once, whatever the owner's token says.
		tp.call(t, http.MethodGet, "/users", a, admin.AccessToken, nil).ExpectProblem(t, http.StatusForbidden, "admin_required")
	})

	t.Run("failed logins lock the account", func(t *testing.T) {
		tp.register(t, a, "locked@example.com", "locked-password-1")
		for range 3 {
			tp.call(t, http.MethodPost, "/auth/login", a, "", creds("locked@example.com", "wrong-password")).
				ExpectProblem(t, http.StatusUnauthorized, "invalid_credentials")
		}
		res := tp.call(t, http.MethodPost, "/auth/login", a, "", creds("locked@example.com", "locked-password-1")).
			ExpectProblem(t, http.StatusTooManyRequests, "too_many_attempts")
		if res.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	})
}

// ownerID is the organization owner's tenant user id, from their profile.
func ownerID(t *testing.T, w *world, token string) int64 {
	t.Helper()
	var p struct {
		ID int64 `json:"id"`
	}
	w.tp.call(t, http.MethodGet, "/profile", w.a.ID, token, nil).Expect(t, http.StatusOK).Decode(t, &p)
	return p.ID
}

func TestDiscoveryEndpoints(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	res := w.tp.call(t, http.MethodGet, "/openapi.yaml", 0, "", nil).Expect(t, http.StatusOK)
	if !bytes.Equal(res.Body, app.OpenAPI) {
		t.Error("served OpenAPI document differs from the embedded one")
	}
	w.tp.call(t, http.MethodGet, "/health", 0, "", nil).Expect(t, http.StatusOK)

	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	w.tp.call(t, http.MethodGet, "/.well-known/jwks.json", 0, "", nil).Expect(t, http.StatusOK).Decode(t, &jwks)
	tok := w.ownerLogin(t, w.a.ID).AccessToken
	kid := jwtHeader(t, tok)["kid"]
	if len(jwks.Keys) != 1 || jwks.Keys[0].Kid != kid {
		t.Errorf("JWKS %+v does not hold the token's kid %v", jwks, kid)
	}

	w.tp.call(t, http.MethodGet, "/profile", w.a.ID, tok, nil).Expect(t, http.StatusOK)
	for _, series := range []string{
		"tenant_pools_open",
		`tenant_pool_connections{state="idle"}`,
		"tenant_pool_budget_used",
		`tenant_cache_requests_total{result="hit"}`,
		`tenant_cache_requests_total{result="miss"}`,
		`tenant_lookups_total{outcome="ok"}`,
	} {
		if v := w.tp.metric(t, series); v < 1 {
			t.Errorf("metric %s = %v, want at least 1", series, v)
		}
	}
}
