package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
)

const password = "correct-horse-1"

func TestRegister(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	h.register(t, "taken@example.com", password, false)

	cases := []struct {
		name   string
		body   map[string]any
		status int
		code   string
		// field is the field a 422 must name.
		field string
		// email is the stored address of a created user.
		email string
		owner bool
	}{
		{name: "ok", body: map[string]any{"email": "new@example.com", "password": password}, status: 201, email: "new@example.com"},
		{name: "email normalised", body: map[string]any{"email": "  Mixed.Case@Example.COM\t", "password": password}, status: 201, email: "mixed.case@example.com"},
		{name: "owner under open policy", body: map[string]any{"email": "owner@example.com", "password": password, "is_owner": true}, status: 201, email: "owner@example.com", owner: true},
		{name: "72-byte password", body: map[string]any{"email": "long@example.com", "password": strings.Repeat("p", 72)}, status: 201, email: "long@example.com"},
		{name: "duplicate", body: map[string]any{"email": "taken@example.com", "password": password}, status: 409, code: "email_taken"},
		{name: "duplicate in other case", body: map[string]any{"email": "TAKEN@example.com ", "password": password}, status: 409, code: "email_taken"},
		{name: "bad email", body: map[string]any{"email": "not-an-email", "password": password}, status: 422, code: "validation_failed", field: "email"},
		{name: "display name", body: map[string]any{"email": "Bob <bob@example.com>", "password": password}, status: 422, code: "validation_failed", field: "email"},
		{name: "missing email", body: map[string]any{"password": password}, status: 422, code: "validation_failed", field: "email"},
		{name: "short password", body: map[string]any{"email": "short@example.com", "password": "123456789"}, status: 422, code: "validation_failed", field: "password"},
		{name: "73-byte password", body: map[string]any{"email": "toolong@example.com", "password": strings.Repeat("p", 73)}, status: 422, code: "validation_failed", field: "password"},
		{name: "72 bytes counted, not characters", body: map[string]any{"email": "utf8@example.com", "password": strings.Repeat("é", 37)}, status: 422, code: "validation_failed", field: "password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do(t, http.MethodPost, "/auth/register", tc.body)
			res.expect(t, tc.status, tc.code)
			if tc.field != "" {
				p := res.Problem(t)
				if len(p.Errors) == 0 || p.Errors[0].Field != tc.field {
					t.Fatalf("422 names %+v, want field %q", p.Errors, tc.field)
				}
			}
			if tc.status != http.StatusCreated {
				return
			}
			var u userBody
			res.Decode(t, &u)
			if u.ID < 1 || u.Email != tc.email || u.IsVerified || u.IsAdmin || u.IsOwner != tc.owner || u.CreatedAt.IsZero() {
				t.Fatalf("created user %+v, want email %q owner %v, unverified", u, tc.email, tc.owner)
			}
			if strings.Contains(string(res.Body), "password") {
				t.Fatalf("response mentions the password: %s", res.Body)
			}
		})
	}

	t.Run("both fields named", func(t *testing.T) {
		res := h.do(t, http.MethodPost, "/auth/register", map[string]any{"email": "x", "password": "short"})
		res.expect(t, 422, "validation_failed")
		var fields []string
		for _, e := range res.Problem(t).Errors {
			fields = append(fields, e.Field)
		}
		if strings.Join(fields, ",") != "email,password" {
			t.Fatalf("422 names %v, want email and password", fields)
		}
	})

	t.Run("password stored as bcrypt at the configured cost", func(t *testing.T) {
		var hash string
		if err := h.db(t).QueryRow(context.Background(), `SELECT password_hash FROM coreuser WHERE email = 'new@example.com'`).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(hash, "$2a$04$") {
			t.Fatalf("password_hash %q is not bcrypt at cost 4", hash)
		}
	})
}

func TestRegisterOwnerPolicyAdmin(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.OwnerSignupPolicy = "admin" }})

	h.do(t, http.MethodPost, "/auth/register", map[string]any{"email": "owner@example.com", "password": password, "is_owner": true}).
		expect(t, http.StatusForbidden, "owner_signup_restricted")
	var n int
	if err := h.db(t).QueryRow(context.Background(), `SELECT count(*) FROM coreuser WHERE email = 'owner@example.com'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a refused owner sign-up created %d users", n)
	}

	u := h.register(t, "plain@example.com", password, false)
	if u.IsOwner {
		t.Fatalf("plain sign-up became an owner: %+v", u)
	}
	admin := h.loginAdmin(t)
	res := h.do(t, http.MethodPatch, "/admin/users/"+strconv.FormatInt(u.ID, 10), map[string]any{"is_owner": true}, withToken(admin.AccessToken))
	res.expect(t, http.StatusOK, "")
	var granted userBody
	res.Decode(t, &granted)
	if !granted.IsOwner {
		t.Fatalf("admin grant did not make an owner: %+v", granted)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	ctx := context.Background()

	h.register(t, "link@example.com", password, false)
	h.register(t, "post@example.com", password, false)
	h.register(t, "late@example.com", password, false)
	linkToken := h.verificationToken(t, "link@example.com", 1)
	postToken := h.verificationToken(t, "post@example.com", 1)
	lateToken := h.verificationToken(t, "late@example.com", 1)
	if _, err := h.db(t).Exec(ctx, `UPDATE verification_token SET expires_at = now() - interval '1 second'
		WHERE user_id = (SELECT id FROM coreuser WHERE email = 'late@example.com')`); err != nil {
		t.Fatal(err)
	}

	t.Run("mail", func(t *testing.T) {
		m := h.SMTP.WaitForMail(t, time.Second, func(m testenv.Mail) bool { return m.To[0] == "link@example.com" })
		if m.From != h.Config.SMTPFrom || !strings.Contains(m.Data, "Subject: Verify your email address") {
			t.Fatalf("mail from %q:\n%s", m.From, m.Data)
		}
	})

	verifyGET := func(token string) *apiResponse {
		return h.do(t, http.MethodGet, "/auth/verify?token="+token, nil)
	}
	verifyPOST := func(token string) *apiResponse {
		return h.do(t, http.MethodPost, "/auth/verify", map[string]string{"token": token})
	}
	cases := []struct {
		name   string
		verify func(string) *apiResponse
		token  string
		status int
		code   string
		email  string
	}{
		{name: "link ok", verify: verifyGET, token: linkToken, status: 200, email: "link@example.com"},
		{name: "link reused", verify: verifyGET, token: linkToken, status: 400, code: "token_invalid"},
		{name: "post ok", verify: verifyPOST, token: postToken, status: 200, email: "post@example.com"},
		{name: "post reused", verify: verifyPOST, token: postToken, status: 400, code: "token_invalid"},
		{name: "expired", verify: verifyPOST, token: lateToken, status: 410, code: "token_expired"},
		{name: "wrong", verify: verifyPOST, token: "not-a-token-we-issued", status: 400, code: "token_invalid"},
		{name: "altered token", verify: verifyPOST, token: strings.ToUpper(linkToken), status: 400, code: "token_invalid"},
		{name: "missing on link", verify: verifyGET, token: "", status: 422, code: "validation_failed"},
		{name: "missing in body", verify: verifyPOST, token: "", status: 422, code: "validation_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.verify(tc.token)
			res.expect(t, tc.status, tc.code)
			if tc.status == http.StatusOK {
				var u userBody
				res.Decode(t, &u)
				if u.Email != tc.email || !u.IsVerified {
					t.Fatalf("verified user %+v, want %s verified", u, tc.email)
				}
			}
		})
	}

	t.Run("expired token leaves the user unverified", func(t *testing.T) {
		h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "late@example.com", "password": password}).
			expect(t, http.StatusForbidden, "email_not_verified")
	})

	t.Run("tokens stored hashed", func(t *testing.T) {
		var n int
		if err := h.db(t).QueryRow(ctx, `SELECT count(*) FROM verification_token WHERE token_hash = ANY($1)`,
			[]string{linkToken, postToken, lateToken}).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d verification tokens stored in clear", n)
		}
	})

	t.Run("concurrent use succeeds once", func(t *testing.T) {
		h.register(t, "race@example.com", password, false)
		token := h.verificationToken(t, "race@example.com", 1)
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			codes = map[int]int{}
		)
		for range 5 {
			wg.Go(func() {
				res := verifyPOST(token)
				mu.Lock()
				codes[res.Status]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if codes[200] != 1 || codes[400] != 4 {
			t.Fatalf("statuses of 5 concurrent uses: %v, want one 200 and four 400", codes)
		}
	})
}

func TestVerifyResend(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	h.register(t, "pending@example.com", password, false)
	first := h.verificationToken(t, "pending@example.com", 1)
	h.signUp(t, "done@example.com", password, false)

	cases := []struct {
		name   string
		email  any
		status int
		code   string
		mails  string
		// wantMail is the number of mails the address holds afterwards.
		wantMail int
	}{
		{name: "unknown account", email: "nobody@example.com", status: 202, mails: "nobody@example.com", wantMail: 0},
		{name: "verified account", email: "done@example.com", status: 202, mails: "done@example.com", wantMail: 1},
		{name: "unverified account", email: " Pending@Example.com", status: 202, mails: "pending@example.com", wantMail: 2},
		{name: "malformed email", email: "nope", status: 422, code: "validation_failed"},
		{name: "wrong type", email: 42, status: 400, code: "malformed_json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do(t, http.MethodPost, "/auth/verify/resend", map[string]any{"email": tc.email})
			res.expect(t, tc.status, tc.code)
			if tc.mails == "" {
				return
			}
			if tc.wantMail > 0 {
				h.verificationToken(t, tc.mails, tc.wantMail)
			}
			// Mail goes out in the background: give a stray one time to arrive.
			time.Sleep(200 * time.Millisecond)
			if got := h.mailsTo(tc.mails); got != tc.wantMail {
				t.Fatalf("%s has %d mails, want %d", tc.mails, got, tc.wantMail)
			}
		})
	}

	t.Run("new link voids the old one", func(t *testing.T) {
		second := h.verificationToken(t, "pending@example.com", 2)
		if second == first {
			t.Fatal("resend mailed the same token again")
		}
		h.do(t, http.MethodPost, "/auth/verify", map[string]string{"token": first}).expect(t, 400, "token_invalid")
		h.do(t, http.MethodPost, "/auth/verify", map[string]string{"token": second}).expect(t, 200, "")
	})
}

func TestLogin(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.LoginMaxFailures = 3 }})
	owner, _ := h.signUp(t, "owner@example.com", password, true)
	h.register(t, "unverified@example.com", password, false)

	cases := []struct {
		name     string
		email    string
		password string
		status   int
		code     string
	}{
		{name: "ok", email: "owner@example.com", password: password, status: 200},
		{name: "email normalised", email: " OWNER@example.com ", password: password, status: 200},
		{name: "unverified", email: "unverified@example.com", password: password, status: 403, code: "email_not_verified"},
		{name: "unverified with wrong password", email: "unverified@example.com", password: "wrong-password", status: 401, code: "invalid_credentials"},
		{name: "wrong password", email: "owner@example.com", password: "wrong-password", status: 401, code: "invalid_credentials"},
		{name: "unknown user", email: "ghost@example.com", password: password, status: 401, code: "invalid_credentials"},
		{name: "missing password", email: "owner@example.com", password: "", status: 422, code: "validation_failed"},
		{name: "malformed email", email: "owner", password: password, status: 422, code: "validation_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": tc.email, "password": tc.password})
			res.expect(t, tc.status, tc.code)
			if tc.status != http.StatusOK {
				return
			}
			var tok tokensBody
			res.Decode(t, &tok)
			if tok.TokenType != "bearer" || tok.ExpiresIn != 900 || tok.RefreshToken == "" {
				t.Fatalf("tokens %+v", tok)
			}
			claims := unverifiedClaims(t, tok.AccessToken)
			if claims["sub"] != strconv.FormatInt(owner.ID, 10) || !audIs(claims["aud"], "core") ||
				claims["iss"] != h.Config.JWTIssuer || claims["is_owner"] != true || claims["is_admin"] != false || claims["jti"] == "" {
				t.Fatalf("access token claims %v", claims)
			}
			if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 900 {
				t.Fatalf("token lifetime %v s, want 900", exp-iat)
			}
			h.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken)).expect(t, 200, "")
		})
	}

	t.Run("throttled", func(t *testing.T) {
		h.signUp(t, "target@example.com", password, false)
		for i := range 3 {
			h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "target@example.com", "password": "wrong-" + strconv.Itoa(i)}).
				expect(t, 401, "invalid_credentials")
		}
		res := h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "target@example.com", "password": password})
		res.expect(t, http.StatusTooManyRequests, "too_many_attempts")
		secs, err := strconv.Atoi(res.Header.Get("Retry-After"))
		if err != nil || secs < 1 || secs > int(h.Config.LoginLockout/time.Second) {
			t.Fatalf("Retry-After %q, want 1..%d seconds", res.Header.Get("Retry-After"), int(h.Config.LoginLockout/time.Second))
		}
		// The lock is per account: others still log in.
		h.login(t, "owner@example.com", password)
		// When the lock has passed, the right password works again.
		if _, err := h.db(t).Exec(context.Background(), `UPDATE coreuser SET locked_until = now() - interval '1 second' WHERE email = 'target@example.com'`); err != nil {
			t.Fatal(err)
		}
		h.login(t, "target@example.com", password)
	})

	t.Run("successful login resets the failure count", func(t *testing.T) {
		h.signUp(t, "reset@example.com", password, false)
		for range 2 {
			h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "reset@example.com", "password": "wrong-password"}).expect(t, 401, "invalid_credentials")
		}
		h.login(t, "reset@example.com", password)
		for range 2 {
			h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "reset@example.com", "password": "wrong-password"}).expect(t, 401, "invalid_credentials")
		}
		h.login(t, "reset@example.com", password)
	})
}

// BenchmarkLogin prints how long failed logins take for an unknown email
// and for a wrong password at the default bcrypt cost: the two should match.
func BenchmarkLogin(b *testing.B) {
	h := startControlPlane(b, harnessOptions{Config: func(c *app.Config) {
		c.BcryptCost = 12
		c.LoginMaxFailures = 1 << 30
	}})
	h.signUp(b, "bench@example.com", password, false)
	for _, bc := range []struct{ name, email string }{
		{"unknown_email", "ghost@example.com"},
		{"wrong_password", "bench@example.com"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				h.do(b, http.MethodPost, "/auth/login", map[string]string{"email": bc.email, "password": "wrong-password"}).expect(b, 401, "invalid_credentials")
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	_, first := h.signUp(t, "user@example.com", password, false)

	refresh := func(token string) *apiResponse {
		return h.do(t, http.MethodPost, "/auth/refresh", map[string]string{"refresh_token": token})
	}

	res := refresh(first.RefreshToken)
	res.expect(t, 200, "")
	var second tokensBody
	res.Decode(t, &second)
	if second.RefreshToken == first.RefreshToken || second.AccessToken == first.AccessToken || second.TokenType != "bearer" {
		t.Fatalf("refresh did not rotate: %+v", second)
	}
	h.do(t, http.MethodGet, "/auth/me", nil, withToken(second.AccessToken)).expect(t, 200, "")

	res = refresh(second.RefreshToken)
	res.expect(t, 200, "")
	var third tokensBody
	res.Decode(t, &third)

	// first was rotated already: presenting it again means it leaked, so
	// the whole family goes, the newest token included.
	refresh(first.RefreshToken).expect(t, 401, "invalid_refresh_token")
	refresh(third.RefreshToken).expect(t, 401, "invalid_refresh_token")

	// Another session of the same user is untouched.
	other := h.login(t, "user@example.com", password)
	refresh(other.RefreshToken).expect(t, 200, "")

	cases := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{name: "unknown token", body: `{"refresh_token":"nope"}`, status: 401, code: "invalid_refresh_token"},
		{name: "missing token", body: `{}`, status: 422, code: "validation_failed"},
		{name: "access token instead", body: `{"refresh_token":"` + first.AccessToken + `"}`, status: 401, code: "invalid_refresh_token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.do(t, http.MethodPost, "/auth/refresh", nil, withRawBody([]byte(tc.body))).expect(t, tc.status, tc.code)
		})
	}

	t.Run("expired", func(t *testing.T) {
		s := h.login(t, "user@example.com", password)
		if _, err := h.db(t).Exec(context.Background(), `UPDATE refresh_token SET expires_at = now() - interval '1 second'`); err != nil {
			t.Fatal(err)
		}
		refresh(s.RefreshToken).expect(t, 401, "invalid_refresh_token")
	})

	t.Run("carries current flags", func(t *testing.T) {
		u, s := h.signUp(t, "promoted@example.com", password, false)
		admin := h.loginAdmin(t)
		h.do(t, http.MethodPatch, "/admin/users/"+strconv.FormatInt(u.ID, 10), map[string]any{"is_owner": true}, withToken(admin.AccessToken)).expect(t, 200, "")
		res := refresh(s.RefreshToken)
		res.expect(t, 200, "")
		var tok tokensBody
		res.Decode(t, &tok)
		if claims := unverifiedClaims(t, tok.AccessToken); claims["is_owner"] != true {
			t.Fatalf("refreshed token claims %v, want is_owner", claims)
		}
	})
}

func TestRefreshLogout(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	h.signUp(t, "user@example.com", password, false)
	a := h.login(t, "user@example.com", password)
	b := h.login(t, "user@example.com", password)

	h.do(t, http.MethodPost, "/auth/logout", map[string]string{"refresh_token": a.RefreshToken}).expect(t, 204, "")
	h.do(t, http.MethodPost, "/auth/refresh", map[string]string{"refresh_token": a.RefreshToken}).expect(t, 401, "invalid_refresh_token")
	h.do(t, http.MethodPost, "/auth/refresh", map[string]string{"refresh_token": b.RefreshToken}).expect(t, 200, "")

	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{name: "again", body: map[string]string{"refresh_token": a.RefreshToken}, status: 204},
		{name: "unknown token", body: map[string]string{"refresh_token": "nope"}, status: 204},
		{name: "missing token", body: map[string]string{}, status: 422, code: "validation_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.do(t, http.MethodPost, "/auth/logout", tc.body).expect(t, tc.status, tc.code)
		})
	}
}

func TestAccountsMe(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	u, tok := h.signUp(t, "me@example.com", password, true)

	res := h.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken))
	res.expect(t, 200, "")
	var me userBody
	res.Decode(t, &me)
	if me.ID != u.ID || me.Email != "me@example.com" || !me.IsVerified || !me.IsOwner || me.IsAdmin || !me.CreatedAt.Equal(u.CreatedAt) {
		t.Fatalf("me %+v, registered %+v", me, u)
	}
	var raw map[string]any
	res.Decode(t, &raw)
	for _, k := range []string{"id", "email", "is_verified", "is_owner", "is_admin", "created_at"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("me lacks %q: %s", k, res.Body)
		}
	}

	cases := []struct {
		name string
		opts []requestOption
	}{
		{name: "no token"},
		{name: "not bearer", opts: []requestOption{withHeader("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("me@example.com:"+password)))}},
		{name: "empty bearer", opts: []requestOption{withHeader("Authorization", "Bearer ")}},
		{name: "garbage", opts: []requestOption{withToken("garbage")}},
		{name: "refresh token", opts: []requestOption{withToken(tok.RefreshToken)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do(t, http.MethodGet, "/auth/me", nil, tc.opts...)
			res.expect(t, 401, "unauthorized")
			if !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", res.Header.Get("WWW-Authenticate"))
			}
		})
	}

	t.Run("deleted user", func(t *testing.T) {
		_, gone := h.signUp(t, "gone@example.com", password, false)
		if _, err := h.db(t).Exec(context.Background(), `DELETE FROM coreuser WHERE email = 'gone@example.com'`); err != nil {
			t.Fatal(err)
		}
		h.do(t, http.MethodGet, "/auth/me", nil, withToken(gone.AccessToken)).expect(t, 401, "unauthorized")
		h.do(t, http.MethodPost, "/auth/refresh", map[string]string{"refresh_token": gone.RefreshToken}).expect(t, 401, "invalid_refresh_token")
	})
}

// TestAccountsHostileInput sends what a careless or malicious client might
// and requires a 4xx problem every time: no input makes a 500.
func TestAccountsHostileInput(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	_, user := h.signUp(t, "user@example.com", password, false)
	admin := h.loginAdmin(t)
	huge := []byte(`{"email":"a@example.com","password":"` + strings.Repeat("x", 1<<20) + `"}`)

	cases := []struct {
		name   string
		method string
		path   string
		body   string
		raw    []byte
		opts   []requestOption
		status int
		code   string
	}{
		{name: "not JSON", method: "POST", path: "/auth/register", body: `email=a@example.com`, status: 400, code: "malformed_json"},
		{name: "truncated JSON", method: "POST", path: "/auth/register", body: `{"email":"a@example.com",`, status: 400, code: "malformed_json"},
		{name: "empty body", method: "POST", path: "/auth/register", body: ``, status: 400, code: "malformed_json"},
		{name: "array", method: "POST", path: "/auth/register", body: `[{"email":"a@example.com"}]`, status: 400, code: "malformed_json"},
		{name: "string", method: "POST", path: "/auth/login", body: `"hello"`, status: 400, code: "malformed_json"},
		{name: "null", method: "POST", path: "/auth/register", body: `null`, status: 422, code: "validation_failed"},
		{name: "two objects", method: "POST", path: "/auth/login", body: `{} {}`, status: 400, code: "malformed_json"},
		{name: "wrong type", method: "POST", path: "/auth/register", body: `{"email":1,"password":"x"}`, status: 400, code: "malformed_json"},
		{name: "owner as string", method: "POST", path: "/auth/register", body: `{"email":"a@example.com","password":"` + password + `","is_owner":"yes"}`, status: 400, code: "malformed_json"},
		{name: "unknown field", method: "POST", path: "/auth/register", body: `{"email":"a@example.com","password":"` + password + `","is_admin":true}`, status: 422, code: "validation_failed"},
		{name: "nested object", method: "POST", path: "/auth/login", body: `{"email":{"$ne":""},"password":"x"}`, status: 400, code: "malformed_json"},
		{name: "huge body", method: "POST", path: "/auth/register", raw: huge, status: 413, code: "body_too_large"},
		{name: "huge body without length", method: "POST", path: "/auth/login", raw: huge, opts: []requestOption{withUnknownLength()}, status: 413, code: "body_too_large"},
		{name: "form content type", method: "POST", path: "/auth/login", body: `{"email":"a@example.com","password":"x"}`, opts: []requestOption{withHeader("Content-Type", "application/x-www-form-urlencoded")}, status: 415, code: "unsupported_media_type"},
		{name: "no content type", method: "POST", path: "/auth/login", body: `{"email":"a@example.com","password":"x"}`, opts: []requestOption{withHeader("Content-Type", "")}, status: 415, code: "unsupported_media_type"},
		{name: "content type in capitals", method: "POST", path: "/auth/login", body: `{"email":"nobody@example.com","password":"x"}`, opts: []requestOption{withHeader("Content-Type", "Application/JSON; Charset=UTF-8")}, status: 401, code: "invalid_credentials"},
		{name: "login with a 73-byte password", method: "POST", path: "/auth/login", body: `{"email":"user@example.com","password":"` + strings.Repeat("p", 73) + `"}`, status: 422, code: "validation_failed"},
		{name: "NUL in email", method: "POST", path: "/auth/register", body: `{"email":"a\u0000b@example.com","password":"` + password + `"}`, status: 422, code: "validation_failed"},
		{name: "NUL in password", method: "POST", path: "/auth/login", body: `{"email":"user@example.com","password":"a\u0000bcdefghijk"}`, status: 401, code: "invalid_credentials"},
		{name: "invalid UTF-8", method: "POST", path: "/auth/register", raw: []byte("{\"email\":\"\xff\xfe@example.com\",\"password\":\"" + password + "\"}"), status: 422, code: "validation_failed"},
		{name: "unicode email", method: "POST", path: "/auth/register", body: `{"email":"Jürgen@Bücher.example","password":"` + password + `"}`, status: 201},
		{name: "unicode email login", method: "POST", path: "/auth/login", body: `{"email":"JÜRGEN@bücher.example","password":"` + password + `"}`, status: 403, code: "email_not_verified"},
		{name: "email of 300 characters", method: "POST", path: "/auth/register", body: `{"email":"` + strings.Repeat("a", 288) + `@example.com","password":"` + password + `"}`, status: 422, code: "validation_failed"},
		{name: "header injection in email", method: "POST", path: "/auth/verify/resend", body: `{"email":"a@example.com\r\nBcc: victim@example.com"}`, status: 422, code: "validation_failed"},
		{name: "token with NUL", method: "GET", path: "/auth/verify?token=%00", status: 400, code: "token_invalid"},
		{name: "token of invalid UTF-8", method: "GET", path: "/auth/verify?token=%ff%fe", status: 400, code: "token_invalid"},
		{name: "token as number", method: "POST", path: "/auth/verify", body: `{"token":12}`, status: 400, code: "malformed_json"},
		{name: "refresh with NUL", method: "POST", path: "/auth/refresh", body: `{"refresh_token":"\u0000"}`, status: 401, code: "invalid_refresh_token"},
		{name: "admin limit not a number", method: "GET", path: "/admin/users?limit=ten", opts: []requestOption{withToken(admin.AccessToken)}, status: 422, code: "validation_failed"},
		{name: "admin limit overflow", method: "GET", path: "/admin/users?limit=99999999999999999999999", opts: []requestOption{withToken(admin.AccessToken)}, status: 422, code: "validation_failed"},
		{name: "admin email filter with NUL", method: "GET", path: "/admin/users?email=%00", opts: []requestOption{withToken(admin.AccessToken)}, status: 422, code: "validation_failed"},
		{name: "admin email filter of invalid UTF-8", method: "GET", path: "/admin/users?email=%ff", opts: []requestOption{withToken(admin.AccessToken)}, status: 422, code: "validation_failed"},
		{name: "admin email filter with wildcards", method: "GET", path: "/admin/users?email=%25_%5C", opts: []requestOption{withToken(admin.AccessToken)}, status: 200},
		{name: "admin id overflow", method: "PATCH", path: "/admin/users/99999999999999999999999", body: `{"is_owner":true}`, opts: []requestOption{withToken(admin.AccessToken)}, status: 404, code: "user_not_found"},
		{name: "admin id negative", method: "PATCH", path: "/admin/users/-1", body: `{"is_owner":true}`, opts: []requestOption{withToken(admin.AccessToken)}, status: 404, code: "user_not_found"},
		{name: "admin patch null flag", method: "PATCH", path: "/admin/users/1", body: `{"is_owner":null}`, opts: []requestOption{withToken(admin.AccessToken)}, status: 422, code: "validation_failed"},
		{name: "admin patch wrong type", method: "PATCH", path: "/admin/users/1", body: `{"is_owner":"true"}`, opts: []requestOption{withToken(admin.AccessToken)}, status: 400, code: "malformed_json"},
		{name: "me with a huge token", method: "GET", path: "/auth/me", opts: []requestOption{withToken(strings.Repeat("a", 100_000))}, status: 401, code: "unauthorized"},
		{name: "me with a user's token", method: "GET", path: "/auth/me", opts: []requestOption{withToken(user.AccessToken)}, status: 200},
		{name: "unknown route", method: "GET", path: "/nope", opts: []requestOption{undocumented()}, status: 404, code: "not_found"},
		{name: "unknown route under auth", method: "POST", path: "/auth/nope", body: `{}`, opts: []requestOption{undocumented()}, status: 404, code: "not_found"},
		{name: "wrong method", method: "DELETE", path: "/auth/login", opts: []requestOption{undocumented()}, status: 405, code: "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				raw = []byte(tc.body)
			}
			res := h.do(t, tc.method, tc.path, nil, append([]requestOption{withRawBody(raw)}, tc.opts...)...)
			if res.Status >= 500 {
				t.Fatalf("status %d: %s", res.Status, res.Body)
			}
			res.expect(t, tc.status, tc.code)
		})
	}
	for _, line := range h.LogLines(t) {
		if line["level"] == "ERROR" {
			t.Errorf("error logged: %v", line)
		}
	}
}

// TestAccountsRequestLogs checks that every log line about a request
// carries its request id, and that secrets never reach the log.
func TestAccountsRequestLogs(t *testing.T) {
	t.Parallel()
	const smtpPassword = "smtp-password-never-logged"
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) {
		c.SMTPUsername = "mailer"
		c.SMTPPassword = "smtp-password-never-logged"
	}})
	h.signUp(t, "user@example.com", password, false)
	res := h.do(t, http.MethodGet, "/health", nil, withHeader("X-Request-ID", "req-from-client"))
	res.expect(t, 200, "")
	if res.Header.Get("X-Request-ID") != "req-from-client" {
		t.Fatalf("X-Request-ID %q, want the client's", res.Header.Get("X-Request-ID"))
	}
	res = h.do(t, http.MethodGet, "/nope", nil, undocumented())
	if res.Header.Get("X-Request-ID") == "" {
		t.Fatal("a 404 carries no X-Request-ID")
	}

	var requests int
	clientID := false
	for _, line := range h.LogLines(t) {
		if line["msg"] != "request" {
			continue
		}
		requests++
		id, _ := line["request_id"].(string)
		if id == "" {
			t.Fatalf("request log line without request_id: %v", line)
		}
		clientID = clientID || id == "req-from-client"
	}
	if requests < 5 || !clientID {
		t.Fatalf("%d request log lines, client's request id logged: %v", requests, clientID)
	}

	logs := h.Logs()
	for _, s := range []string{smtpPassword, adminPassword, password} {
		if strings.Contains(logs, s) {
			t.Fatalf("the log holds the secret %q", s)
		}
	}
	if !strings.Contains(logs, `"SMTPPassword":"********"`) {
		t.Fatalf("the start-up config line does not show the masked SMTP password")
	}
}

func TestAccountsMailFallbacks(t *testing.T) {
	t.Parallel()

	t.Run("log when no SMTP server is configured", func(t *testing.T) {
		t.Parallel()
		h := startControlPlane(t, harnessOptions{NoSMTP: true})
		h.register(t, "local@example.com", password, false)
		var token string
		testenv.Eventually(t, 10*time.Second, func() bool {
			for _, line := range h.LogLines(t) {
				body, _ := line["body"].(string)
				if line["to"] == "local@example.com" && body != "" {
					token = tokenInLink(t, body)
					return true
				}
			}
			return false
		}, "verification link in the log")
		h.do(t, http.MethodGet, "/auth/verify?token="+token, nil).expect(t, 200, "")
		h.login(t, "local@example.com", password)
	})

	t.Run("registration survives a mail server that is down", func(t *testing.T) {
		t.Parallel()
		down := closedPort(t)
		h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.SMTPAddr = down }})
		h.register(t, "unlucky@example.com", password, false)
		testenv.Eventually(t, 30*time.Second, func() bool {
			return strings.Contains(h.Logs(), "verification mail not sent")
		}, "mail failure logged")
		h.do(t, http.MethodPost, "/auth/verify/resend", map[string]string{"email": "unlucky@example.com"}).expect(t, 202, "")
	})
}

// closedPort returns an address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// unverifiedClaims decodes a JWT's payload without checking it, to look at
// what the service put there.
func unverifiedClaims(t testing.TB, token string) map[string]any {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatalf("parse token: %v", err)
	}
	return claims
}

// audIs reports whether a decoded aud claim (a string or an array of
// them) is exactly want.
func audIs(aud any, want string) bool {
	b, _ := json.Marshal(aud)
	return string(b) == `"`+want+`"` || string(b) == `["`+want+`"]`
}
