package accounts

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/page"
	"tenantbase/libs/problem"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
)

const tenantID = 7

type fixture struct {
	svc  *Service
	keys *auth.Keys
	db   *pgxpool.Pool
}

func migrateTenant(dsn string) error {
	_, err := tenantdb.Migrate(dsn)
	return err
}

// setup gives a test its own migrated tenant database and a service on it.
func setup(t *testing.T) fixture {
	t.Helper()
	t.Parallel()
	dsn := testenv.MigratedDatabase(t, "tenant", migrations.Tenant, migrateTenant)
	db, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	pw, err := auth.NewPasswords(bcrypt.MinCost, auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys := newKeys(t)
	svc := New(pw, keys, Options{
		AccessTokenTTL:  time.Minute,
		RefreshTokenTTL: time.Hour,
		Throttle:        auth.Throttle{MaxFailures: 3, Lockout: time.Minute},
	})
	return fixture{svc: svc, keys: keys, db: db}
}

func newKeys(t *testing.T) *auth.Keys {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewKeys("tenant-plane-test", priv)
}

func (f fixture) register(t *testing.T, email string) User {
	t.Helper()
	u, err := f.svc.Register(context.Background(), f.db, email, "correct horse battery")
	if err != nil {
		t.Fatalf("register %s: %v", email, err)
	}
	return u
}

func (f fixture) admin(t *testing.T, email string) User {
	t.Helper()
	u := f.register(t, email)
	if _, err := f.db.Exec(context.Background(), `UPDATE tenantuser SET role = 'admin' WHERE id = $1`, u.ID); err != nil {
		t.Fatal(err)
	}
	u.Role = RoleAdmin
	return u
}

func (f fixture) login(t *testing.T, email, password string) auth.Tokens {
	t.Helper()
	tok, err := f.svc.Login(context.Background(), f.db, tenantID, tenantdb.LastLoginVersion, email, password)
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	return tok
}

func (f fixture) account(t *testing.T, id int64) Account {
	t.Helper()
	a, err := tenantdb.UserByID(context.Background(), f.db, id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// wantProblem fails unless err is answered (through the rules every
// service shares) as a problem with status and, when fields are given,
// names exactly those fields.
func wantProblem(t *testing.T, err error, status int, fields ...string) {
	t.Helper()
	p, ok := problem.Common.Lookup(err)
	if !ok || p.Status != status {
		t.Fatalf("err = %v, want a %d problem", err, status)
	}
	var got []string
	for _, fe := range p.Errors {
		got = append(got, fe.Field)
	}
	if len(fields) > 0 && strings.Join(got, ",") != strings.Join(fields, ",") {
		t.Errorf("fields = %v, want %v", got, fields)
	}
}

func TestRegister(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	u := f.register(t, "  Ada@Example.COM ")
	if u.Email != "ada@example.com" || u.Role != RoleMember || !u.IsActive || u.ID < 1 || u.CreatedAt.IsZero() {
		t.Fatalf("registered user = %+v", u)
	}

	cases := []struct {
		name     string
		email    string
		password string
		wantErr  error
		status   int
		fields   []string
	}{
		{"same email in other case", "ADA@example.com", "another good password", ErrEmailTaken, 0, nil},
		{"malformed email", "ada-at-example", "correct horse battery", nil, 422, []string{"email"}},
		{"short password", "bob@example.com", "short", nil, 422, []string{"password"}},
		{"password over 72 bytes", "bob@example.com", strings.Repeat("p", 73), nil, 422, []string{"password"}},
		{"both wrong", "", "", nil, 422, []string{"email", "password"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Register(ctx, f.db, tc.email, tc.password)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			wantProblem(t, err, tc.status, tc.fields...)
		})
	}
	var n int
	if err := f.db.QueryRow(ctx, `SELECT count(*) FROM tenantuser`).Scan(&n); err != nil || n != 1 {
		t.Errorf("users stored = %d (%v), want only the first", n, err)
	}
}

func TestLogin(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.register(t, "ada@example.com")
	inactive := f.register(t, "ina@example.com")
	if _, err := f.db.Exec(ctx, `UPDATE tenantuser SET is_active = false WHERE id = $1`, inactive.ID); err != nil {
		t.Fatal(err)
	}

	tok := f.login(t, "ADA@example.com", "correct horse battery")
	if tok.TokenType != "bearer" || tok.ExpiresIn != 60 || tok.RefreshToken == "" {
		t.Fatalf("tokens = %+v", tok)
	}
	var claims Claims
	if err := f.keys.Parse(tok.AccessToken, auth.TenantAudience(tenantID), &claims); err != nil {
		t.Fatal(err)
	}
	if claims.TenantID != tenantID || claims.Role != RoleMember || claims.Subject == "" || claims.ExpiresAt == nil {
		t.Errorf("claims = %+v", claims)
	}

	cases := []struct {
		name, email, password string
		wantErr               error
		status                int
	}{
		{"wrong password", "ada@example.com", "wrong password!", auth.ErrInvalidCredentials, 0},
		{"unknown email", "bob@example.com", "correct horse battery", auth.ErrInvalidCredentials, 0},
		{"inactive user, right password", "ina@example.com", "correct horse battery", ErrUserInactive, 0},
		{"inactive user, wrong password", "ina@example.com", "wrong password!", auth.ErrInvalidCredentials, 0},
		{"missing password", "ada@example.com", "", nil, 422},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Login(ctx, f.db, tenantID, tenantdb.LastLoginVersion, tc.email, tc.password)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			wantProblem(t, err, tc.status, "password")
		})
	}
}

func TestLoginIsThrottledPerAccount(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.register(t, "ada@example.com")
	f.register(t, "bob@example.com")
	for range 3 {
		if _, err := f.svc.Login(ctx, f.db, tenantID, tenantdb.LastLoginVersion, "ada@example.com", "wrong password!"); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Fatal(err)
		}
	}
	_, err := f.svc.Login(ctx, f.db, tenantID, tenantdb.LastLoginVersion, "ada@example.com", "correct horse battery")
	wantProblem(t, err, http.StatusTooManyRequests)
	p, _ := problem.Common.Lookup(err)
	if p.RetryAfter < 1 {
		t.Errorf("Retry-After = %d, want at least 1", p.RetryAfter)
	}
	f.login(t, "bob@example.com", "correct horse battery")
}

// TestParallelGuessesAreBounded sends 20 wrong passwords at once against a
// limit of 3: the count and the lock are one statement, so exactly 3
// guesses get a password comparison and the rest are refused as locked.
func TestParallelGuessesAreBounded(t *testing.T) {
	f := setup(t)
	f.register(t, "ada@example.com")
	const guesses = 20
	errs := make([]error, guesses)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = f.svc.Login(context.Background(), f.db, tenantID, tenantdb.LastLoginVersion, "ada@example.com", "wrong password!")
		})
	}
	wg.Wait()
	var compared, locked int
	for _, err := range errs {
		switch {
		case errors.Is(err, auth.ErrInvalidCredentials):
			compared++
		case apperr.IsLocked(err):
			locked++
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if compared != 3 || locked != guesses-3 {
		t.Fatalf("%d guesses compared, %d refused as locked; want 3 and %d", compared, locked, guesses-3)
	}
	if _, err := f.svc.Login(context.Background(), f.db, tenantID, tenantdb.LastLoginVersion, "ada@example.com", "correct horse battery"); !apperr.IsLocked(err) {
		t.Fatalf("the right password during the lock: %v, want locked", err)
	}
}

func TestAuthenticate(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ada := f.register(t, "ada@example.com")
	valid := f.login(t, "ada@example.com", "correct horse battery").AccessToken

	sign := func(keys *auth.Keys, aud string, tid int64, sub string, tv int, ttl time.Duration) string {
		t.Helper()
		tok, err := keys.Sign(Claims{
			TenantClaims: auth.TenantClaims{RegisteredClaims: keys.Registered(sub, aud, ttl), TenantID: tid, Role: RoleAdmin},
			TokenVersion: tv,
		})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	sub := strconv.FormatInt(ada.ID, 10)
	otherKeys := newKeys(t)
	coreToken, err := f.keys.Sign(auth.CoreClaims{RegisteredClaims: f.keys.Registered(sub, auth.CoreAudience, time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	tampered := strings.Split(valid, ".")
	tampered[1] = strings.TrimRight(tampered[1], "A") + "B"

	cases := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", valid, true},
		{"another tenant's audience", sign(f.keys, auth.TenantAudience(8), 8, sub, 0, time.Minute), false},
		{"tid differs from the audience", sign(f.keys, auth.TenantAudience(tenantID), 8, sub, 0, time.Minute), false},
		{"signed by another key", sign(otherKeys, auth.TenantAudience(tenantID), tenantID, sub, 0, time.Minute), false},
		{"expired", sign(f.keys, auth.TenantAudience(tenantID), tenantID, sub, 0, -time.Minute), false},
		{"old token version", sign(f.keys, auth.TenantAudience(tenantID), tenantID, sub, -1, time.Minute), false},
		{"unknown user", sign(f.keys, auth.TenantAudience(tenantID), tenantID, "999999", 0, time.Minute), false},
		{"subject not a user id", sign(f.keys, auth.TenantAudience(tenantID), tenantID, "ada", 0, time.Minute), false},
		{"core audience", coreToken, false},
		{"payload edited", strings.Join(tampered, "."), false},
		{"garbage", "not.a.jwt", false},
	}
	// The valid token, verified for this tenant, must not pass for another.
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID, valid); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID+1, valid); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a token verified for tenant %d passed for tenant %d: err = %v", tenantID, tenantID+1, err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := f.svc.Authenticate(ctx, f.db, tenantID, tc.token)
			if tc.ok {
				if err != nil || a.ID != ada.ID {
					t.Fatalf("Authenticate = %+v, %v", a, err)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("err = %v, want ErrUnauthenticated", err)
			}
		})
	}
}

func TestRefreshRotationAndLogout(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	f.register(t, "ada@example.com")
	first := f.login(t, "ada@example.com", "correct horse battery")

	second, err := f.svc.Refresh(ctx, f.db, tenantID, first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if second.RefreshToken == first.RefreshToken || second.AccessToken == "" {
		t.Fatalf("refresh did not rotate: %+v", second)
	}
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID, second.AccessToken); err != nil {
		t.Fatalf("refreshed access token: %v", err)
	}
	// Reusing the rotated token revokes the family, the newest token too.
	if _, err := f.svc.Refresh(ctx, f.db, tenantID, first.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("reuse: err = %v", err)
	}
	if _, err := f.svc.Refresh(ctx, f.db, tenantID, second.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("after reuse detection: err = %v", err)
	}

	session := f.login(t, "ada@example.com", "correct horse battery")
	if err := f.svc.Logout(ctx, f.db, session.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Refresh(ctx, f.db, tenantID, session.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("after logout: err = %v", err)
	}
	if err := f.svc.Logout(ctx, f.db, "unknown-token"); err != nil {
		t.Errorf("logout with an unknown token: %v", err)
	}
	_, err = f.svc.Refresh(ctx, f.db, tenantID, "")
	wantProblem(t, err, 422, "refresh_token")
}

func TestChangePassword(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ada := f.register(t, "ada@example.com")
	old := f.login(t, "ada@example.com", "correct horse battery")
	other := f.login(t, "ada@example.com", "correct horse battery")
	// Verified once, so that Keys remembers it.
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID, old.AccessToken); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, current, next string
		wantErr             error
		status              int
		fields              []string
	}{
		{"wrong current password", "wrong password!", "a new good password", ErrWrongPassword, 0, nil},
		{"new password too short", "correct horse battery", "short", nil, 422, []string{"new_password"}},
		{"same password", "correct horse battery", "correct horse battery", nil, 422, []string{"new_password"}},
		{"current missing", "", "a new good password", nil, 422, []string{"current_password"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.ChangePassword(ctx, f.db, tenantID, f.account(t, ada.ID), tc.current, tc.next)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			wantProblem(t, err, tc.status, tc.fields...)
		})
	}

	fresh, err := f.svc.ChangePassword(ctx, f.db, tenantID, f.account(t, ada.ID), "correct horse battery", "a new good password")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID, old.AccessToken); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("access token from before the change: err = %v", err)
	}
	if _, err := f.svc.Refresh(ctx, f.db, tenantID, other.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Errorf("other session's refresh token: err = %v", err)
	}
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID, fresh.AccessToken); err != nil {
		t.Errorf("access token returned by the change: %v", err)
	}
	if _, err := f.svc.Refresh(ctx, f.db, tenantID, fresh.RefreshToken); err != nil {
		t.Errorf("refresh token returned by the change: %v", err)
	}
	if _, err := f.svc.Login(ctx, f.db, tenantID, tenantdb.LastLoginVersion, "ada@example.com", "correct horse battery"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Errorf("login with the old password: err = %v", err)
	}
	f.login(t, "ada@example.com", "a new good password")
}

func str(s string) *string { return &s }

func TestUpdateProfile(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	ada := f.register(t, "ada@example.com")
	set := func(v string) Optional { return Optional{Set: true, Value: str(v)} }
	null := Optional{Set: true}

	p, err := f.svc.UpdateProfile(ctx, f.db, ada.ID, ProfilePatch{
		DisplayName: set("  Ada Lovelace "), Bio: set("Analyst.\nEngine enthusiast."), AvatarURL: set("https://example.com/a.png"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if *p.DisplayName != "Ada Lovelace" || *p.Bio != "Analyst.\nEngine enthusiast." || *p.AvatarURL != "https://example.com/a.png" {
		t.Fatalf("profile = %+v", p)
	}
	p, err = f.svc.UpdateProfile(ctx, f.db, ada.ID, ProfilePatch{Bio: null, AvatarURL: set("  ")})
	if err != nil {
		t.Fatal(err)
	}
	if p.DisplayName == nil || *p.DisplayName != "Ada Lovelace" || p.Bio != nil || p.AvatarURL != nil {
		t.Fatalf("after clearing bio and avatar: %+v", p)
	}

	cases := []struct {
		name   string
		patch  ProfilePatch
		fields []string
	}{
		{"nothing to change", ProfilePatch{}, []string{"body"}},
		{"display name too long", ProfilePatch{DisplayName: set(strings.Repeat("é", MaxDisplayName+1))}, []string{"display_name"}},
		{"display name with a newline", ProfilePatch{DisplayName: set("Ada\nLovelace")}, []string{"display_name"}},
		{"bio too long", ProfilePatch{Bio: set(strings.Repeat("b", MaxBio+1))}, []string{"bio"}},
		{"avatar not a URL", ProfilePatch{AvatarURL: set("not a url")}, []string{"avatar_url"}},
		{"avatar with another scheme", ProfilePatch{AvatarURL: set("javascript:alert(1)")}, []string{"avatar_url"}},
		{"avatar with credentials", ProfilePatch{AvatarURL: set("https://user:pw@example.com/a.png")}, []string{"avatar_url"}},
		{"two fields wrong", ProfilePatch{Bio: set(strings.Repeat("b", MaxBio+1)), AvatarURL: set("ftp://x")}, []string{"bio", "avatar_url"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.UpdateProfile(ctx, f.db, ada.ID, tc.patch)
			wantProblem(t, err, 422, tc.fields...)
		})
	}
	if got := f.account(t, ada.ID); got.DisplayName == nil || *got.DisplayName != "Ada Lovelace" {
		t.Errorf("a refused patch changed the profile: %+v", got)
	}
}

func TestListUsers(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	for i := range 5 {
		f.register(t, "user"+strconv.Itoa(i)+"@example.com")
	}
	f.register(t, "Other@Example.org")

	var seen []string
	q := UserQuery{Request: page.Request{Limit: 2}}
	for pages := 0; ; pages++ {
		page, err := f.svc.ListUsers(ctx, f.db, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range page.Items {
			seen = append(seen, u.Email)
		}
		if page.NextCursor == nil {
			if pages != 2 {
				t.Errorf("pages = %d, want 3", pages+1)
			}
			break
		}
		q.Cursor, _ = strconv.ParseInt(*page.NextCursor, 10, 64)
	}
	if len(seen) != 6 || seen[0] != "user0@example.com" || seen[5] != "other@example.org" {
		t.Errorf("listed %v", seen)
	}

	cases := []struct {
		name   string
		q      UserQuery
		want   int
		fields []string
	}{
		{"filter is case-insensitive", UserQuery{EmailContains: "EXAMPLE.ORG"}, 1, nil},
		{"filter matches substrings", UserQuery{EmailContains: "user"}, 5, nil},
		{"filter with LIKE wildcards is literal", UserQuery{EmailContains: "%"}, 0, nil},
		{"limit too large", UserQuery{Request: page.Request{Limit: page.MaxLimit + 1}}, 0, []string{"limit"}},
		{"negative cursor", UserQuery{Request: page.Request{Cursor: -1}}, 0, []string{"cursor"}},
		{"filter too long", UserQuery{EmailContains: strings.Repeat("a", 256)}, 0, []string{"email"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			page, err := f.svc.ListUsers(ctx, f.db, tc.q)
			if tc.fields != nil {
				wantProblem(t, err, 422, tc.fields...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Items) != tc.want {
				t.Errorf("items = %d, want %d", len(page.Items), tc.want)
			}
		})
	}
}

func bptr(b bool) *bool { return &b }

func TestUpdateUser(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	root := f.admin(t, "root@example.com")
	bob := f.register(t, "bob@example.com")
	bobSession := f.login(t, "bob@example.com", "correct horse battery")
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID, bobSession.AccessToken); err != nil {
		t.Fatal(err)
	}

	u, err := f.svc.UpdateUser(ctx, f.db, bob.ID, UserPatch{IsActive: bptr(false)})
	if err != nil {
		t.Fatal(err)
	}
	if u.IsActive {
		t.Fatalf("user still active: %+v", u)
	}
	if _, err := f.svc.Authenticate(ctx, f.db, tenantID, bobSession.AccessToken); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("deactivated user's access token: err = %v", err)
	}
	if _, err := f.svc.Refresh(ctx, f.db, tenantID, bobSession.RefreshToken); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Errorf("deactivated user's refresh token: err = %v", err)
	}
	if _, err := f.svc.UpdateUser(ctx, f.db, bob.ID, UserPatch{IsActive: bptr(true), Role: str(RoleAdmin)}); err != nil {
		t.Fatal(err)
	}
	f.login(t, "bob@example.com", "correct horse battery")

	cases := []struct {
		name    string
		id      int64
		patch   UserPatch
		wantErr error
		fields  []string
	}{
		{"unknown user", 999999, UserPatch{Role: str(RoleMember)}, ErrUserNotFound, nil},
		{"unknown role", bob.ID, UserPatch{Role: str("owner")}, nil, []string{"role"}},
		{"empty patch", bob.ID, UserPatch{}, nil, []string{"body"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.UpdateUser(ctx, f.db, tc.id, tc.patch)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			wantProblem(t, err, 422, tc.fields...)
		})
	}

	// Two admins: one may go, the last may not.
	if _, err := f.svc.UpdateUser(ctx, f.db, bob.ID, UserPatch{Role: str(RoleMember)}); err != nil {
		t.Fatalf("demote one of two admins: %v", err)
	}
	for name, patch := range map[string]UserPatch{
		"demote the last admin":     {Role: str(RoleMember)},
		"deactivate the last admin": {IsActive: bptr(false)},
	} {
		if _, err := f.svc.UpdateUser(ctx, f.db, root.ID, patch); !errors.Is(err, ErrLastAdmin) {
			t.Errorf("%s: err = %v, want ErrLastAdmin", name, err)
		}
	}
	if a := f.account(t, root.ID); a.Role != RoleAdmin || !a.IsActive {
		t.Errorf("last admin changed: %+v", a)
	}
}

func TestConcurrentDemotionsKeepOneAdmin(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	a := f.admin(t, "a@example.com")
	b := f.admin(t, "b@example.com")

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, id := range []int64{a.ID, b.ID} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.svc.UpdateUser(ctx, f.db, id, UserPatch{Role: str(RoleMember)})
		}()
	}
	wg.Wait()
	var refused int
	for _, err := range errs {
		switch {
		case errors.Is(err, ErrLastAdmin):
			refused++
		case err != nil:
			t.Fatal(err)
		}
	}
	var admins int
	if err := f.db.QueryRow(ctx, `SELECT count(*) FROM tenantuser WHERE role = 'admin' AND is_active`).Scan(&admins); err != nil {
		t.Fatal(err)
	}
	if refused != 1 || admins != 1 {
		t.Errorf("refused = %d, admins left = %d; want 1 and 1", refused, admins)
	}
}
