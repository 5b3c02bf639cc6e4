package app_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"tenantbase/libs/problem"
	"tenantbase/libs/testenv"
)

// tenantBodies are the endpoints that take a JSON body; auth says whether
// they are sent with the owner's (an admin's) token.
var tenantBodies = []struct {
	method, path string
	auth         bool
}{
	{http.MethodPost, "/auth/register", false},
	{http.MethodPost, "/auth/login", false},
	{http.MethodPost, "/auth/refresh", false},
	{http.MethodPost, "/auth/logout", false},
	{http.MethodPatch, "/profile", true},
	{http.MethodPost, "/profile/password", true},
	{http.MethodPatch, "/users/2", true},
}

// expectNoServerError fails on a 5xx and on a refusal that is no problem
// document (the answer was already checked against the OpenAPI document).
func expectNoServerError(t *testing.T, res *testenv.Response, what string) {
	t.Helper()
	if res.Status >= 500 {
		t.Fatalf("%s answered %d: %s", what, res.Status, res.Body)
	}
	if res.Status >= 400 && !strings.HasPrefix(res.Header.Get("Content-Type"), problem.ContentType) {
		t.Fatalf("%s answered %d without a problem document: %s", what, res.Status, res.Body)
	}
}

// FuzzRequestBodies sends arbitrary bodies to every endpoint that takes
// one, through the real router and a real tenant database: no input makes
// the plane fail (a 5xx) or answer outside its OpenAPI document.
func FuzzRequestBodies(f *testing.F) {
	w := newWorld(f, nil)
	tok := w.ownerLogin(f, w.a.ID).AccessToken
	w.tp.register(f, w.a.ID, "member@example.com", "member-password-1")
	for i := range tenantBodies {
		for _, seed := range []string{
			`{"email":"new@example.com","password":"correct horse battery"}`, `{"email":"owner@example.com","password":"x"}`,
			`{"refresh_token":"abc"}`, `{"display_name":"Ada","bio":null,"avatar_url":"https://example.com/a.png"}`,
			`{"current_password":"wrong","new_password":"short"}`, `{"role":"admin","is_active":false}`,
			`{}`, `null`, `[]`, `"x"`, `{"email":1}`, `{"unknown":true}`, `{"display_name":"` + strings.Repeat("é", 200) + `"}`,
			`{"a":1}{"b":2}`, "{\"email\":\"a\u0000b@example.com\"}", "\xff\xfe",
		} {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		e := tenantBodies[int(which)%len(tenantBodies)]
		req, err := http.NewRequest(e.method, w.tp.PublicURL+e.path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-TENANT", strconv.FormatInt(w.a.ID, 10))
		if e.auth {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		expectNoServerError(t, w.tp.send(t, req), e.method+" "+e.path)
	})
}

// FuzzTenantHeaderAndToken sends arbitrary X-TENANT values and bearer
// tokens to a route that needs both: only the owner's own token on its
// own tenant is served; nothing makes the plane fail.
func FuzzTenantHeaderAndToken(f *testing.F) {
	w := newWorld(f, nil)
	tok := w.ownerLogin(f, w.a.ID).AccessToken
	a, b := strconv.FormatInt(w.a.ID, 10), strconv.FormatInt(w.b.ID, 10)
	for _, seed := range []struct{ tenant, token string }{
		{a, tok}, {b, tok}, {a, tok + "x"}, {a, ""}, {"", tok}, {"0" + a, tok}, {a + " ", tok}, {"-" + a, tok},
		{"999999999999999999999", tok}, {a, "Bearer " + tok}, {a, strings.Repeat("a", 5000)}, {"1,2", tok},
	} {
		f.Add(seed.tenant, seed.token)
	}
	f.Fuzz(func(t *testing.T, tenant, token string) {
		if strings.ContainsFunc(tenant+token, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return // no HTTP client sends control characters in a header
		}
		req, err := http.NewRequest(http.MethodGet, w.tp.PublicURL+"/profile", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tenant != "" {
			req.Header["X-Tenant"] = []string{tenant}
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res := w.tp.send(t, req)
		expectNoServerError(t, res, "GET /profile")
		// Spaces around a header value are not part of it (RFC 9110).
		if res.Status == http.StatusOK && (strings.Trim(tenant, " ") != a || strings.Trim(token, " ") != tok) {
			t.Fatalf("X-TENANT %q with token %q was served", tenant, token)
		}
	})
}
