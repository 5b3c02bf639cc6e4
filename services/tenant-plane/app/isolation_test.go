package app_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/auth"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/tenant-plane/app"
)

// editClaims rewrites the payload of a signed token and keeps its
// signature, as an attacker without the key would.
func editClaims(t *testing.T, token string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	raw, err = json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func TestTokensDoNotCrossTenantsOrPlanes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	a, b := w.a.ID, w.b.ID
	tokA := w.ownerLogin(t, a).AccessToken
	w.ownerLogin(t, b)
	// A core token as the control plane signs them, with its own key and
	// issuer. A real one is refused too, and a tenant token by the control
	// plane, in deploy/ (TestIngressEndToEnd, "X-TENANT chooses the plane").
	_, coreKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	coreKeys := auth.NewKeys("tenantbase-control-plane", coreKey)
	coreToken, err := coreKeys.Sign(auth.CoreClaims{RegisteredClaims: coreKeys.Registered("1", auth.CoreAudience, time.Minute), IsOwner: true})
	if err != nil {
		t.Fatal(err)
	}

	var claims auth.TenantClaims
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tokA, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	if len(claims.Audience) != 1 || claims.Audience[0] != auth.TenantAudience(a) || claims.TenantID != a ||
		claims.Role != "admin" || claims.Subject == "" || claims.ExpiresAt == nil {
		t.Fatalf("claims of the owner's tenant token = %+v", claims)
	}

	cases := []struct {
		name   string
		tenant int64
		token  string
	}{
		{"tenant A's token with X-TENANT B", b, tokA},
		{"a core token", a, coreToken},
		{"tid and aud edited to B", b, editClaims(t, tokA, func(c map[string]any) {
			c["tid"] = b
			c["aud"] = []string{auth.TenantAudience(b)}
		})},
		{"tid edited, aud left", a, editClaims(t, tokA, func(c map[string]any) { c["tid"] = b })},
		{"role edited", a, editClaims(t, tokA, func(c map[string]any) { c["role"] = "member" })},
		{"no token", a, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := w.tp.call(t, http.MethodGet, "/profile", tc.tenant, tc.token, nil).ExpectProblem(t, http.StatusUnauthorized, "unauthorized")
			if res.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	t.Run("the same token with its own tenant", func(t *testing.T) {
		w.tp.call(t, http.MethodGet, "/profile", a, tokA, nil).Expect(t, http.StatusOK)
	})
}

func TestUsersBelongToOneTenant(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	a, b := w.a.ID, w.b.ID
	u := w.tp.register(t, a, "carol@example.com", "carol-password-1")
	if u.Role != "member" || !u.IsActive {
		t.Fatalf("registered %+v", u)
	}

	w.tp.call(t, http.MethodPost, "/auth/login", b, "", map[string]string{"email": "carol@example.com", "password": "carol-password-1"}).
		ExpectProblem(t, http.StatusUnauthorized, "invalid_credentials")
	adminB := w.ownerLogin(t, b).AccessToken
	var page struct {
		Items []user `json:"items"`
	}
	w.tp.call(t, http.MethodGet, "/users?email=carol", b, adminB, nil).Expect(t, http.StatusOK).Decode(t, &page)
	if len(page.Items) != 0 {
		t.Fatalf("tenant B lists A's user: %+v", page.Items)
	}

	// The same address in B is another user, with its own password.
	other := w.tp.register(t, b, "carol@example.com", "another-password-2")
	w.tp.login(t, a, "carol@example.com", "carol-password-1")
	w.tp.login(t, b, "carol@example.com", "another-password-2")
	w.tp.call(t, http.MethodPost, "/auth/login", a, "", map[string]string{"email": "carol@example.com", "password": "another-password-2"}).
		ExpectProblem(t, http.StatusUnauthorized, "invalid_credentials")
	w.tp.call(t, http.MethodGet, "/users?email=carol", b, adminB, nil).Expect(t, http.StatusOK).Decode(t, &page)
	if len(page.Items) != 1 || page.Items[0].ID != other.ID {
		t.Fatalf("tenant B's users named carol: %+v", page.Items)
	}
	w.tp.call(t, http.MethodPost, "/auth/register", a, "", map[string]string{"email": "Carol@Example.com", "password": "carol-password-1"}).
		ExpectProblem(t, http.StatusConflict, "email_taken")
}

func TestInvalidTenantHeaderChangesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	a := w.a.ID
	adminA := w.ownerLogin(t, a).AccessToken
	lookupsBefore := w.tp.metric(t, `tenant_lookups_total{outcome="ok"}`) + w.tp.metric(t, `tenant_lookups_total{outcome="not_found"}`)
	directoryBefore := w.dir.Lookups(a) + w.dir.Lookups(w.b.ID)

	cases := []struct {
		name   string
		values []string
	}{
		{"missing", nil},
		{"SQL in the header", []string{"1 OR 1=1"}},
		{"negative", []string{"-1"}},
		{"zero", []string{"0"}},
		{"statement injection", []string{strconv.FormatInt(a, 10) + ";DROP DATABASE tenant_" + strconv.FormatInt(a, 10)}},
		{"10 KB of digits", []string{strings.Repeat("9", 10*1024)}},
		{"Arabic-Indic digits", []string{"١٢٣"}},
		{"fullwidth digits", []string{"１２３"}},
		{"leading zero", []string{"0" + strconv.FormatInt(a, 10)}},
		{"plus sign", []string{"+" + strconv.FormatInt(a, 10)}},
		{"two values", []string{strconv.FormatInt(a, 10), strconv.FormatInt(w.b.ID, 10)}},
		{"empty", []string{""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, target := range []struct {
				method, path string
				body         string
			}{
				{http.MethodPost, "/auth/register", `{"email":"mallory@example.com","password":"mallory-password"}`},
				{http.MethodGet, "/users", ""},
			} {
				req, err := http.NewRequest(target.method, w.tp.PublicURL+target.path, strings.NewReader(target.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+adminA)
				for _, v := range tc.values {
					req.Header.Add("X-TENANT", v)
				}
				w.tp.send(t, req).ExpectProblem(t, http.StatusBadRequest, "tenant_header_invalid")
			}
		})
	}

	var page struct {
		Items []user `json:"items"`
	}
	w.tp.call(t, http.MethodGet, "/users", a, adminA, nil).Expect(t, http.StatusOK).Decode(t, &page)
	if len(page.Items) != 1 {
		t.Errorf("tenant A has %d users, want only its owner: %+v", len(page.Items), page.Items)
	}
	lookupsAfter := w.tp.metric(t, `tenant_lookups_total{outcome="ok"}`) + w.tp.metric(t, `tenant_lookups_total{outcome="not_found"}`)
	if lookupsAfter != lookupsBefore {
		t.Errorf("invalid headers caused %v tenant lookups", lookupsAfter-lookupsBefore)
	}
	if n := w.dir.Lookups(a) + w.dir.Lookups(w.b.ID); n != directoryBefore {
		t.Errorf("the directory saw %d lookups during the attempts, want none", n-directoryBefore)
	}
	// The statement in the header reached no database: A's is still there,
	// as its own role sees it, with its owner alone.
	var users int
	testenv.QueryRow(t, tenantdbtest.DSN(w.a.DB), `SELECT count(*) FROM tenantuser`, nil, &users)
	if users != 1 {
		t.Errorf("tenant A's database holds %d users, want 1", users)
	}
}

func TestConcurrentFirstRequestsShareOneLookup(t *testing.T) {
	t.Parallel()
	// Fifty registrations hash their passwords at once: on a loaded machine
	// some would wait past the default queue wait and be shed with 503,
	// which this test is not about.
	w := newWorld(t, func(c *app.Config) { c.BcryptQueueWait = time.Minute })
	a := w.a.ID
	if n := w.dir.Lookups(a); n != 0 {
		t.Fatalf("tenant A looked up %d times before the first request", n)
	}

	const n = 50
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = w.tp.call(t, http.MethodPost, "/auth/register", a, "",
				map[string]string{"email": "user" + strconv.Itoa(i) + "@example.com", "password": "user-password-1"}).Status
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusCreated {
			t.Errorf("request %d answered %d", i, s)
		}
	}
	if got := w.dir.Lookups(a); got != 1 {
		t.Errorf("the directory saw %d lookups of tenant A for %d concurrent first requests, want 1", got, n)
	}
}

// jwtHeader decodes the header of a compact JWS.
func jwtHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}
