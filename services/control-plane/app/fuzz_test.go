package app_test

import (
	"net/http"
	"strings"
	"testing"

	"tenantbase/libs/problem"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
)

// coreBodies are the endpoints that take a JSON body and whose token they
// are sent with: none, a verified user's (not an owner, so that no
// organization is provisioned for each input), or an admin's.
var coreBodies = []struct {
	method, path string
	token        string // "", "user" or "admin"
}{
	{http.MethodPost, "/auth/register", ""},
	{http.MethodPost, "/auth/verify", ""},
	{http.MethodPost, "/auth/verify/resend", ""},
	{http.MethodPost, "/auth/login", ""},
	{http.MethodPost, "/auth/refresh", ""},
	{http.MethodPost, "/auth/logout", ""},
	{http.MethodPost, "/auth/password", "user"},
	{http.MethodPost, "/organizations", "user"},
	{http.MethodPatch, "/admin/users/2", "admin"},
}

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
// one, through the real router and the real core database: no input makes
// the control plane fail (a 5xx) or answer outside its OpenAPI document.
func FuzzRequestBodies(f *testing.F) {
	cp := cptest.Start(f, cptest.Options{})
	tokens := map[string]string{
		"user":  cp.SignUp(f, "user@example.com", "user-password-1", false).AccessToken,
		"admin": cp.LoginAdmin(f),
	}
	for i := range coreBodies {
		for _, seed := range []string{
			`{"email":"new@example.com","password":"correct horse battery","is_owner":false}`, `{"email":"user@example.com","password":"x"}`,
			`{"token":"abc"}`, `{"refresh_token":"abc"}`, `{"current_password":"wrong","new_password":"short"}`,
			`{"name":"Acme"}`, `{"name":"` + strings.Repeat("é", 200) + `","owner_id":-1}`, `{"is_admin":true,"is_owner":null}`,
			`{}`, `null`, `[]`, `"x"`, `{"email":1}`, `{"unknown":true}`, `{"a":1}{"b":2}`,
			"{\"email\":\"a\u0000b@example.com\"}", "\xff\xfe",
		} {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		e := coreBodies[int(which)%len(coreBodies)]
		res := cp.DoRaw(t, e.method, e.path, tokens[e.token], "application/json", body)
		expectNoServerError(t, res, e.method+" "+e.path)
	})
}

// FuzzBearerTokens sends arbitrary bearer tokens to a route that needs
// one: only the user's own token is served; nothing makes it fail.
func FuzzBearerTokens(f *testing.F) {
	cp := cptest.Start(f, cptest.Options{})
	tok := cp.SignUp(f, "user@example.com", "user-password-1", false).AccessToken
	for _, seed := range []string{tok, tok + "x", tok[:len(tok)-2], "", ".", "a.b.c", strings.Repeat("a", 5000),
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIiwiYXVkIjpbImNvcmUiXX0."} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		if strings.ContainsFunc(token, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return // no HTTP client sends control characters in a header
		}
		res := cp.Do(t, http.MethodGet, "/auth/me", token, nil)
		expectNoServerError(t, res, "GET /auth/me")
		if res.Status == http.StatusOK && strings.Trim(token, " ") != tok {
			t.Fatalf("token %q was accepted", token)
		}
	})
}
