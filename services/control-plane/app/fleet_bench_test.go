package app_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/config"
	"tenantbase/libs/pgcluster"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/provisioning"
	"tenantbase/services/control-plane/internal/secretbox"
)

// noJobs leaves provisioning to the fixture, which calls the provisioner
// itself.
type noJobs struct{}

func (noJobs) EnqueueProvision(context.Context, pgx.Tx, int64) error { return nil }
func (noJobs) EnqueueDelete(context.Context, pgx.Tx, int64) error    { return nil }
func (noJobs) EnqueueMove(context.Context, pgx.Tx, int64) error      { return nil }
func (noJobs) EnqueueRotation(context.Context, pgx.Tx, int64) error  { return nil }

// BenchmarkFleetMigrations times migration runs over 1,000 real tenant
// databases (BENCH_FLEET_TENANTS to change it) on a throwaway cluster of
// their own (max_connections 200): a run with nothing to do, and a
// one-statement migration over 200 and over all tenants at concurrency 1
// and at the default, each undone by a rollback run between measurements.
// The tenants are provisioned by the provisioner itself, 8 at a time,
// rather than through the API and River: the same roles, databases, tags,
// sealed passwords and migrations, faster. Tenant sessions are counted by
// Postgres (pg_stat_database.sessions).
//
//	go test ./app -run '^$' -bench FleetMigrations -benchtime 1x -timeout 30m
func BenchmarkFleetMigrations(b *testing.B) {
	tenants := 1000
	if v, err := strconv.Atoi(os.Getenv("BENCH_FLEET_TENANTS")); err == nil && v >= 200 {
		tenants = v
	}
	ctx := context.Background()
	cluster, err := pgcluster.Start(ctx, filepath.Join(b.TempDir(), "pg"), testenv.FreePort(b))
	if err != nil {
		b.Fatalf("start a throwaway cluster: %v", err)
	}
	b.Cleanup(func() { _ = cluster.Stop() })
	if err := pgcluster.EnsureDatabase(ctx, cluster.DSN("postgres"), "core"); err != nil {
		b.Fatal(err)
	}
	core := cluster.DSN("core")
	if _, err := app.Migrate(ctx, app.Config{DatabaseURL: config.Secret(core)}); err != nil {
		b.Fatal(err)
	}
	testenv.Exec(b, core, `INSERT INTO deployment (id) VALUES ('bench')`)
	key := make([]byte, secretbox.KeySize)
	rand.Read(key)

	started := time.Now()
	provisionFleet(b, core, key, tenants)
	b.Logf("fixture: %d tenants provisioned in %s", tenants, time.Since(started).Round(time.Second))

	cp := cptest.Start(b, cptest.Options{DatabaseURL: core, Configure: func(c *app.Config) {
		c.TenantMigrateOnStart = false
		c.CredentialsKey = config.Secret(base64.StdEncoding.EncodeToString(key))
		c.LogLevel = "warn"
	}, RunOptions: []app.Option{app.WithTenantMigrations(tenantdbtest.NextRelease(b, "bench_note",
		"BEGIN;\nALTER TABLE tenantuser ADD COLUMN bench_note TEXT;\nCOMMIT;\n",
		"BEGIN;\nALTER TABLE tenantuser DROP COLUMN bench_note;\nCOMMIT;\n"))}})
	admin := cp.LoginAdmin(b)
	var ids []int64
	testenv.QueryRow(b, core, `SELECT array_agg(id ORDER BY id) FROM organization`, nil, &ids)
	stats, err := pgx.Connect(ctx, cluster.DSN("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close(ctx)

	type figure struct {
		name     string
		unit     string
		tenants  int
		took     time.Duration
		sessions int64
	}
	var figures []figure
	measure := func(name, unit string, body map[string]any, n int) figure {
		before := tenantSessions(b, stats)
		var run cptest.MigrationRun
		start := time.Now()
		cp.Do(b, http.MethodPost, "/admin/migrations", admin, body).Expect(b, http.StatusAccepted).Decode(b, &run)
		for run.Status != "completed" {
			if run.Status != "running" || time.Since(start) > 20*time.Minute {
				b.Fatalf("%s: run %+v", name, run)
			}
			time.Sleep(20 * time.Millisecond)
			run = getRun(b, cp, admin, run.ID)
		}
		took := time.Since(start)
		if run.Counts.Done+run.Counts.Skipped != n {
			b.Fatalf("%s: counts %+v, want %d tenants", name, run.Counts, n)
		}
		f := figure{name: name, unit: unit, tenants: n, took: took, sessions: tenantSessions(b, stats) - before}
		b.Logf("%-44s %5d tenants  %8s  %6.0f tenants/s  %5d tenant sessions", name, n, took.Round(time.Millisecond),
			float64(n)/took.Seconds(), f.sessions)
		return f
	}
	some := ids[:200]
	b.ResetTimer()
	for range b.N {
		all := strconv.Itoa(tenants)
		figures = append(figures,
			measure("no-op run (all at the target)", "noop-"+all+"-s", map[string]any{"target_version": 2}, tenants),
			measure("one statement, concurrency 1", "c1-200-s", map[string]any{"tenant_ids": some, "concurrency": 1}, len(some)))
		measure("(rollback)", "", map[string]any{"tenant_ids": some, "target_version": 2}, len(some))
		figures = append(figures, measure("one statement, concurrency 4 (default)", "c4-200-s", map[string]any{"tenant_ids": some}, len(some)))
		measure("(rollback)", "", map[string]any{"tenant_ids": some, "target_version": 2}, len(some))
		figures = append(figures, measure("one statement, concurrency 1", "c1-"+all+"-s", map[string]any{"concurrency": 1}, tenants))
		measure("(rollback)", "", map[string]any{"target_version": 2}, tenants)
		figures = append(figures, measure("one statement, concurrency 4 (default)", "c4-"+all+"-s", map[string]any{}, tenants))
	}
	b.StopTimer()
	for _, f := range figures {
		b.ReportMetric(f.took.Seconds(), f.unit)
	}
	b.ReportMetric(float64(figures[0].sessions), "noop-tenant-sessions")
}

// provisionFleet creates n ready tenants with the provisioner, 8 at a time.
func provisionFleet(b *testing.B, core string, key []byte, n int) {
	b.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, core)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	box, err := secretbox.New(key)
	if err != nil {
		b.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte(ownerPassword), bcrypt.MinCost)
	var owner int64
	testenv.QueryRow(b, core, `INSERT INTO coreuser (email, password_hash, is_verified, is_owner)
		VALUES ('bench@example.com', $1, TRUE, TRUE) RETURNING id`, []any{string(hash)}, &owner)
	jobs, err := provisioning.NewJobs(pool, 5)
	if err != nil {
		b.Fatal(err)
	}
	store := organizations.NewStore(pool, noJobs{}, "bench")
	servers := dbservers.New(pool, box, store)
	if _, _, err := servers.EnsureDefault(ctx, dbservers.Registration{AdminURL: core}); err != nil {
		b.Fatal(err)
	}
	prov, err := provisioning.New(pool, store, servers, jobs, box, provisioning.Options{
		Deployment: "bench", CoreDSN: core, ConnectionLimit: 20,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer prov.Close()
	ids := make(chan int64)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range 8 {
		wg.Go(func() {
			for id := range ids {
				if err := prov.Provision(ctx, id); err != nil {
					errs <- fmt.Errorf("tenant %d: %w", id, err)
				}
			}
		})
	}
	for i := range n {
		org, err := store.Create(ctx, fmt.Sprintf("Bench %d", i), owner)
		if err != nil {
			b.Fatal(err)
		}
		ids <- org.ID
	}
	close(ids)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	var ready int
	testenv.QueryRow(b, core, `SELECT count(*) FROM organization WHERE status = 'ready' AND schema_version = $1`,
		[]any{tenantdb.LatestVersion()}, &ready)
	if ready != n {
		b.Fatalf("%d of %d tenants ready at version %d", ready, n, tenantdb.LatestVersion())
	}
}

// tenantSessions is how many sessions tenant databases have had, as
// Postgres counts them, once no tenant session is open any more.
func tenantSessions(b *testing.B, conn *pgx.Conn) int64 {
	b.Helper()
	ctx := context.Background()
	var n, prev int64 = 0, -1
	for n != prev {
		prev = n
		testenv.Eventually(b, time.Minute, func() bool {
			var open int
			err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'tenant\_%'`).Scan(&open)
			return err == nil && open == 0
		}, "no tenant session open")
		// Each backend adds its session to the statistics as it exits.
		time.Sleep(200 * time.Millisecond)
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(sessions), 0)::bigint FROM pg_stat_database
			WHERE datname LIKE 'tenant\_%'`).Scan(&n); err != nil {
			b.Fatal(err)
		}
	}
	return n
}
