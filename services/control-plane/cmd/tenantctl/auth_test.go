package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// sessionOf reads the session file as tenantctl wrote it.
type sessionFile struct {
	Current  string `json:"current"`
	Sessions map[string]struct {
		Email        string    `json:"email"`
		AccessToken  string    `json:"access_token"`
		RefreshToken string    `json:"refresh_token"`
		ExpiresAt    time.Time `json:"expires_at"`
	} `json:"sessions"`
}

func readSession(t *testing.T, c *cli) sessionFile {
	t.Helper()
	b, err := os.ReadFile(c.sessionFile())
	if err != nil {
		t.Fatal(err)
	}
	var f sessionFile
	decode(t, string(b), &f)
	return f
}

// setExpiry rewrites the expiry tenantctl recorded for its session.
func setExpiry(t *testing.T, c *cli, at time.Time) {
	t.Helper()
	b, err := os.ReadFile(c.sessionFile())
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for _, s := range f["sessions"].(map[string]any) {
		s.(map[string]any)["expires_at"] = at.Format(time.RFC3339Nano)
	}
	b, _ = json.Marshal(f)
	if err := os.WriteFile(c.sessionFile(), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoginWhoamiLogout(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{})
	c := newCLI(t, cp.PublicURL)

	r := c.run(t, "not the password\n", "login", "--email", cptest.AdminEmail, "--password-stdin")
	expectProblem(t, r, 4, "invalid_credentials")
	if _, err := os.Stat(c.sessionFile()); err == nil {
		t.Fatal("a failed login left a session file")
	}

	var me user
	r = c.run(t, cptest.AdminPassword+"\n", "login", "--email", cptest.AdminEmail, "--password-stdin", "-o", "json")
	if r.code != 0 {
		t.Fatalf("login: %s", r)
	}
	decode(t, r.stdout, &me)
	if me.Email != cptest.AdminEmail || !me.IsAdmin {
		t.Fatalf("login printed %+v, want the admin", me)
	}

	// The tokens are the caller's alone: mode 0600 in a 0700 directory,
	// and never the password.
	info, err := os.Stat(c.sessionFile())
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("session file mode %v, want 0600", info.Mode().Perm())
	}
	if dir, _ := os.Stat(filepath.Dir(c.sessionFile())); dir.Mode().Perm() != 0o700 {
		t.Fatalf("session directory mode %v, want 0700", dir.Mode().Perm())
	}
	raw, _ := os.ReadFile(c.sessionFile())
	if strings.Contains(string(raw), cptest.AdminPassword) {
		t.Fatal("the session file holds the password")
	}
	f := readSession(t, c)
	if f.Current != cp.PublicURL || f.Sessions[cp.PublicURL].RefreshToken == "" || f.Sessions[cp.PublicURL].AccessToken == "" {
		t.Fatalf("session file %+v, want tokens for %s", f, cp.PublicURL)
	}

	var again user
	c.json(t, &again, "whoami")
	if again != me {
		t.Fatalf("whoami: %+v, want %+v", again, me)
	}
	if r := c.expect(t, 0, "whoami", "-o", "table"); !strings.Contains(r.stdout, "email") || !strings.Contains(r.stdout, cptest.AdminEmail) {
		t.Fatalf("whoami as a table: %s", r)
	}

	// The URL of the last login is the default of later commands.
	noURL := newCLI(t, "", "XDG_CONFIG_HOME="+filepath.Join(c.home, "config"))
	noURL.json(t, &again, "whoami")

	// A session is only sent to the control plane that issued it.
	other := cptest.Start(t, cptest.Options{})
	r = c.expect(t, 4, "whoami", "--url", other.PublicURL)
	expectProblem(t, r, 4, "not_logged_in")

	// Logging in again ends the session it replaces.
	first := f.Sessions[cp.PublicURL].RefreshToken
	c.loginAdmin(t)
	cp.Do(t, http.MethodPost, "/auth/refresh", "", map[string]string{"refresh_token": first}).Expect(t, http.StatusUnauthorized)

	refresh := readSession(t, c).Sessions[cp.PublicURL].RefreshToken
	r = c.expect(t, 0, "logout")
	if !strings.Contains(r.stderr, "Logged out of "+cp.PublicURL) {
		t.Fatalf("logout: %s", r)
	}
	if _, err := os.Stat(c.sessionFile()); !os.IsNotExist(err) {
		t.Fatalf("logout left the session file: %v", err)
	}
	// The session ended on the control plane too.
	cp.Do(t, http.MethodPost, "/auth/refresh", "", map[string]string{"refresh_token": refresh}).Expect(t, http.StatusUnauthorized)
	expectProblem(t, c.expect(t, 4, "whoami"), 4, "not_logged_in")
	if r := c.expect(t, 0, "logout"); !strings.Contains(r.stderr, "Not logged in") {
		t.Fatalf("logout twice: %s", r)
	}
}

// TestRefresh: an access token that ran out is refreshed with the refresh
// token, whether tenantctl sees it expire or the control plane refuses it;
// processes refreshing at once share one refresh; an ended session is
// forgotten.
func TestRefresh(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{Configure: func(c *app.Config) { c.AccessTokenTTL = time.Second }})
	c := newCLI(t, cp.PublicURL)
	c.loginAdmin(t)
	var me user

	// Expired as tenantctl sees it: refreshed before the call.
	before := readSession(t, c).Sessions[cp.PublicURL]
	setExpiry(t, c, time.Now().Add(-time.Minute))
	c.json(t, &me, "whoami")
	after := readSession(t, c).Sessions[cp.PublicURL]
	if after.AccessToken == before.AccessToken || after.RefreshToken == before.RefreshToken || !after.ExpiresAt.After(time.Now().Add(-time.Minute)) {
		t.Fatal("whoami with an expired token did not refresh the session")
	}
	if info, _ := os.Stat(c.sessionFile()); info.Mode().Perm() != 0o600 {
		t.Fatalf("session file mode %v after a refresh, want 0600", info.Mode().Perm())
	}

	// Several commands at once with an expired token: a refresh token
	// works once and a reused one ends the session, so they must share one
	// refresh.
	setExpiry(t, c, time.Now().Add(-time.Minute))
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		wg.Go(func() { results[i] = c.run(t, "", "whoami", "-o", "json") })
	}
	wg.Wait()
	for _, r := range results {
		if r.code != 0 {
			t.Fatalf("a concurrent whoami failed: %s", r)
		}
	}
	c.json(t, &me, "whoami")

	// Expired as the control plane sees it, while tenantctl believes it
	// valid: the 401 leads to a refresh and the call is repeated.
	setExpiry(t, c, time.Now().Add(time.Hour))
	stale := readSession(t, c).Sessions[cp.PublicURL].AccessToken
	testenv.Eventually(t, 30*time.Second, func() bool {
		return cp.Do(t, http.MethodGet, "/auth/me", stale, nil).Status == http.StatusUnauthorized
	}, "the access token refused by the control plane")
	c.json(t, &me, "whoami")
	if readSession(t, c).Sessions[cp.PublicURL].AccessToken == stale {
		t.Fatal("the refused token was kept")
	}

	// A session ended elsewhere (logged out, revoked): exit 4, forgotten.
	refresh := readSession(t, c).Sessions[cp.PublicURL].RefreshToken
	cp.Do(t, http.MethodPost, "/auth/logout", "", map[string]string{"refresh_token": refresh}).Expect(t, http.StatusNoContent)
	setExpiry(t, c, time.Now().Add(-time.Minute))
	r := c.expect(t, 4, "whoami")
	if !strings.Contains(r.stderr, "has ended; run tenantctl login") {
		t.Fatalf("ended session: %s", r)
	}
	if _, err := os.Stat(c.sessionFile()); !os.IsNotExist(err) {
		t.Fatalf("the ended session was kept: %v", err)
	}
}
