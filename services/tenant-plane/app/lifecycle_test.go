package app_test

import (
	"net/http"
	"testing"
	"time"

	"tenantbase/libs/events"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/tenantapi/tenantapitest"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/tenant-plane/app"
)

// TestTenantStatusAnswers serves a tenant in every status the directory
// can answer, and an unknown one, and checks what a user is told; the
// answers that are not for a ready tenant are remembered briefly, until an
// event says they changed.
func TestTenantStatusAnswers(t *testing.T) {
	t.Parallel()
	nats := testenv.NATS(t)
	dir := tenantapitest.NewDirectory(t)
	pub := tenantapitest.NewPublisher(t, nats.URL(), events.DefaultChannel)
	const unknown = 99
	ids := map[tenantapi.Status]int64{}
	for i, s := range []tenantapi.Status{tenantapi.StatusProvisioning, tenantapi.StatusFailed,
		tenantapi.StatusSuspended, tenantapi.StatusDeleting, tenantapi.StatusDeleted} {
		ids[s] = int64(i + 1)
		dir.Put(tenantapi.Tenant{ID: ids[s], Status: s})
	}
	// Non-ready answers are remembered for NegativeCacheTTL: long enough
	// here that only the event can end one.
	tp := startPlane(t, dir.URL, nats.URL(), func(c *app.Config) { c.NegativeCacheTTL = 10 * time.Minute })

	cases := []struct {
		name       string
		tenant     int64
		status     int
		code       string
		retryAfter bool
	}{
		{"unknown tenant", unknown, http.StatusNotFound, "tenant_not_found", false},
		{"provisioning", ids[tenantapi.StatusProvisioning], http.StatusServiceUnavailable, "tenant_not_ready", true},
		{"failed", ids[tenantapi.StatusFailed], http.StatusServiceUnavailable, "tenant_failed", false},
		{"suspended", ids[tenantapi.StatusSuspended], http.StatusForbidden, "tenant_suspended", false},
		{"deleting", ids[tenantapi.StatusDeleting], http.StatusNotFound, "tenant_not_found", false},
		{"deleted", ids[tenantapi.StatusDeleted], http.StatusNotFound, "tenant_not_found", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 2 {
				res := tp.call(t, http.MethodPost, "/auth/login", tc.tenant, "",
					map[string]string{"email": ownerEmail, "password": ownerPassword}).ExpectProblem(t, tc.status, tc.code)
				if got := res.Header.Get("Retry-After"); (got != "") != tc.retryAfter {
					t.Errorf("Retry-After = %q, want one: %v", got, tc.retryAfter)
				}
				// The second answer comes from the negative cache.
				if n := dir.Lookups(tc.tenant); n != 1 {
					t.Fatalf("round %d: the directory saw %d lookups of tenant %d, want 1", round+1, n, tc.tenant)
				}
			}
		})
	}

	t.Run("provisioning finishes", func(t *testing.T) {
		id := ids[tenantapi.StatusProvisioning]
		db := tenantdbtest.New(t)
		tenantdbtest.AddUser(t, db, ownerEmail, ownerPassword, tenantdb.RoleAdmin)
		dir.Put(readyTenant(t, id, db))
		pub.Publish(t, dir.Event(events.TenantCreated, id))
		testenv.Eventually(t, eventDeadline, func() bool {
			return tp.call(t, http.MethodPost, "/auth/login", id, "",
				map[string]string{"email": ownerEmail, "password": ownerPassword}).Status == http.StatusOK
		}, "tenant.created makes the tenant usable")
	})
}

func TestSuspensionResumptionAndDeletion(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	a, b := w.a.ID, w.b.ID
	tok := w.ownerLogin(t, a).AccessToken
	tokB := w.ownerLogin(t, b).AccessToken
	profile := func(t *testing.T) *testenv.Response { return w.tp.call(t, http.MethodGet, "/profile", a, tok, nil) }
	profile(t).Expect(t, http.StatusOK)

	// The cache holds A for minutes: only the event can make these quick.
	w.setStatus(t, a, tenantapi.StatusSuspended, events.TenantSuspended)
	testenv.Eventually(t, eventDeadline, func() bool { return profile(t).Status == http.StatusForbidden }, "suspension takes effect")
	profile(t).ExpectProblem(t, http.StatusForbidden, "tenant_suspended")
	w.tp.call(t, http.MethodGet, "/profile", b, tokB, nil).Expect(t, http.StatusOK)
	if n := w.tp.metric(t, `tenant_pools_retired_total{reason="event"}`); n < 1 {
		t.Errorf("pools retired on events = %v, want the suspended tenant's", n)
	}

	w.setStatus(t, a, tenantapi.StatusReady, events.TenantResumed)
	testenv.Eventually(t, eventDeadline, func() bool { return profile(t).Status == http.StatusOK }, "resumption takes effect")

	w.setStatus(t, a, tenantapi.StatusDeleted, events.TenantDeleted)
	testenv.Eventually(t, eventDeadline, func() bool { return profile(t).Status == http.StatusNotFound }, "deletion takes effect")
	profile(t).ExpectProblem(t, http.StatusNotFound, "tenant_not_found")
	w.tp.call(t, http.MethodGet, "/profile", b, tokB, nil).Expect(t, http.StatusOK)
	if n := w.tp.metric(t, "tenant_cache_invalidations_total"); n < 3 {
		t.Errorf("cache invalidations = %v, want at least 3", n)
	}
}

// TestControlPlaneDown takes the directory down: a tenant resolved before
// keeps answering, served stale once its entry expired, and a tenant never
// seen gets 503 until the directory is back.
func TestControlPlaneDown(t *testing.T) {
	t.Parallel()
	// A short TTL, so that the known tenant's entry expires while the
	// directory is down and is served stale.
	w := newWorld(t, func(c *app.Config) { c.CacheTTL = 100 * time.Millisecond })
	known, unseen := w.a.ID, w.b.ID
	tok := w.ownerLogin(t, known).AccessToken

	w.dir.Down()
	testenv.Eventually(t, 30*time.Second, func() bool {
		w.tp.call(t, http.MethodGet, "/profile", known, tok, nil).Expect(t, http.StatusOK)
		return w.tp.metric(t, `tenant_cache_requests_total{result="stale"}`) >= 1
	}, "the known tenant's expired entry is served stale")
	for range 3 {
		w.tp.call(t, http.MethodGet, "/profile", known, tok, nil).Expect(t, http.StatusOK)
	}
	w.ownerLogin(t, known)
	res := w.tp.call(t, http.MethodPost, "/auth/login", unseen, "",
		map[string]string{"email": ownerEmail, "password": ownerPassword}).ExpectProblem(t, http.StatusServiceUnavailable, "tenant_directory_unavailable")
	if res.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	// A failed lookup is not remembered: once the directory answers, so
	// does the plane.
	w.dir.Up()
	w.ownerLogin(t, unseen)
}

func TestEventsResumeWhenNATSComesBack(t *testing.T) {
	t.Parallel()
	w := newTenants(t)
	a := w.a.ID
	w.nats.Shutdown()
	tp := startPlane(t, w.dir.URL, w.nats.URL(), nil)
	tok := tp.login(t, a, ownerEmail, ownerPassword).AccessToken
	tp.call(t, http.MethodGet, "/profile", a, tok, nil).Expect(t, http.StatusOK)

	w.nats.Restart()
	w.setStatus(t, a, tenantapi.StatusSuspended, events.TenantSuspended)
	// Reconnection takes the client's reconnect wait and the follower's
	// retry; the cache TTL (minutes) is far longer.
	testenv.Eventually(t, 30*time.Second, func() bool {
		return tp.call(t, http.MethodGet, "/profile", a, tok, nil).Status == http.StatusForbidden
	}, "suspension arrives once NATS is back")
}

func TestReplicasShareTokens(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	a := w.a.ID
	keysDir := w.tp.Config.KeysDir
	replica := startPlane(t, w.dir.URL, w.nats.URL(), func(c *app.Config) { c.KeysDir = keysDir })
	tok := w.ownerLogin(t, a)
	replica.call(t, http.MethodGet, "/profile", a, tok.AccessToken, nil).Expect(t, http.StatusOK)
	var next tokens
	replica.call(t, http.MethodPost, "/auth/refresh", a, "", map[string]string{"refresh_token": tok.RefreshToken}).
		Expect(t, http.StatusOK).Decode(t, &next)
	w.tp.call(t, http.MethodGet, "/profile", a, next.AccessToken, nil).Expect(t, http.StatusOK)

	other := startPlane(t, w.dir.URL, w.nats.URL(), nil)
	other.call(t, http.MethodGet, "/profile", a, tok.AccessToken, nil).ExpectProblem(t, http.StatusUnauthorized, "unauthorized")
}

// TestOtherDeploymentsEventsIgnored publishes, on the stream this plane
// follows, another deployment's suspension of a tenant whose id collides
// with one of this deployment's: the plane's cached tenant is left alone,
// while this deployment's own events still apply. Two real control planes
// sharing NATS do the same in deploy/ (TestOtherDeploymentSharingNATS).
func TestOtherDeploymentsEventsIgnored(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	same, other := w.a.ID, w.b.ID
	tokSame := w.ownerLogin(t, same).AccessToken
	tokOther := w.ownerLogin(t, other).AccessToken
	w.tp.call(t, http.MethodGet, "/profile", same, tokSame, nil).Expect(t, http.StatusOK)
	lookups := w.dir.Lookups(same)
	invalidations := w.tp.metric(t, "tenant_cache_invalidations_total")

	foreign := events.New(events.TenantSuspended, "another-"+w.dir.Deployment,
		events.TenantData{TenantID: same, Status: string(tenantapi.StatusSuspended)})
	w.events.Publish(t, foreign)
	// The stream is ordered: once this deployment's later event has
	// applied, the other one was seen.
	w.setStatus(t, other, tenantapi.StatusSuspended, events.TenantSuspended)
	testenv.Eventually(t, eventDeadline, func() bool {
		return w.tp.call(t, http.MethodGet, "/profile", other, tokOther, nil).Status == http.StatusForbidden
	}, "this deployment's suspension applies")
	w.tp.call(t, http.MethodGet, "/profile", same, tokSame, nil).Expect(t, http.StatusOK)
	if n := w.dir.Lookups(same); n != lookups {
		t.Fatalf("tenant %d looked up %d times after the other deployment's event, want %d (no invalidation)", same, n, lookups)
	}
	if n := w.tp.metric(t, "tenant_cache_invalidations_total"); n != invalidations+1 {
		t.Fatalf("cache invalidations %v -> %v, want one more: this deployment's event alone", invalidations, n)
	}
}
