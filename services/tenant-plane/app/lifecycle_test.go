package app_test

import (
	"net/http"
	"testing"
	"time"

	"tenantbase/libs/testenv"
	ctlapp "tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/tenant-plane/app"
)

func TestTenantStatusAnswers(t *testing.T) {
	// One control plane whose provisioning never finishes, one whose
	// provisioning always times out: real organizations in each state.
	// The stalled job only ends when shutdown gives up waiting for it.
	stalled := cptest.Start(t, cptest.Options{Configure: func(c *ctlapp.Config) {
		c.ProvisionStepDelay = time.Hour
		c.ShutdownTimeout = time.Second
	}})
	failing := cptest.Start(t, cptest.Options{Configure: func(c *ctlapp.Config) {
		c.ProvisionStepDelay = time.Hour
		c.JobTimeout = 200 * time.Millisecond
		c.JobRescueAfter = time.Second
		c.ProvisionMaxAttempts = 1
	}})
	provisioning := stalled.CreateOrganization(t, stalled.SignUpOwner(t, "p@example.com", ownerPassword).AccessToken, "Pending")
	owner := failing.SignUpOwner(t, "f@example.com", ownerPassword)
	failed := failing.CreateOrganization(t, owner.AccessToken, "Broken")
	failing.WaitStatus(t, owner.AccessToken, failed.ID, "failed", time.Minute)

	stalledPlane := startPlane(t, stalled.InternalURL, stalled.NATS.URL(), nil)
	failingPlane := startPlane(t, failing.InternalURL, failing.NATS.URL(), nil)

	cases := []struct {
		name       string
		tp         *plane
		tenant     int64
		status     int
		code       string
		retryAfter bool
	}{
		{"unknown tenant", stalledPlane, provisioning.ID + 1000, http.StatusNotFound, "tenant_not_found", false},
		{"provisioning", stalledPlane, provisioning.ID, http.StatusServiceUnavailable, "tenant_not_ready", true},
		{"failed", failingPlane, failed.ID, http.StatusServiceUnavailable, "tenant_failed", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.tp.call(t, http.MethodPost, "/auth/login", tc.tenant, "",
				map[string]string{"email": "p@example.com", "password": ownerPassword}).ExpectProblem(t, tc.status, tc.code)
			if got := res.Header.Get("Retry-After"); (got != "") != tc.retryAfter {
				t.Errorf("Retry-After = %q, want one: %v", got, tc.retryAfter)
			}
		})
	}
}

func TestSuspensionResumptionAndDeletion(t *testing.T) {
	w := newWorld(t, nil)
	a, b := w.a.ID, w.b.ID
	tok := w.ownerLogin(t, a).AccessToken
	tokB := w.ownerLogin(t, b).AccessToken
	admin := w.cp.LoginAdmin(t)
	profile := func(t *testing.T) *testenv.Response { return w.tp.call(t, http.MethodGet, "/profile", a, tok, nil) }
	profile(t).Expect(t, http.StatusOK)

	// The cache holds A for minutes: only the event can make these quick.
	w.cp.Do(t, http.MethodPost, path("/admin/organizations/%d/suspend", a), admin, nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, time.Second, func() bool { return profile(t).Status == http.StatusForbidden }, "suspension takes effect")
	profile(t).ExpectProblem(t, http.StatusForbidden, "tenant_suspended")
	w.tp.call(t, http.MethodGet, "/profile", b, tokB, nil).Expect(t, http.StatusOK)

	w.cp.Do(t, http.MethodPost, path("/admin/organizations/%d/resume", a), admin, nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, time.Second, func() bool { return profile(t).Status == http.StatusOK }, "resumption takes effect")

	w.cp.Do(t, http.MethodDelete, path("/organizations/%d", a), w.owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	w.cp.WaitStatus(t, w.owner.AccessToken, a, "deleted", time.Minute)
	testenv.Eventually(t, time.Second, func() bool { return profile(t).Status == http.StatusNotFound }, "deletion takes effect")
	profile(t).ExpectProblem(t, http.StatusNotFound, "tenant_not_found")
	w.tp.call(t, http.MethodGet, "/profile", b, tokB, nil).Expect(t, http.StatusOK)
	if n := w.tp.metric(t, "tenant_cache_invalidations_total"); n < 3 {
		t.Errorf("cache invalidations = %v, want at least 3", n)
	}
}

func TestControlPlaneDown(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	known := cp.CreateReadyOrganization(t, owner, "Known")
	unseen := cp.CreateReadyOrganization(t, owner, "Unseen")
	// A short TTL, so that the known tenant's entry expires while the
	// control plane is down and is served stale.
	tp := startPlane(t, cp.InternalURL, cp.NATS.URL(), func(c *app.Config) { c.CacheTTL = 100 * time.Millisecond })
	tok := tp.login(t, known.ID, owner.Email, ownerPassword).AccessToken

	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for i := range 3 {
		tp.call(t, http.MethodGet, "/profile", known.ID, tok, nil).Expect(t, http.StatusOK)
		if i == 0 {
			time.Sleep(150 * time.Millisecond)
		}
	}
	tp.login(t, known.ID, owner.Email, ownerPassword)
	if n := tp.metric(t, `tenant_cache_requests_total{result="stale"}`); n < 1 {
		t.Errorf("stale serves = %v, want at least 1: the entry never expired", n)
	}
	res := tp.call(t, http.MethodPost, "/auth/login", unseen.ID, "",
		map[string]string{"email": owner.Email, "password": ownerPassword}).ExpectProblem(t, http.StatusServiceUnavailable, "tenant_directory_unavailable")
	if res.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

func TestEventsResumeWhenNATSComesBack(t *testing.T) {
	w := newWorld(t, nil)
	a := w.a.ID
	w.cp.NATS.Shutdown()
	tp := startPlane(t, w.cp.InternalURL, w.cp.NATS.URL(), nil)
	tok := tp.login(t, a, w.owner.Email, ownerPassword).AccessToken
	tp.call(t, http.MethodGet, "/profile", a, tok, nil).Expect(t, http.StatusOK)

	w.cp.NATS.Restart()
	w.cp.Do(t, http.MethodPost, path("/admin/organizations/%d/suspend", a), w.cp.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	// Reconnection takes the client's reconnect wait and the control
	// plane's relay retry; the cache TTL (minutes) is far longer.
	testenv.Eventually(t, 20*time.Second, func() bool {
		return tp.call(t, http.MethodGet, "/profile", a, tok, nil).Status == http.StatusForbidden
	}, "suspension arrives once NATS is back")
}

func TestReplicasShareTokens(t *testing.T) {
	w := newWorld(t, nil)
	a := w.a.ID
	keysDir := w.tp.Config.KeysDir
	replica := startPlane(t, w.dir.URL, w.cp.NATS.URL(), func(c *app.Config) { c.KeysDir = keysDir })
	tok := w.ownerLogin(t, a)
	replica.call(t, http.MethodGet, "/profile", a, tok.AccessToken, nil).Expect(t, http.StatusOK)
	var next tokens
	replica.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": tok.RefreshToken}).
		Expect(t, http.StatusOK).Decode(t, &next)
	w.tp.call(t, http.MethodGet, "/profile", a, next.AccessToken, nil).Expect(t, http.StatusOK)

	other := startPlane(t, w.dir.URL, w.cp.NATS.URL(), nil)
	other.call(t, http.MethodGet, "/profile", a, tok.AccessToken, nil).ExpectProblem(t, http.StatusUnauthorized, "unauthorized")
}

// TestOtherDeploymentsEventsIgnored shares one NATS stream between two
// deployments whose tenant ids collide: the other deployment suspending
// its tenant of the same id leaves this plane's cached tenant alone, while
// this deployment's own events still apply.
func TestOtherDeploymentsEventsIgnored(t *testing.T) {
	a := cptest.Start(t, cptest.Options{})
	b := cptest.Start(t, cptest.Options{NATSURL: a.NATS.URL()})
	for _, cp := range []*cptest.ControlPlane{a, b} {
		testenv.Exec(t, cp.DatabaseURL, `SELECT setval('organization_id_seq', 70)`)
	}
	ownerA := a.SignUpOwner(t, "owner@a.example", ownerPassword)
	ownerB := b.SignUpOwner(t, "owner@b.example", ownerPassword)
	same := a.CreateReadyOrganization(t, ownerA, "A1")
	other := a.CreateReadyOrganization(t, ownerA, "A2")
	if theirs := b.CreateReadyOrganization(t, ownerB, "B1"); theirs.ID != same.ID {
		t.Fatalf("ids %d and %d: the test needs colliding ids", same.ID, theirs.ID)
	}
	dir := newDirectory(t, a.InternalURL)
	tp := startPlane(t, dir.URL, a.NATS.URL(), nil)
	tokSame := tp.login(t, same.ID, ownerA.Email, ownerPassword).AccessToken
	tokOther := tp.login(t, other.ID, ownerA.Email, ownerPassword).AccessToken
	tp.call(t, http.MethodGet, "/profile", same.ID, tokSame, nil).Expect(t, http.StatusOK)
	lookups := dir.lookups(same.ID)

	b.Do(t, http.MethodPost, path("/admin/organizations/%d/suspend", same.ID), b.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	// The stream is ordered: once A's later event has applied, B's was seen.
	a.Do(t, http.MethodPost, path("/admin/organizations/%d/suspend", other.ID), a.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, 20*time.Second, func() bool {
		return tp.call(t, http.MethodGet, "/profile", other.ID, tokOther, nil).Status == http.StatusForbidden
	}, "this deployment's suspension applies")
	tp.call(t, http.MethodGet, "/profile", same.ID, tokSame, nil).Expect(t, http.StatusOK)
	if n := dir.lookups(same.ID); n != lookups {
		t.Fatalf("tenant %d looked up %d times after the other deployment's event, want %d (no invalidation)", same.ID, n, lookups)
	}
}
