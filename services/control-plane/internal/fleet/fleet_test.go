package fleet_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/page"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/control-plane/internal/fleet"
	"tenantbase/services/control-plane/internal/organizations"
)

// noTenants is never asked: nothing here works a job.
type noTenants struct{}

func (noTenants) TenantDSN(context.Context, organizations.Organization) (string, error) {
	return "", errors.New("no tenant databases in this test")
}

func (noTenants) WithOrganizationLock(context.Context, int64, func() error) error {
	return errors.New("no tenant databases in this test")
}

type world struct {
	core string
	pool *pgxpool.Pool
	svc  *fleet.Service
}

// newWorld is a core database whose ready tenants live on the servers
// given, one tenant per entry, at schema version 1; no job is worked.
func newWorld(t *testing.T, servers ...string) *world {
	t.Helper()
	w := &world{core: cptest.CoreDatabase(t)}
	var err error
	if w.pool, err = pgxpool.New(context.Background(), w.core); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.pool.Close)
	var owner int64
	testenv.QueryRow(t, w.core, `INSERT INTO coreuser (email, password_hash, is_verified, is_owner)
		VALUES ('owner@example.com', 'x', TRUE, TRUE) RETURNING id`, nil, &owner)
	for i, host := range servers {
		testenv.Exec(t, w.core, `INSERT INTO organization (name, owner_id, status, schema_version, db_host, db_port, db_name, db_user)
			VALUES ('T', $1, 'ready', 1, $2, 5432, 'tenant_' || $3::int, 'tenant_' || $3::int)`, owner, host, i)
	}
	store := organizations.NewStore(w.pool, nil, cptest.Deployment(t, w.core))
	w.svc, err = fleet.New(w.pool, store, noTenants{}, fleet.Options{Migrations: tenantdb.Embedded(), Workers: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) jobs(t *testing.T) int {
	t.Helper()
	var n int
	testenv.QueryRow(t, w.core, `SELECT count(*) FROM river_job WHERE kind = 'migrate_tenant'`, nil, &n)
	return n
}

func (w *world) running(t *testing.T, id int64) map[string]int {
	t.Helper()
	p, err := w.svc.Tenants(context.Background(), id, fleet.StateRunning, page.Request{Limit: page.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	perServer := map[string]int{}
	for _, tn := range p.Items {
		perServer[tn.Server]++
	}
	return perServer
}

func intp(v int) *int { return &v }

// TestConcurrencyIsPerServer starts a run over tenants on two servers:
// each server gets as many tenants at once as the concurrency allows, and
// a canary wave comes first whatever the concurrency.
func TestConcurrencyIsPerServer(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "db-a", "db-a", "db-a", "db-b", "db-b", "db-b")
	ctx := context.Background()
	run, err := w.svc.Create(ctx, fleet.Request{Canary: intp(0), Concurrency: intp(2)})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.running(t, run.ID); got["db-a:5432"] != 2 || got["db-b:5432"] != 2 || len(got) != 2 {
		t.Fatalf("running per server %v, want 2 on each", got)
	}
	if run.Counts.Running != 4 || run.Counts.Pending != 2 || w.jobs(t) != 4 {
		t.Fatalf("counts %+v with %d jobs, want 4 running with a job each", run.Counts, w.jobs(t))
	}
	if _, err := w.svc.Create(ctx, fleet.Request{}); !errors.Is(err, fleet.ErrInProgress) {
		t.Fatalf("a second run: %v, want ErrInProgress", err)
	}
	if _, err := w.svc.Cancel(ctx, run.ID); err != nil {
		t.Fatal(err)
	}

	canary, err := w.svc.Create(ctx, fleet.Request{Canary: intp(2), Concurrency: intp(4)})
	if err != nil {
		t.Fatal(err)
	}
	if canary.Counts.Running != 2 || canary.Counts.Pending != 4 {
		t.Fatalf("canary wave %+v, want the 2 canaries alone", canary.Counts)
	}
}

// TestRestartEnqueuesLostJobsOnce restarts with a run in progress: a
// tenant whose job still waits keeps it, one whose job is marked running
// (lost with a crashed process) gets a second job at once, and a restart
// without migrate-on-start starts no run.
func TestRestartEnqueuesLostJobsOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "db-a", "db-a", "db-a")
	ctx := context.Background()
	run, err := w.svc.Create(ctx, fleet.Request{Canary: intp(0), Concurrency: intp(2)})
	if err != nil {
		t.Fatal(err)
	}
	if w.jobs(t) != 2 {
		t.Fatalf("%d jobs", w.jobs(t))
	}
	if err := w.svc.Start(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := w.jobs(t); n != 2 {
		t.Fatalf("%d jobs after a restart with both jobs waiting, want 2", n)
	}
	// One job was being worked when its process died.
	testenv.Exec(t, w.core, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now()
		WHERE id = (SELECT min(id) FROM river_job WHERE kind = 'migrate_tenant')`)
	if err := w.svc.Start(ctx, true); err != nil {
		t.Fatal(err)
	}
	if n := w.jobs(t); n != 3 {
		t.Fatalf("%d jobs after a restart with one lost, want 3", n)
	}
	runs, err := w.svc.List(ctx, page.Request{})
	if err != nil || len(runs.Items) != 1 || runs.Items[0].ID != run.ID {
		t.Fatalf("runs %+v (%v): a restart started another run while one is in progress", runs.Items, err)
	}
}
