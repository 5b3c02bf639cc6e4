package app_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
)

// TestMoveCrashConverges kills the control plane process (SIGKILL) at
// random moments while it moves tenants to another server, restarts it,
// and checks that every move converges, to the target or back to the
// source: the tenant ready with every row, writable on the server it is
// recorded on, and one copy of its database and role left, there.
func TestMoveCrashConverges(t *testing.T) {
	t.Parallel()
	const orgs, crashes, users = 3, 3, 300
	second := testenv.Cluster(t)
	shared := testenv.PostgresURL(t)
	child := startChildControlPlane(t,
		// Slow steps leave time to be killed in the middle of one.
		"PROVISION_STEP_DELAY=300ms",
		"PROVISION_RETRY_BACKOFF=100ms",
		"JOB_TIMEOUT=10s",
		"JOB_RESCUE_AFTER=10s",
		"MOVE_GRACE_PERIOD=0s",
	)
	core, api := child.Core, child.API
	admin := api.LoginAdmin(t)
	owner := api.SignUpOwner(t, "owner@example.com", ownerPassword)
	var ids []int64
	for i := range orgs {
		ids = append(ids, api.CreateOrganization(t, owner.AccessToken, fmt.Sprintf("Crash %d", i)).ID)
	}
	sums := map[int64]string{}
	for _, id := range ids {
		api.WaitStatus(t, admin, id, "ready", 3*time.Minute)
		testenv.Exec(t, cptest.DSN(api.Tenant(t, id).Database), `INSERT INTO tenantuser (email, password_hash)
			SELECT 'user' || i || '@example.com', 'hash-' || i FROM generate_series(1, $1) i`, users)
		var sum string
		testenv.QueryRow(t, cptest.DSN(api.Tenant(t, id).Database), `SELECT md5(string_agg(id || email || password_hash, ',' ORDER BY id))
			FROM tenantuser`, nil, &sum)
		sums[id] = sum
	}
	target := api.RegisterServer(t, admin, "target", second.DSN("postgres"), 0)
	servers := map[int64]string{1: shared, target.ID: second.DSN("postgres")}
	for _, id := range ids {
		api.Move(t, admin, id, target.ID)
	}

	pool, err := pgx.Connect(context.Background(), core)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	ctx := context.Background()
	started := time.Now()
	for round := 1; round <= crashes; round++ {
		var running, unfinished int
		testenv.Eventually(t, 2*time.Minute, func() bool {
			err := pool.QueryRow(ctx, `SELECT
				count(*) FILTER (WHERE state = 'running' AND attempted_at > $1),
				count(*) FILTER (WHERE state NOT IN ('completed', 'cancelled', 'discarded'))
				FROM river_job WHERE kind = 'move_tenant'`, started).Scan(&running, &unfinished)
			return err == nil && (running > 0 || unfinished == 0)
		}, "a move job running")
		if unfinished == 0 {
			t.Logf("round %d: every move finished before a crash", round)
			break
		}
		time.Sleep(time.Duration(rand.Int64N(int64(1500 * time.Millisecond))))
		child.kill(t)
		var progress []string
		rows, _ := pool.Query(ctx, `SELECT id, status, coalesce(db_server_id, 0), move_frozen_at IS NOT NULL, coalesce(move_error, '')
			FROM organization ORDER BY id`)
		for rows.Next() {
			var id, server int64
			var status, moveErr string
			var frozen bool
			_ = rows.Scan(&id, &status, &server, &frozen, &moveErr)
			progress = append(progress, fmt.Sprintf("%d:%s(server=%d frozen=%v error=%q)", id, status, server, frozen, moveErr))
		}
		rows.Close()
		t.Logf("round %d: killed with %d moves running; %s", round, running, strings.Join(progress, " "))
		started = time.Now()
		child.start(t)
	}

	moved := 0
	for _, id := range ids {
		org := api.WaitStatus(t, admin, id, "ready", 3*time.Minute)
		if org.DBServerID == nil {
			t.Fatalf("organization %d has no server", id)
		}
		here := *org.DBServerID
		if here == target.ID {
			moved++
		} else if org.StatusDetail == nil {
			t.Errorf("organization %d is back on its source without a reason", id)
		}
		tenant := api.Tenant(t, id)
		var sum string
		testenv.QueryRow(t, cptest.DSN(tenant.Database), `SELECT md5(string_agg(id || email || password_hash, ',' ORDER BY id))
			FROM tenantuser`, nil, &sum)
		if sum != sums[id] {
			t.Errorf("organization %d: users changed by the move", id)
		}
		if tenant.Database.Port != map[int64]int{1: testenv.PostgresPort(t), target.ID: second.Port()}[here] {
			t.Errorf("organization %d: the internal API says port %d, but it lives on server %d", id, tenant.Database.Port, here)
		}
		name := tenant.Database.Name
		testenv.Eventually(t, time.Minute, func() bool {
			for server, dsn := range servers {
				var dbs, roles int
				testenv.QueryRow(t, dsn, `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
					(SELECT count(*) FROM pg_roles WHERE rolname = $1)`, []any{name}, &dbs, &roles)
				if want := map[bool]int{true: 1, false: 0}[server == here]; dbs != want || roles != want {
					return false
				}
			}
			return true
		}, fmt.Sprintf("organization %d: one copy, on server %d", id, here))
		db := tenant.Database
		if err := tenantWriteOn(t, servers[here], db.Name, db.User, db.Password.Reveal()); err != nil {
			t.Errorf("organization %d: write on its server: %v", id, err)
		}
	}
	t.Logf("%d of %d tenants moved, the others rolled back", moved, orgs)

	updated := cptest.Subscribe(t, child.NATS.URL(), events.TenantUpdated)
	cptest.OutboxDrained(t, core, 30*time.Second)
	got := updated.Drain(t, 30*time.Second)
	for _, id := range ids {
		e := cptest.OfTenant(got, id)
		if len(e) < 2 || e[len(e)-1].Envelope.Data.Status != "ready" {
			t.Errorf("organization %d: tenant.updated %d times, the last with status %v; want ready last",
				id, len(e), func() string {
					if len(e) == 0 {
						return "none"
					}
					return e[len(e)-1].Envelope.Data.Status
				}())
		}
	}
	if api.Do(t, http.MethodGet, "/health", "", nil).Status != http.StatusOK {
		t.Fatal("control plane unhealthy")
	}
}

// tenantWriteOn writes as the tenant role on database db of the server at server.
func tenantWriteOn(t *testing.T, server, db, user, password string) error {
	t.Helper()
	dsn := testenv.OnDatabaseDSN(server, db)
	dsn = strings.Replace(dsn, "postgres@", user+":"+password+"@", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `UPDATE tenantuser SET bio = 'written' WHERE role = 'admin'`)
	return err
}
