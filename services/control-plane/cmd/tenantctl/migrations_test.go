package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/tenantdb"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

type migrationRunList struct {
	Items      []cptest.MigrationRun `json:"items"`
	NextCursor *string               `json:"next_cursor"`
}

// migrationFleet is a control plane of the next release, which carries one
// tenant migration more than this one, over tenants that a control plane
// of this release provisioned (and stopped). Its gate steers each tenant's
// migration.
type migrationFleet struct {
	cp    *cptest.ControlPlane
	owner cptest.User
	ids   []int64
	// next is the version the next release adds.
	next int
	gate *tenantGate
}

func newMigrationFleet(t *testing.T, tenants int) *migrationFleet {
	t.Helper()
	opts := cptest.Options{DatabaseURL: cptest.CoreDatabase(t), NATSURL: testenv.NATS(t).URL(), KeysDir: t.TempDir()}
	current := cptest.Start(t, opts)
	f := &migrationFleet{owner: current.SignUpOwner(t, "owner@example.com", "owner password 1"),
		next: int(tenantdb.LatestVersion()) + 1, gate: &tenantGate{}}
	for i := range tenants {
		f.ids = append(f.ids, current.CreateOrganization(t, f.owner.AccessToken, fmt.Sprintf("Tenant %d", i)).ID)
	}
	for _, id := range f.ids {
		current.WaitStatus(t, f.owner.AccessToken, id, "ready", 2*time.Minute)
	}
	if err := current.Stop(); err != nil {
		t.Fatal(err)
	}
	next := tenantdbtest.NextRelease(t, "nickname",
		"BEGIN;\nALTER TABLE tenantuser ADD COLUMN nickname VARCHAR(100);\nCOMMIT;\n",
		"BEGIN;\nALTER TABLE tenantuser DROP COLUMN nickname;\nCOMMIT;\n")
	// The test starts the runs itself.
	opts.Configure = func(c *app.Config) { c.TenantMigrateOnStart = false }
	opts.RunOptions = []app.Option{app.WithTenantMigrations(next), app.WithBeforeTenantMigration(f.gate.before)}
	f.cp = cptest.Start(t, opts)
	// Cleanups run last first: held tenants go on before the control
	// plane stops.
	t.Cleanup(f.gate.release)
	return f
}

// tenantGate runs before each tenant migration: it fails the tenants set
// failing and, while held, lets a tenant go on only with a pass.
type tenantGate struct {
	mu       sync.Mutex
	failing  map[int64]bool
	passes   chan struct{}
	released chan struct{}
}

func (g *tenantGate) before(ctx context.Context, orgID int64) error {
	g.mu.Lock()
	fail, passes, released := g.failing[orgID], g.passes, g.released
	g.mu.Unlock()
	if fail {
		return fmt.Errorf("injected failure of tenant %d", orgID)
	}
	if passes == nil {
		return nil
	}
	select {
	case <-passes:
		return nil
	case <-released:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fail makes the migrations of ids fail from now on, and only theirs.
func (g *tenantGate) fail(ids ...int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failing = map[int64]bool{}
	for _, id := range ids {
		g.failing[id] = true
	}
}

// hold has every tenant migration started from now on wait for a pass or
// the release.
func (g *tenantGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.passes, g.released = make(chan struct{}), make(chan struct{})
}

// pass lets one held tenant go on, once one is waiting.
func (g *tenantGate) pass(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	passes := g.passes
	g.mu.Unlock()
	select {
	case passes <- struct{}{}:
	case <-time.After(time.Minute):
		t.Fatal("no tenant migration waited for a pass")
	}
}

// release lets every held tenant go on and holds no other.
func (g *tenantGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.released != nil {
		close(g.released)
	}
	g.passes, g.released = nil, nil
}

// TestMigrations drives migration runs with tenantctl over three tenants:
// a failing tenant ends a run with --wait in exit 1 and resume --wait
// completes it; a failing canary pauses a rollback run, another run is
// refused meanwhile; pause, resume and cancel steer it, cancel ending a
// resume --wait with exit 1; list prints every run; unknown runs exit 3.
func TestMigrations(t *testing.T) {
	t.Parallel()
	f := newMigrationFleet(t, 3)
	admin := newCLI(t, f.cp.PublicURL)
	admin.loginAdmin(t)

	var list migrationRunList
	admin.json(t, &list, "migrations", "list")
	if list.Items == nil || len(list.Items) != 0 || list.NextCursor != nil {
		t.Fatalf("migrations list before any run: %+v, want an empty items array", list)
	}

	// A failing tenant after the canary: the run goes on without it, and
	// --wait exits 1 saying which tenant failed and why.
	bad := f.ids[1]
	f.gate.fail(bad)
	r := admin.expect(t, 1, "migrations", "start", "--wait", "-o", "json")
	var run cptest.MigrationRun
	decode(t, r.stdout, &run)
	if c := run.Counts; run.Status != "completed_with_failures" || run.TargetVersion != f.next || c.Done != 2 || c.Failed != 1 ||
		c.Pending+c.Running+c.Skipped != 0 || run.FinishedAt == nil || len(run.Failed) != 1 || run.Failed[0].TenantID != bad ||
		run.Failed[0].FromVersion != f.next-1 || !strings.Contains(run.Failed[0].Error, fmt.Sprintf("injected failure of tenant %d", bad)) {
		t.Fatalf("start --wait with a failing tenant printed %+v", run)
	}
	title := fmt.Sprintf("migration run %d: ", run.ID)
	expectProblem(t, r, 1, "completed_with_failures")
	for _, want := range []string{
		title + "0/3 running, 0 failed\n",
		title + "2/3 completed_with_failures, 1 failed (",
		fmt.Sprintf("tenantctl: %s1 of 3 tenants failed, first tenant %d (from version %d): migration to version %d failed: injected failure",
			title, bad, f.next-1, f.next),
	} {
		if !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "\r") {
			t.Fatalf("start --wait without a terminal: want plain lines with %q, got %s", want, r)
		}
	}

	var got cptest.MigrationRun
	admin.json(t, &got, "migrations", "status", itoa(run.ID))
	if got.ID != run.ID || got.Status != run.Status || got.Counts != run.Counts || len(got.Failed) != 1 {
		t.Fatalf("migrations status: %+v, want %+v", got, run)
	}
	table := admin.expect(t, 0, "migrations", "status", itoa(run.ID), "-o", "table").stdout
	for _, line := range []string{`status\s+completed_with_failures`, `counts\.done\s+2`, `counts\.failed\s+1`} {
		if !regexp.MustCompile(`(?m)^` + line + `$`).MatchString(table) {
			t.Fatalf("migrations status as a table has no line %s:\n%s", line, table)
		}
	}

	// Once the cause is gone, resume --wait retries the tenant.
	f.gate.fail()
	r = admin.json(t, &got, "migrations", "resume", itoa(run.ID), "--wait")
	if got.ID != run.ID || got.Status != "completed" || got.Counts.Done != 3 || got.Counts.Failed != 0 || len(got.Failed) != 0 {
		t.Fatalf("resume --wait: %+v", got)
	}
	if !strings.Contains(r.stderr, title+"3/3 completed, 0 failed (") {
		t.Fatalf("resume --wait: %s", r)
	}
	for _, id := range f.ids {
		if v := f.cp.Organization(t, f.owner.AccessToken, id).SchemaVersion; v != f.next {
			t.Fatalf("tenant %d is at version %d after the run, want %d", id, v, f.next)
		}
	}
	expectProblem(t, admin.expect(t, 1, "migrations", "resume", itoa(run.ID)), 1, "migration_finished")
	expectProblem(t, admin.expect(t, 3, "migrations", "status", "999999"), 3, "migration_not_found")
	expectProblem(t, admin.expect(t, 3, "migrations", "cancel", "999999"), 3, "migration_not_found")
	r = admin.expect(t, 2, "migrations", "start", "--target", "999")
	expectProblem(t, r, 2, "validation_failed")
	if !strings.Contains(r.stderr, "\n  target_version: ") {
		t.Fatalf("a version the control plane does not carry: %s", r)
	}

	// A failing canary pauses a rollback run before any other tenant is
	// touched, whatever --on-error says; another run is refused meanwhile.
	f.gate.fail(f.ids[0])
	r = admin.expect(t, 1, "migrations", "start", "--target", itoa(int64(f.next-1)), "--canary", "1", "--concurrency", "2",
		"--on-error", "continue", "--wait", "-o", "json")
	var back cptest.MigrationRun
	decode(t, r.stdout, &back)
	if c := back.Counts; back.Status != "paused" || back.TargetVersion != f.next-1 || back.Canary != 1 || back.Concurrency != 2 ||
		back.OnError != "continue" || c.Failed != 1 || c.Pending != 2 || c.Done+c.Running != 0 || back.Failed[0].TenantID != f.ids[0] {
		t.Fatalf("start --wait with a failing canary printed %+v", back)
	}
	expectProblem(t, r, 1, "paused")
	if !strings.Contains(r.stderr, fmt.Sprintf("paused by a failing tenant: 1 of 3 tenants failed, first tenant %d ", f.ids[0])) {
		t.Fatalf("start --wait with a failing canary: %s", r)
	}
	expectProblem(t, admin.expect(t, 1, "migrations", "start"), 1, "migration_in_progress")

	// With every tenant held at its migration: resume, pause, then a
	// resume --wait that cancel ends.
	f.gate.fail()
	f.gate.hold()
	admin.json(t, &got, "migrations", "resume", itoa(back.ID))
	if got.Status != "running" || got.Counts.Failed != 0 {
		t.Fatalf("resume: %+v", got)
	}
	admin.json(t, &got, "migrations", "pause", itoa(back.ID))
	if got.Status != "paused" {
		t.Fatalf("pause: %+v", got)
	}
	waiting := admin.start(t, "migrations", "resume", itoa(back.ID), "--wait", "-o", "json")
	backTitle := fmt.Sprintf("migration run %d: ", back.ID)
	waiting.waitFor(t, waiting.stderr, backTitle+"0/3 running, 0 failed\n")
	admin.json(t, &got, "migrations", "cancel", itoa(back.ID))
	if got.Status != "cancelled" || got.FinishedAt == nil || got.Counts.Pending != 2 {
		t.Fatalf("cancel: %+v", got)
	}
	if code := waiting.exit(t); code != 1 {
		t.Fatalf("resume --wait of a run cancelled meanwhile: exit %d\nstderr:\n%s", code, waiting.stderr)
	}
	decode(t, waiting.stdout.String(), &got)
	if got.Status != "cancelled" || !strings.Contains(waiting.stderr.String(), backTitle+"cancelled with 2 of 3 tenants never migrated (cancelled)\n") {
		t.Fatalf("resume --wait of a run cancelled meanwhile: %+v\nstderr:\n%s", got, waiting.stderr)
	}
	f.gate.release()
	expectProblem(t, admin.expect(t, 1, "migrations", "resume", itoa(back.ID)), 1, "migration_finished")

	// list prints every page, newest first, as one page of the API.
	admin.json(t, &list, "migrations", "list", "--chunk-size", "1")
	if len(list.Items) != 2 || list.Items[0].ID != back.ID || list.Items[1].ID != run.ID || list.NextCursor != nil ||
		list.Items[0].Status != "cancelled" || list.Items[1].Status != "completed" {
		t.Fatalf("migrations list: %+v, want the cancelled run, then the completed one, and no cursor", list)
	}
	table = admin.expect(t, 0, "migrations", "list", "-o", "table").stdout
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 ||
		!regexp.MustCompile(`^ID\s+STATUS\s+TARGET_VERSION\s+PENDING\s+RUNNING\s+DONE\s+SKIPPED\s+FAILED\s+STARTED_AT\s+FINISHED_AT$`).MatchString(lines[0]) ||
		!regexp.MustCompile(fmt.Sprintf(`^%d\s+completed\s+%d\s+0\s+0\s+3\s+0\s+0\s+\S+\s+\S+$`, run.ID, f.next)).MatchString(lines[2]) {
		t.Fatalf("migrations list as a table:\n%s", table)
	}

	// Migration runs are for platform admins only.
	owner := newCLI(t, f.cp.PublicURL)
	owner.login(t, f.owner.Email, f.owner.Password)
	expectProblem(t, owner.expect(t, 4, "migrations", "list"), 4, "admin_required")
}

// TestMigrationsTerminal runs `migrations start --wait` at a terminal: a
// progress bar of tenants done of all, advancing as each tenant is
// migrated, then cleared for the run as a table.
func TestMigrationsTerminal(t *testing.T) {
	t.Parallel()
	f := newMigrationFleet(t, 3)
	c := newCLI(t, f.cp.PublicURL)
	c.loginAdmin(t)

	// One tenant at a time, each when the test lets it.
	f.gate.hold()
	term := c.startTerminal(t, "migrations", "start", "--concurrency", "1", "--wait")
	for done := range 3 {
		term.waitScreen(t, fmt.Sprintf("(%d/3)", done))
		f.gate.pass(t)
	}
	code, screen := term.exit(t)
	if code != 0 {
		t.Fatalf("migrations start --wait at a terminal: exit %d, the terminal shows:\n%s", code, screen)
	}
	bar, result, ok := strings.Cut(screen, "migration run 1: 3/3 completed, 0 failed (")
	if !ok || !strings.Contains(bar, "migration run 1: running, 0 failed") || strings.Contains(bar, "\n") {
		t.Fatalf("the progress bar is drawn on one line, redrawn in place, then the last line; the terminal shows:\n%q", screen)
	}
	for _, line := range []string{`status\s+completed`, `target_version\s+` + itoa(int64(f.next)), `counts\.done\s+3`, `counts\.failed\s+0`} {
		if !regexp.MustCompile(`(?m)^` + line + `\r$`).MatchString(result) {
			t.Fatalf("migrations start --wait at a terminal ends with the run as a table; no line %s in:\n%q", line, result)
		}
	}
}
