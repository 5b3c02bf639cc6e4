package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/events"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

const runTimeout = 3 * time.Minute

// withNickname is the embedded tenant migrations plus a nickname column,
// the way the next release would ship it: one statement, which fails on a
// tenant whose table already has the column.
func withNickname(t testing.TB) tenantdb.Migrations {
	t.Helper()
	return tenantdbtest.NextRelease(t, "nickname",
		"BEGIN;\nALTER TABLE tenantuser ADD COLUMN nickname VARCHAR(100);\nCOMMIT;\n",
		"BEGIN;\nALTER TABLE tenantuser DROP COLUMN IF EXISTS nickname;\nCOMMIT;\n")
}

type runTenant struct {
	TenantID      int64   `json:"tenant_id"`
	State         string  `json:"state"`
	Canary        bool    `json:"canary"`
	FromVersion   int     `json:"from_version"`
	SchemaVersion int     `json:"schema_version"`
	Error         *string `json:"error"`
	Attempts      int     `json:"attempts"`
}

type runTenantPage struct {
	Items      []runTenant `json:"items"`
	NextCursor *string     `json:"next_cursor"`
}

// fleet is a core database with ready tenants provisioned by a control
// plane of the current release, which has stopped: the next control plane
// started on it plays the next release.
type fleet struct {
	core  string
	nats  *testenv.NATSServer
	keys  string
	owner cptest.User
	ids   []int64
}

func newFleet(t *testing.T, tenants int) *fleet {
	t.Helper()
	f := &fleet{core: cptest.CoreDatabase(t), nats: testenv.NATS(t), keys: t.TempDir()}
	cp := f.start(t)
	f.owner = cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	f.ids = createReady(t, cp, f.owner, tenants)
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	return f
}

// start runs a control plane on the fleet's core database.
func (f *fleet) start(t *testing.T, opts ...app.Option) *cptest.ControlPlane {
	t.Helper()
	return f.startWith(t, nil, opts...)
}

func (f *fleet) startWith(t *testing.T, configure func(*app.Config), opts ...app.Option) *cptest.ControlPlane {
	t.Helper()
	return cptest.Start(t, cptest.Options{DatabaseURL: f.core, NATSURL: f.nats.URL(), KeysDir: f.keys,
		Configure: configure, RunOptions: opts})
}

// createReady posts n organizations at once and waits for them to be ready.
func createReady(t *testing.T, cp *cptest.ControlPlane, owner cptest.User, n int) []int64 {
	t.Helper()
	ids := make([]int64, n)
	for i := range n {
		ids[i] = cp.CreateOrganization(t, owner.AccessToken, fmt.Sprintf("Tenant %d", i)).ID
	}
	for _, id := range ids {
		cp.WaitStatus(t, owner.AccessToken, id, "ready", readyTimeout)
	}
	return ids
}

func runPath(id int64, suffix string) string {
	return "/admin/migrations/" + strconv.FormatInt(id, 10) + suffix
}

func startRun(t *testing.T, cp *cptest.ControlPlane, admin string, body map[string]any) cptest.MigrationRun {
	t.Helper()
	res := cp.Do(t, http.MethodPost, "/admin/migrations", admin, body).Expect(t, http.StatusAccepted)
	var run cptest.MigrationRun
	res.Decode(t, &run)
	if loc := res.Header.Get("Location"); loc != runPath(run.ID, "") {
		t.Fatalf("Location %q for run %d", loc, run.ID)
	}
	return run
}

func getRun(t testing.TB, cp *cptest.ControlPlane, admin string, id int64) cptest.MigrationRun {
	t.Helper()
	var run cptest.MigrationRun
	cp.Do(t, http.MethodGet, runPath(id, ""), admin, nil).Expect(t, http.StatusOK).Decode(t, &run)
	return run
}

// waitRun polls the run until its status is status.
func waitRun(t *testing.T, cp *cptest.ControlPlane, admin string, id int64, status string) cptest.MigrationRun {
	t.Helper()
	deadline := time.Now().Add(runTimeout)
	for {
		run := getRun(t, cp, admin, id)
		if run.Status == status {
			return run
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %d is %s after %s, want %s: %+v", id, run.Status, runTimeout, status, run)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runStartedOnStart waits for the run a control plane starts by itself.
func runStartedOnStart(t *testing.T, cp *cptest.ControlPlane, admin string) cptest.MigrationRun {
	t.Helper()
	var list struct {
		Items []cptest.MigrationRun `json:"items"`
	}
	testenv.Eventually(t, time.Minute, func() bool {
		cp.Do(t, http.MethodGet, "/admin/migrations", admin, nil).Expect(t, http.StatusOK).Decode(t, &list)
		return len(list.Items) > 0
	}, "a migration run started on start")
	if len(list.Items) != 1 {
		t.Fatalf("%d runs started on start, want 1: %+v", len(list.Items), list.Items)
	}
	return list.Items[0]
}

func runTenants(t *testing.T, cp *cptest.ControlPlane, admin string, id int64, query string) runTenantPage {
	t.Helper()
	var p runTenantPage
	cp.Do(t, http.MethodGet, runPath(id, "/tenants?"+query), admin, nil).Expect(t, http.StatusOK).Decode(t, &p)
	return p
}

// tenantDSN is the tenant's database as its own role.
func tenantDSN(t *testing.T, cp *cptest.ControlPlane, id int64) string {
	t.Helper()
	db := cp.Tenant(t, id).Database
	if db == nil {
		t.Fatalf("tenant %d has no database in the internal API", id)
	}
	return cptest.DSN(db)
}

// databaseVersion is the version the tenant's database itself records.
func databaseVersion(t *testing.T, cp *cptest.ControlPlane, id int64) int {
	t.Helper()
	v, dirty, err := tenantdb.Version(context.Background(), tenantDSN(t, cp, id))
	if err != nil {
		t.Fatal(err)
	}
	if dirty {
		t.Fatalf("tenant %d is dirty at version %d", id, v)
	}
	return int(v)
}

func hasColumn(t *testing.T, cp *cptest.ControlPlane, id int64, column string) bool {
	t.Helper()
	var n int
	testenv.QueryRow(t, tenantDSN(t, cp, id), `SELECT count(*) FROM information_schema.columns
		WHERE table_name = 'tenantuser' AND column_name = $1`, []any{column}, &n)
	return n == 1
}

// outboxEvents returns the events of type typ about tenant id in the core
// outbox, oldest first.
func outboxEvents(t *testing.T, core, typ string, id int64) []events.Envelope {
	t.Helper()
	var raw []string
	testenv.QueryRow(t, core, `SELECT coalesce(array_agg(payload::text ORDER BY id), '{}') FROM event_outbox
		WHERE subject = $1 AND payload->'data'->>'tenant_id' = $2`, []any{typ, strconv.FormatInt(id, 10)}, &raw)
	var out []events.Envelope
	for _, r := range raw {
		e, err := events.Decode([]byte(r))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// migrationCounter counts, per tenant, the migrations a control plane
// starts.
type migrationCounter struct {
	mu sync.Mutex
	n  map[int64]int
}

func newMigrationCounter() *migrationCounter { return &migrationCounter{n: map[int64]int{}} }

func (c *migrationCounter) before(_ context.Context, orgID int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[orgID]++
	return nil
}

func (c *migrationCounter) count(id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// TestFleetParksTheFailingTenantAndResumes deploys a release with a third
// tenant migration over 50 tenants, one of which already has the column
// it adds: the run started on start migrates the 49 others, parks that
// one with its error (still served at version 2), and resume migrates it
// once the cause is removed.
func TestFleetParksTheFailingTenantAndResumes(t *testing.T) {
	t.Parallel()
	const tenants = 50
	f := newFleet(t, tenants)
	bad := f.ids[17]
	old := f.start(t)
	testenv.Exec(t, tenantDSN(t, old, bad), `ALTER TABLE tenantuser ADD COLUMN nickname VARCHAR(100)`)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}

	m := withNickname(t)
	from, to := int(tenantdb.LatestVersion()), int(m.Latest())
	cp := f.start(t, app.WithTenantMigrations(m))
	admin := cp.LoginAdmin(t)
	started := runStartedOnStart(t, cp, admin)
	if started.TargetVersion != to {
		t.Fatalf("run started on start: %+v, want one to version %d", started, to)
	}
	run := waitRun(t, cp, admin, started.ID, "completed_with_failures")
	if c := run.Counts; c.Done != tenants-1 || c.Failed != 1 || c.Pending+c.Running+c.Skipped != 0 {
		t.Fatalf("counts %+v, want %d done and 1 failed", c, tenants-1)
	}
	if run.FinishedAt == nil || len(run.Failed) != 1 || run.Failed[0].TenantID != bad || run.Failed[0].FromVersion != from {
		t.Fatalf("run %+v, want tenant %d parked from version %d", run, bad, from)
	}
	detail := run.Failed[0].Error
	for _, want := range []string{m.File(m.Latest(), true), `column "nickname" of relation "tenantuser" already exists`, "SQLSTATE 42701"} {
		if !strings.Contains(detail, want) {
			t.Fatalf("error %q does not say %q", detail, want)
		}
	}
	failed := runTenants(t, cp, admin, run.ID, "state=failed")
	if len(failed.Items) != 1 || failed.Items[0].TenantID != bad || failed.Items[0].SchemaVersion != from ||
		failed.Items[0].Error == nil || *failed.Items[0].Error != detail {
		t.Fatalf("failed tenants %+v", failed)
	}
	// Paged like every list.
	var done []runTenant
	for cursor, pages := "", 0; ; pages++ {
		p := runTenants(t, cp, admin, run.ID, "state=done&limit=20&cursor="+cursor)
		done = append(done, p.Items...)
		if p.NextCursor == nil {
			if pages != 2 {
				t.Fatalf("%d pages of 20 for %d tenants", pages+1, len(done))
			}
			break
		}
		cursor = *p.NextCursor
	}
	if len(done) != tenants-1 {
		t.Fatalf("%d done tenants listed", len(done))
	}

	for _, id := range f.ids {
		org := cp.Organization(t, f.owner.AccessToken, id)
		want := to
		if id == bad {
			want = from
		}
		if org.Status != "ready" || org.SchemaVersion != want || databaseVersion(t, cp, id) != want {
			t.Fatalf("organization %d: %s at %d, want ready at %d in the core and in its database", id, org.Status, org.SchemaVersion, want)
		}
		migrated := outboxEvents(t, f.core, events.TenantMigrated, id)
		if id == bad {
			if len(migrated) != 0 {
				t.Fatalf("tenant.migrated for the parked tenant: %+v", migrated)
			}
			continue
		}
		if len(migrated) != 1 || migrated[0].Data.SchemaVersion != to || migrated[0].Data.PreviousSchemaVersion == nil ||
			*migrated[0].Data.PreviousSchemaVersion != from || migrated[0].Data.Status != "ready" {
			t.Fatalf("tenant %d: tenant.migrated %+v, want one from %d to %d", id, migrated, from, to)
		}
	}
	parked := outboxEvents(t, f.core, events.TenantMigrationFailed, bad)
	if len(parked) != 1 || parked[0].Data.Detail != detail || parked[0].Data.SchemaVersion != from || parked[0].Data.Status != "ready" {
		t.Fatalf("tenant.migration_failed %+v, want one with the detail", parked)
	}
	// The parked tenant keeps serving: ready, with its connection details.
	if tn := cp.Tenant(t, bad); tn.Status != "ready" || tn.SchemaVersion != from || tn.Database == nil {
		t.Fatalf("internal API for the parked tenant: %+v", tn)
	}

	testenv.Exec(t, tenantDSN(t, cp, bad), `ALTER TABLE tenantuser DROP COLUMN nickname`)
	var resumed cptest.MigrationRun
	cp.Do(t, http.MethodPost, runPath(run.ID, "/resume"), admin, nil).Expect(t, http.StatusAccepted).Decode(t, &resumed)
	if resumed.Status != "running" && resumed.Status != "completed" {
		t.Fatalf("resume answered %s", resumed.Status)
	}
	run = waitRun(t, cp, admin, run.ID, "completed")
	if c := run.Counts; c.Done != tenants || c.Failed != 0 || len(run.Failed) != 0 {
		t.Fatalf("after resume: %+v", run)
	}
	if v := cp.Organization(t, f.owner.AccessToken, bad).SchemaVersion; v != to || databaseVersion(t, cp, bad) != to {
		t.Fatalf("the resumed tenant is at %d", v)
	}
	if got := outboxEvents(t, f.core, events.TenantMigrated, bad); len(got) != 1 || got[0].Data.SchemaVersion != to {
		t.Fatalf("tenant.migrated of the resumed tenant: %+v", got)
	}

	// Subscribers get the events, without credentials.
	log := cptest.Subscribe(t, f.nats.URL(), "tenant.migration_failed")
	got := log.WaitFor(t, 1, 30*time.Second)
	if got[0].Envelope.Subject != strconv.FormatInt(bad, 10) {
		t.Fatalf("event %+v", got[0].Envelope)
	}
	raw, _ := json.Marshal(got[0].Raw)
	for _, secret := range []string{"password", "postgres://"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("event carries %q: %s", secret, raw)
		}
	}
}

// TestFleetCanaryFailureStopsTheRun makes the canary fail: the run pauses
// before any other tenant is touched; resume after the fix runs them all.
func TestFleetCanaryFailureStopsTheRun(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 5)
	counter := newMigrationCounter()
	m := withNickname(t)
	cp := f.startWith(t, func(c *app.Config) { c.TenantMigrateOnStart = false },
		app.WithTenantMigrations(m), app.WithBeforeTenantMigration(counter.before))
	admin := cp.LoginAdmin(t)
	canary := f.ids[0]
	testenv.Exec(t, tenantDSN(t, cp, canary), `ALTER TABLE tenantuser ADD COLUMN nickname VARCHAR(100)`)

	run := startRun(t, cp, admin, map[string]any{"concurrency": 4})
	run = waitRun(t, cp, admin, run.ID, "paused")
	if c := run.Counts; c.Failed != 1 || c.Pending != 4 || c.Running+c.Done != 0 || run.Failed[0].TenantID != canary {
		t.Fatalf("paused run %+v, want the canary failed and the others pending", run)
	}
	if p := runTenants(t, cp, admin, run.ID, "state=failed"); !p.Items[0].Canary {
		t.Fatalf("the failed tenant is not marked canary: %+v", p.Items)
	}
	for _, id := range f.ids[1:] {
		if n := counter.count(id); n != 0 || databaseVersion(t, cp, id) != int(tenantdb.LatestVersion()) || cp.Organization(t, f.owner.AccessToken, id).SchemaVersion != int(tenantdb.LatestVersion()) {
			t.Fatalf("tenant %d was touched (%d migrations) while the canary failed", id, n)
		}
	}

	testenv.Exec(t, tenantDSN(t, cp, canary), `ALTER TABLE tenantuser DROP COLUMN nickname`)
	cp.Do(t, http.MethodPost, runPath(run.ID, "/resume"), admin, nil).Expect(t, http.StatusAccepted)
	run = waitRun(t, cp, admin, run.ID, "completed")
	if run.Counts.Done != 5 {
		t.Fatalf("counts %+v", run.Counts)
	}
	for i, id := range f.ids {
		want := 1
		if i == 0 {
			want = 2
		}
		if n := counter.count(id); n != want || databaseVersion(t, cp, id) != int(m.Latest()) {
			t.Fatalf("tenant %d: %d migrations, want %d, and version %d", id, n, want, m.Latest())
		}
	}
}

// TestFleetTwoControlPlanesMigrateEachTenantOnce deploys the next release
// on two control planes at once over 20 tenants: both start, one starts
// the run, both work it, and each tenant is migrated exactly once.
func TestFleetTwoControlPlanesMigrateEachTenantOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 20)
	m := withNickname(t)
	counters := []*migrationCounter{newMigrationCounter(), newMigrationCounter()}
	var cps []*cptest.ControlPlane
	var wg sync.WaitGroup
	cps = make([]*cptest.ControlPlane, 2)
	for i := range cps {
		wg.Go(func() {
			cps[i] = f.start(t, app.WithTenantMigrations(m), app.WithBeforeTenantMigration(counters[i].before))
		})
	}
	wg.Wait()
	admin := cps[0].LoginAdmin(t)
	run := waitRun(t, cps[1], admin, runStartedOnStart(t, cps[1], admin).ID, "completed")
	if run.Counts.Done != 20 {
		t.Fatalf("counts %+v", run.Counts)
	}
	worked := []int{0, 0}
	for _, id := range f.ids {
		a, b := counters[0].count(id), counters[1].count(id)
		if a+b != 1 {
			t.Errorf("tenant %d migrated %d + %d times, want once in all", id, a, b)
		}
		worked[0] += a
		worked[1] += b
		if n := len(outboxEvents(t, f.core, events.TenantMigrated, id)); n != 1 || databaseVersion(t, cps[0], id) != int(m.Latest()) {
			t.Errorf("tenant %d: %d tenant.migrated, want 1", id, n)
		}
	}
	t.Logf("migrated by the first control plane: %d, by the second: %d", worked[0], worked[1])
}

// TestFleetRollsBackAndForward rolls every tenant back to version 1 with
// the down files, then forward again; a run with nothing to do skips
// every tenant without touching its database.
func TestFleetRollsBackAndForward(t *testing.T) {
	t.Parallel()
	counter := newMigrationCounter()
	m := withNickname(t)
	cp := cptest.Start(t, cptest.Options{RunOptions: []app.Option{app.WithTenantMigrations(m), app.WithBeforeTenantMigration(counter.before)}})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	ids := createReady(t, cp, owner, 3)
	admin := cp.LoginAdmin(t)
	latest := int(m.Latest())

	back := startRun(t, cp, admin, map[string]any{"target_version": latest - 1})
	back = waitRun(t, cp, admin, back.ID, "completed")
	if back.Counts.Done != 3 || back.TargetVersion != latest-1 {
		t.Fatalf("rollback %+v", back)
	}
	for _, id := range ids {
		if v := cp.Organization(t, owner.AccessToken, id).SchemaVersion; v != latest-1 || databaseVersion(t, cp, id) != latest-1 ||
			hasColumn(t, cp, id, "nickname") {
			t.Fatalf("tenant %d after the rollback: core %d, database %d", id, v, databaseVersion(t, cp, id))
		}
		e := outboxEvents(t, cp.DatabaseURL, events.TenantMigrated, id)
		if len(e) != 1 || e[0].Data.SchemaVersion != latest-1 || *e[0].Data.PreviousSchemaVersion != latest {
			t.Fatalf("tenant %d: %+v, want tenant.migrated from %d to %d", id, e, latest, latest-1)
		}
		if tn := cp.Tenant(t, id); tn.SchemaVersion != latest-1 {
			t.Fatalf("internal API: %+v", tn)
		}
	}

	forward := waitRun(t, cp, admin, startRun(t, cp, admin, map[string]any{}).ID, "completed")
	if forward.Counts.Done != 3 || forward.TargetVersion != latest {
		t.Fatalf("forward %+v", forward)
	}
	for _, id := range ids {
		if databaseVersion(t, cp, id) != latest || !hasColumn(t, cp, id, "nickname") {
			t.Fatalf("tenant %d not rolled forward", id)
		}
	}

	before := 0
	for _, id := range ids {
		before += counter.count(id)
	}
	noop := startRun(t, cp, admin, map[string]any{})
	if noop.Status != "completed" || noop.Counts.Skipped != 3 || noop.FinishedAt == nil {
		t.Fatalf("a run with nothing to do: %+v, want completed at once with every tenant skipped", noop)
	}
	after := 0
	for _, id := range ids {
		after += counter.count(id)
	}
	if after != before {
		t.Fatalf("a run with nothing to do migrated %d tenants", after-before)
	}
}

// TestFleetAPI checks who may use the API, what it refuses, pausing on
// errors, pause, cancel and resume.
func TestFleetAPI(t *testing.T) {
	t.Parallel()
	m := withNickname(t)
	cp := cptest.Start(t, cptest.Options{RunOptions: []app.Option{app.WithTenantMigrations(m)}})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	ids := createReady(t, cp, owner, 3)
	admin := cp.LoginAdmin(t)
	latest := int(m.Latest())

	cp.Do(t, http.MethodPost, "/admin/migrations", owner.AccessToken, map[string]any{}).ExpectProblem(t, http.StatusForbidden, "admin_required")
	cp.Do(t, http.MethodGet, "/admin/migrations", "", nil).ExpectProblem(t, http.StatusUnauthorized, "unauthorized")
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"target_version": 0}, "target_version"},
		{map[string]any{"target_version": latest + 1}, "target_version"},
		{map[string]any{"canary": -1}, "canary"},
		{map[string]any{"concurrency": 0}, "concurrency"},
		{map[string]any{"concurrency": 65}, "concurrency"},
		{map[string]any{"on_error": "stop"}, "on_error"},
		{map[string]any{"tenant_ids": []int64{}}, "tenant_ids"},
		{map[string]any{"tenant_ids": []int64{ids[0], ids[0]}}, "tenant_ids"},
		{map[string]any{"tenant_ids": []int64{ids[0], 999999}}, "tenant_ids"},
		{map[string]any{"target": 1}, "target"},
	} {
		p := cp.Do(t, http.MethodPost, "/admin/migrations", admin, tc.body).ExpectProblem(t, http.StatusUnprocessableEntity, "validation_failed")
		if len(p.Problem(t).Errors) == 0 || p.Problem(t).Errors[0].Field != tc.field {
			t.Fatalf("%v: %+v, want field %s", tc.body, p.Problem(t), tc.field)
		}
	}
	cp.Do(t, http.MethodGet, "/admin/migrations/999", admin, nil).ExpectProblem(t, http.StatusNotFound, "migration_not_found")
	cp.Do(t, http.MethodPost, "/admin/migrations/999/pause", admin, nil).ExpectProblem(t, http.StatusNotFound, "migration_not_found")
	var empty struct {
		Items []cptest.MigrationRun `json:"items"`
	}
	cp.Do(t, http.MethodGet, "/admin/migrations", admin, nil).Expect(t, http.StatusOK).Decode(t, &empty)
	if len(empty.Items) != 0 {
		t.Fatalf("refused requests left runs: %+v", empty.Items)
	}

	// Roll back, then forward with on_error=pause over a tenant that fails.
	waitRun(t, cp, admin, startRun(t, cp, admin, map[string]any{"target_version": latest - 1}).ID, "completed")
	testenv.Exec(t, tenantDSN(t, cp, ids[0]), `ALTER TABLE tenantuser ADD COLUMN nickname TEXT`)
	run := startRun(t, cp, admin, map[string]any{"canary": 0, "concurrency": 1, "on_error": "pause", "tenant_ids": ids})
	run = waitRun(t, cp, admin, run.ID, "paused")
	if c := run.Counts; c.Failed != 1 || c.Pending != 2 || c.Running != 0 {
		t.Fatalf("paused on error: %+v", c)
	}
	cp.Do(t, http.MethodPost, "/admin/migrations", admin, map[string]any{}).ExpectProblem(t, http.StatusConflict, "migration_in_progress")
	cp.Do(t, http.MethodPost, runPath(run.ID, "/pause"), admin, nil).Expect(t, http.StatusOK)
	cp.Do(t, http.MethodGet, runPath(run.ID, "/tenants?state=bogus"), admin, nil).ExpectProblem(t, http.StatusUnprocessableEntity, "validation_failed")
	var cancelled cptest.MigrationRun
	cp.Do(t, http.MethodPost, runPath(run.ID, "/cancel"), admin, nil).Expect(t, http.StatusOK).Decode(t, &cancelled)
	if cancelled.Status != "cancelled" || cancelled.FinishedAt == nil || cancelled.Counts.Pending != 2 {
		t.Fatalf("cancelled: %+v", cancelled)
	}
	cp.Do(t, http.MethodPost, runPath(run.ID, "/resume"), admin, nil).ExpectProblem(t, http.StatusConflict, "migration_finished")
	cp.Do(t, http.MethodPost, runPath(run.ID, "/pause"), admin, nil).ExpectProblem(t, http.StatusConflict, "migration_finished")
	cp.Do(t, http.MethodPost, runPath(run.ID, "/cancel"), admin, nil).Expect(t, http.StatusOK)
	for _, id := range ids[1:] {
		if v := databaseVersion(t, cp, id); v != latest-1 {
			t.Fatalf("tenant %d of the cancelled run moved to %d", id, v)
		}
	}
	// The audit log has who steered the run, and the tenant that failed,
	// written by the job.
	steered := adminAudit(t, cp, admin, "target_type=migration_run&target_id="+strconv.FormatInt(run.ID, 10))
	if got := actions(steered); !slices.Equal(got, []string{"migration_run.start", "migration_run.pause", "migration_run.cancel", "migration_run.cancel"}) {
		t.Fatalf("audit of run %d: %v", run.ID, got)
	}
	for _, e := range steered {
		if e.ActorType != "user" || e.ActorID == nil || e.RequestID == nil || e.Outcome != "success" {
			t.Fatalf("audit entry %+v, want the admin's, with the request id", e)
		}
	}
	if d := steered[2].Detail; d["from_status"] != "paused" || d["to_status"] != "cancelled" {
		t.Fatalf("cancel detail %v", d)
	}
	failedAudit := adminAudit(t, cp, admin, "action=organization.migrate&target_type=organization&target_id="+strconv.FormatInt(ids[0], 10))
	if n := len(failedAudit); n < 2 || failedAudit[n-1].Outcome != "failure" || failedAudit[n-1].ActorType != "system" ||
		failedAudit[n-2].Outcome != "success" || failedAudit[n-2].Detail["to_version"] != float64(latest-1) {
		t.Fatalf("audit of tenant %d: %+v, want its rollback then its failure, by the system", ids[0], failedAudit)
	}

	// A new run after the cancelled one; the failed tenant is fixed first.
	testenv.Exec(t, tenantDSN(t, cp, ids[0]), `ALTER TABLE tenantuser DROP COLUMN nickname`)
	last := waitRun(t, cp, admin, startRun(t, cp, admin, map[string]any{}).ID, "completed")
	if last.Counts.Done != 3 {
		t.Fatalf("counts %+v", last.Counts)
	}
	cp.Do(t, http.MethodPost, runPath(last.ID, "/resume"), admin, nil).ExpectProblem(t, http.StatusConflict, "migration_finished")
	var page struct {
		Items      []cptest.MigrationRun `json:"items"`
		NextCursor *string               `json:"next_cursor"`
	}
	cp.Do(t, http.MethodGet, "/admin/migrations?limit=2", admin, nil).Expect(t, http.StatusOK).Decode(t, &page)
	if len(page.Items) != 2 || page.Items[0].ID != last.ID || page.Items[1].ID != run.ID || page.NextCursor == nil {
		t.Fatalf("first page %+v, want the newest two runs and a cursor", page)
	}
	cp.Do(t, http.MethodGet, "/admin/migrations?limit=2&cursor="+*page.NextCursor, admin, nil).Expect(t, http.StatusOK).Decode(t, &page)
	if len(page.Items) != 1 || page.NextCursor != nil {
		t.Fatalf("second page %+v, want the rollback run alone", page)
	}
}

// TestFleetCrashConverges kills the control plane process (SIGKILL) at
// random moments while it migrates tenants, in the middle of their steps,
// restarts it, and checks that the run completes with every tenant at the
// target, none dirty, and one tenant.migrated each.
func TestFleetCrashConverges(t *testing.T) {
	t.Parallel()
	const tenants, crashes = 8, 3
	child := startChildControlPlane(t,
		// Slow steps leave time to be killed inside one, before its commit.
		"TENANT_MIGRATE_STEP_DELAY=300ms",
		"JOB_TIMEOUT=10s",
		"JOB_RESCUE_AFTER=10s",
	)
	core, api := child.Core, child.API
	owner := api.SignUpOwner(t, "owner@example.com", ownerPassword)
	var ids []int64
	for i := range tenants {
		ids = append(ids, api.CreateOrganization(t, owner.AccessToken, fmt.Sprintf("Crash %d", i)).ID)
	}
	for _, id := range ids {
		api.WaitStatus(t, owner.AccessToken, id, "ready", readyTimeout)
	}
	admin := api.LoginAdmin(t)
	latest := int(tenantdb.LatestVersion())
	var run cptest.MigrationRun
	api.Do(t, http.MethodPost, "/admin/migrations", admin, map[string]any{"target_version": latest - 1, "concurrency": 4}).
		Expect(t, http.StatusAccepted).Decode(t, &run)
	waitChildRun(t, api, admin, run.ID, "completed")

	api.Do(t, http.MethodPost, "/admin/migrations", admin, map[string]any{"concurrency": 2}).
		Expect(t, http.StatusAccepted).Decode(t, &run)
	lastDone := -1
	for round := 1; round <= crashes; round++ {
		// Wait for progress since the last crash and tenants being
		// migrated, then kill inside a step: the canary first, later waves
		// after.
		var now cptest.MigrationRun
		testenv.Eventually(t, 2*time.Minute, func() bool {
			now = childRun(t, api, admin, run.ID)
			return (now.Counts.Running > 0 && now.Counts.Done > lastDone) || now.Status == "completed"
		}, "tenants being migrated")
		lastDone = now.Counts.Done
		if now.Status == "completed" {
			t.Logf("round %d: the run completed before a crash", round)
			break
		}
		time.Sleep(time.Duration(rand.Int64N(int64(700 * time.Millisecond))))
		child.kill(t)
		t.Logf("round %d: killed with counts %+v", round, now.Counts)
		child.start(t)
	}
	run = waitChildRun(t, api, admin, run.ID, "completed")
	if run.Counts.Done != tenants {
		t.Fatalf("counts %+v", run.Counts)
	}
	for _, id := range ids {
		db := api.Tenant(t, id).Database
		v, dirty, err := tenantdb.Version(context.Background(), cptest.DSN(db))
		if err != nil || dirty || v != uint(latest) {
			t.Fatalf("tenant %d: version %d dirty %v (%v), want %d clean", id, v, dirty, err, latest)
		}
		if org := api.Organization(t, owner.AccessToken, id); org.SchemaVersion != latest || org.Status != "ready" {
			t.Fatalf("organization %+v", org)
		}
		forward := 0
		for _, e := range outboxEvents(t, core, events.TenantMigrated, id) {
			if e.Data.SchemaVersion == latest {
				forward++
			}
		}
		if forward != 1 {
			t.Fatalf("tenant %d: %d tenant.migrated to %d, want 1", id, forward, latest)
		}
	}
}

func childRun(t *testing.T, api *cptest.Client, admin string, id int64) cptest.MigrationRun {
	t.Helper()
	var run cptest.MigrationRun
	api.Do(t, http.MethodGet, runPath(id, ""), admin, nil).Expect(t, http.StatusOK).Decode(t, &run)
	return run
}

func waitChildRun(t *testing.T, api *cptest.Client, admin string, id int64, status string) cptest.MigrationRun {
	t.Helper()
	var run cptest.MigrationRun
	testenv.Eventually(t, runTimeout, func() bool {
		run = childRun(t, api, admin, id)
		return run.Status == status
	}, "run "+strconv.FormatInt(id, 10)+" "+status)
	return run
}
