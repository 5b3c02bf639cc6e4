package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/config"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
)

func TestAdminBootstrap(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	tok := h.loginAdmin(t)
	res := h.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken))
	res.expect(t, http.StatusOK, "")
	var me userBody
	res.Decode(t, &me)
	if me.Email != adminEmail || !me.IsAdmin || !me.IsOwner || !me.IsVerified {
		t.Fatalf("bootstrap admin %+v, want a verified admin and owner", me)
	}
	if claims := unverifiedClaims(t, tok.AccessToken); claims["is_admin"] != true {
		t.Fatalf("admin token claims %v", claims)
	}

	t.Run("kept as it is on restart", func(t *testing.T) {
		again := startControlPlane(t, harnessOptions{DatabaseURL: h.DatabaseURL, Config: func(c *app.Config) {
			c.BootstrapAdminPassword = "a-different-password"
		}})
		var n int
		if err := again.db(t).QueryRow(context.Background(), `SELECT count(*) FROM coreuser WHERE email = $1`, adminEmail).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d bootstrap admins after a restart", n)
		}
		again.loginAdmin(t)
		again.do(t, http.MethodPost, "/auth/login", map[string]string{"email": adminEmail, "password": "a-different-password"}).
			expect(t, http.StatusUnauthorized, "invalid_credentials")
	})

	t.Run("bad bootstrap settings stop the start", func(t *testing.T) {
		cases := []struct {
			name            string
			email, password string
			want            string
		}{
			{name: "email without password", email: "root@example.com", want: "BOOTSTRAP_ADMIN_PASSWORD"},
			{name: "password without email", password: "long-enough-password", want: "BOOTSTRAP_ADMIN_EMAIL"},
			{name: "short password", email: "root@example.com", password: "short", want: "BOOTSTRAP_ADMIN_PASSWORD"},
			{name: "bad email", email: "root", password: "long-enough-password", want: "BOOTSTRAP_ADMIN_EMAIL"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				cfg := h.Config
				cfg.DatabaseURL = config.Secret(testenv.NewDatabase(t))
				cfg.BootstrapAdminEmail = tc.email
				cfg.BootstrapAdminPassword = config.Secret(tc.password)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				err := app.Run(ctx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)), app.WithReady(func(app.Addrs) {
					t.Error("the control plane started")
					cancel()
				}))
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Run error %v, want one naming %s", err, tc.want)
				}
			})
		}
	})
}

func TestAdminUsers(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	admin := h.loginAdmin(t)
	emails := []string{"a@example.org", "b@example.com", "c@EXAMPLE.org", "d@example.net", "e@sub.example.org"}
	for _, e := range emails {
		h.register(t, e, password, false)
	}
	list := func(t *testing.T, query string) (*apiResponse, []userBody, *string) {
		t.Helper()
		res := h.do(t, http.MethodGet, "/admin/users"+query, nil, withToken(admin.AccessToken))
		if res.Status != http.StatusOK {
			return res, nil, nil
		}
		var page struct {
			Items      []userBody `json:"items"`
			NextCursor *string    `json:"next_cursor"`
		}
		res.Decode(t, &page)
		return res, page.Items, page.NextCursor
	}

	t.Run("pages", func(t *testing.T) {
		var (
			seen   []string
			cursor *string
			pages  int
		)
		for {
			q := "?limit=2"
			if cursor != nil {
				q += "&cursor=" + url.QueryEscape(*cursor)
			}
			res, items, next := list(t, q)
			res.expect(t, http.StatusOK, "")
			pages++
			for _, u := range items {
				seen = append(seen, u.Email)
			}
			if next == nil {
				break
			}
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
			cursor = next
		}
		want := adminEmail + "," + strings.ToLower(strings.Join(emails, ","))
		if got := strings.Join(seen, ","); got != want || pages != 3 {
			t.Fatalf("%d pages listing %s, want 3 pages listing %s", pages, got, want)
		}
	})

	t.Run("default page holds everyone", func(t *testing.T) {
		res, items, next := list(t, "")
		res.expect(t, http.StatusOK, "")
		if len(items) != 6 || next != nil {
			t.Fatalf("%d users and cursor %v, want 6 and null", len(items), next)
		}
		for i := 1; i < len(items); i++ {
			if items[i].ID <= items[i-1].ID {
				t.Fatalf("users not in id order: %+v", items)
			}
		}
	})

	filters := []struct {
		name  string
		query string
		want  string
	}{
		{name: "domain", query: "?email=example.org", want: "a@example.org,c@example.org,e@sub.example.org"},
		{name: "case-insensitive", query: "?email=EXAMPLE.ORG", want: "a@example.org,c@example.org,e@sub.example.org"},
		{name: "with limit", query: "?email=example.org&limit=1", want: "a@example.org"},
		{name: "no match", query: "?email=nowhere", want: ""},
		{name: "like wildcards are literal", query: "?email=" + url.QueryEscape("%"), want: ""},
	}
	for _, tc := range filters {
		t.Run("filter "+tc.name, func(t *testing.T) {
			res, items, _ := list(t, tc.query)
			res.expect(t, http.StatusOK, "")
			var got []string
			for _, u := range items {
				got = append(got, u.Email)
			}
			if strings.Join(got, ",") != tc.want {
				t.Fatalf("filter %s gave %v, want %s", tc.query, got, tc.want)
			}
		})
	}

	invalid := []struct {
		query string
		field string
	}{
		{"?limit=0", "limit"},
		{"?limit=201", "limit"},
		{"?limit=-5", "limit"},
		{"?limit=abc", "limit"},
		{"?cursor=abc", "cursor"},
		{"?cursor=0", "cursor"},
		{"?cursor=-3", "cursor"},
	}
	for _, tc := range invalid {
		t.Run("invalid "+tc.query, func(t *testing.T) {
			res, _, _ := list(t, tc.query)
			res.expect(t, http.StatusUnprocessableEntity, "validation_failed")
			if p := res.Problem(t); len(p.Errors) != 1 || p.Errors[0].Field != tc.field {
				t.Fatalf("422 names %+v, want %s", p.Errors, tc.field)
			}
		})
	}
	t.Run("largest page", func(t *testing.T) {
		res, items, _ := list(t, "?limit=200")
		res.expect(t, http.StatusOK, "")
		if len(items) != 6 {
			t.Fatalf("%d users", len(items))
		}
	})
}

func TestAdminForbidden(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	u, user := h.signUp(t, "user@example.com", password, true)
	target := "/admin/users/" + strconv.FormatInt(u.ID, 10)

	cases := []struct {
		name   string
		method string
		path   string
		body   any
		opts   []requestOption
		status int
		code   string
	}{
		{name: "list without token", method: "GET", path: "/admin/users", status: 401, code: "unauthorized"},
		{name: "list as owner", method: "GET", path: "/admin/users", opts: []requestOption{withToken(user.AccessToken)}, status: 403, code: "admin_required"},
		{name: "patch without token", method: "PATCH", path: target, body: map[string]bool{"is_admin": true}, status: 401, code: "unauthorized"},
		{name: "patch self to admin", method: "PATCH", path: target, body: map[string]bool{"is_admin": true}, opts: []requestOption{withToken(user.AccessToken)}, status: 403, code: "admin_required"},
		{name: "patch unknown user as non-admin", method: "PATCH", path: "/admin/users/999999", body: map[string]bool{"is_admin": true}, opts: []requestOption{withToken(user.AccessToken)}, status: 403, code: "admin_required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.do(t, tc.method, tc.path, tc.body, tc.opts...).expect(t, tc.status, tc.code)
		})
	}
	var isAdmin bool
	if err := h.db(t).QueryRow(context.Background(), `SELECT is_admin FROM coreuser WHERE id = $1`, u.ID).Scan(&isAdmin); err != nil {
		t.Fatal(err)
	}
	if isAdmin {
		t.Fatal("a refused request made the user an admin")
	}
}

func TestAdminUpdateUser(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	root := h.loginAdmin(t)
	var rootID int64
	{
		res := h.do(t, http.MethodGet, "/auth/me", nil, withToken(root.AccessToken))
		var me userBody
		res.Decode(t, &me)
		rootID = me.ID
	}
	patch := func(t *testing.T, token string, id int64, body any) *apiResponse {
		t.Helper()
		return h.do(t, http.MethodPatch, "/admin/users/"+strconv.FormatInt(id, 10), body, withToken(token))
	}

	t.Run("flags", func(t *testing.T) {
		u := h.register(t, "flags@example.com", password, false)
		h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "flags@example.com", "password": password}).expect(t, 403, "email_not_verified")

		res := patch(t, root.AccessToken, u.ID, map[string]bool{"is_verified": true, "is_owner": true})
		res.expect(t, http.StatusOK, "")
		var got userBody
		res.Decode(t, &got)
		if got.ID != u.ID || !got.IsVerified || !got.IsOwner || got.IsAdmin {
			t.Fatalf("patched user %+v", got)
		}
		tok := h.login(t, "flags@example.com", password)
		if claims := unverifiedClaims(t, tok.AccessToken); claims["is_owner"] != true {
			t.Fatalf("claims %v, want is_owner", claims)
		}

		// Fields left out keep their values.
		res = patch(t, root.AccessToken, u.ID, map[string]bool{"is_owner": false})
		res.expect(t, http.StatusOK, "")
		res.Decode(t, &got)
		if !got.IsVerified || got.IsOwner {
			t.Fatalf("patched user %+v", got)
		}

		patch(t, root.AccessToken, u.ID, map[string]bool{"is_verified": false}).expect(t, http.StatusOK, "")
		h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "flags@example.com", "password": password}).expect(t, 403, "email_not_verified")
		h.do(t, http.MethodPost, "/auth/refresh", map[string]string{"refresh_token": tok.RefreshToken}).expect(t, 403, "email_not_verified")
	})

	t.Run("promotion needs a new token, demotion bites at once", func(t *testing.T) {
		u, before := h.signUp(t, "deputy@example.com", password, false)
		patch(t, root.AccessToken, u.ID, map[string]bool{"is_admin": true}).expect(t, http.StatusOK, "")
		// The old token does not claim is_admin.
		h.do(t, http.MethodGet, "/admin/users", nil, withToken(before.AccessToken)).expect(t, 403, "admin_required")
		deputy := h.login(t, "deputy@example.com", password)
		h.do(t, http.MethodGet, "/admin/users", nil, withToken(deputy.AccessToken)).expect(t, 200, "")

		patch(t, root.AccessToken, u.ID, map[string]bool{"is_admin": false}).expect(t, http.StatusOK, "")
		// Its token still claims is_admin, but the row no longer does.
		h.do(t, http.MethodGet, "/admin/users", nil, withToken(deputy.AccessToken)).expect(t, 403, "admin_required")
		patch(t, deputy.AccessToken, rootID, map[string]bool{"is_admin": false}).expect(t, 403, "admin_required")
	})

	errs := []struct {
		name   string
		path   string
		body   string
		status int
		code   string
	}{
		{name: "unknown id", path: "/admin/users/999999", body: `{"is_owner":true}`, status: 404, code: "user_not_found"},
		{name: "id not a number", path: "/admin/users/abc", body: `{"is_owner":true}`, status: 404, code: "user_not_found"},
		{name: "empty patch", path: "/admin/users/" + strconv.FormatInt(rootID, 10), body: `{}`, status: 422, code: "validation_failed"},
		{name: "unknown field", path: "/admin/users/" + strconv.FormatInt(rootID, 10), body: `{"email":"x@example.com"}`, status: 422, code: "validation_failed"},
		{name: "malformed", path: "/admin/users/" + strconv.FormatInt(rootID, 10), body: `{"is_owner":`, status: 400, code: "malformed_json"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			h.do(t, http.MethodPatch, tc.path, nil, withRawBody([]byte(tc.body)), withToken(root.AccessToken)).expect(t, tc.status, tc.code)
		})
	}

	t.Run("the last admin stays", func(t *testing.T) {
		patch(t, root.AccessToken, rootID, map[string]bool{"is_admin": false}).expect(t, http.StatusConflict, "last_admin")
		h.do(t, http.MethodGet, "/admin/users", nil, withToken(root.AccessToken)).expect(t, 200, "")

		u, _ := h.signUp(t, "second@example.com", password, false)
		patch(t, root.AccessToken, u.ID, map[string]bool{"is_admin": true}).expect(t, http.StatusOK, "")
		second := h.login(t, "second@example.com", password)
		// Two admins demoting each other at once: one of them must remain.
		var wg sync.WaitGroup
		results := make([]int, 2)
		wg.Go(func() { results[0] = patch(t, root.AccessToken, u.ID, map[string]bool{"is_admin": false}).Status })
		wg.Go(func() { results[1] = patch(t, second.AccessToken, rootID, map[string]bool{"is_admin": false}).Status })
		wg.Wait()
		var admins int
		if err := h.db(t).QueryRow(context.Background(), `SELECT count(*) FROM coreuser WHERE is_admin`).Scan(&admins); err != nil {
			t.Fatal(err)
		}
		if admins != 1 {
			t.Fatalf("%d admins left after mutual demotion (statuses %v), want 1", admins, results)
		}
	})

}
