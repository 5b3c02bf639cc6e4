package app_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"tenantbase/libs/events"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/tenant-plane/app"
)

// TestTenantBelowMinimumSchemaIsMigrating plays a release whose contract
// step needs schema version 2 while a tenant is rolled back to 1: that
// tenant answers 503 tenant_migrating with Retry-After, and is served
// again once it is back at 2. Going down is learnt from tenant.migrated
// (the cached answer is dropped); going up is learnt even with that event
// lost, as a tenant below the minimum is asked for again after the
// negative TTL. A plane of the
// release before (minimum 1) serves the tenant at 1 all along, and logins
// are recorded only where the schema has last_login_at.
func TestTenantBelowMinimumSchemaIsMigrating(t *testing.T) {
	t.Parallel()
	w := newTenants(t)
	const contract = tenantdb.LastLoginVersion
	short := func(c *app.Config) { c.NegativeCacheTTL = 200 * time.Millisecond }
	next := startPlane(t, w.dir.URL, w.nats.URL(), short, app.WithMinSchemaVersion(contract))
	current := startPlane(t, w.dir.URL, w.nats.URL(), short)
	id := w.a.ID

	login := func(p *plane) *testenv.Response {
		return p.call(t, http.MethodPost, "/auth/login", id, "",
			map[string]string{"email": ownerEmail, "password": ownerPassword})
	}
	lastLogin := func() *time.Time {
		var last *time.Time
		testenv.QueryRow(t, tenantdbtest.DSN(w.a.DB), `SELECT last_login_at FROM tenantuser WHERE email = $1`,
			[]any{ownerEmail}, &last)
		return last
	}
	// migrate moves the tenant database to version as a migration run
	// does: the database first, then the directory, then (if announce)
	// the event.
	migrate := func(version uint, announce bool) {
		t.Helper()
		if _, err := tenantdb.Embedded().MigrateTo(context.Background(), tenantdbtest.DSN(w.a.DB), version, tenantdb.MigrateOptions{}); err != nil {
			t.Fatal(err)
		}
		tn, _ := w.dir.Tenant(id)
		tn.SchemaVersion = int(version)
		w.dir.Put(tn)
		if announce {
			w.events.Publish(t, w.dir.Event(events.TenantMigrated, id))
		}
	}

	// At the newest version both serve, and the login is recorded.
	login(next).Expect(t, http.StatusOK)
	if lastLogin() == nil {
		t.Fatal("a login at the newest version left last_login_at empty")
	}

	migrate(contract-1, true)
	testenv.Eventually(t, eventDeadline, func() bool {
		return login(next).Status == http.StatusServiceUnavailable
	}, "the tenant below the minimum refused")
	res := login(next).ExpectProblem(t, http.StatusServiceUnavailable, "tenant_migrating")
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", res.Header.Get("Retry-After"))
	}
	// The release before still serves it, and records no login: the
	// column is gone at version 1.
	login(current).Expect(t, http.StatusOK)

	// Forward again with the event lost: the tenant is asked for again.
	migrate(contract, false)
	testenv.Eventually(t, eventDeadline, func() bool {
		return login(next).Status == http.StatusOK
	}, "the migrated tenant served again")
	if last := lastLogin(); last == nil || time.Since(*last) > time.Minute {
		t.Fatalf("last_login_at = %v after a login at version %d", last, contract)
	}

	login(current).Expect(t, http.StatusOK)
}
