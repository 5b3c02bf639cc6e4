package pools

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"tenantbase/libs/pgcluster"
	"tenantbase/libs/testenv"
)

// tenants creates n tenants on the server at serverDSN, with ids from
// first: each a login role and a database it owns, both dropped when the
// test ends. CREATE DATABASE is slow, so four connections share the work.
func tenants(tb testing.TB, serverDSN string, first int64, n int) []Target {
	tb.Helper()
	cfg, err := pgconn.ParseConfig(serverDSN)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]Target, n)
	for i := range out {
		name := "test_pools_" + randomHex(6)
		// The password is hex: it needs no quoting beyond the literal's.
		out[i] = Target{TenantID: first + int64(i), Host: cfg.Host, Port: int(cfg.Port), Database: name, User: name, Password: randomHex(12)}
	}
	var created atomic.Int64 // tenants [0, created) may exist
	tb.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), serverDSN)
		if err != nil {
			tb.Errorf("drop tenants: %v", err)
			return
		}
		defer admin.Close(context.Background())
		for _, tg := range out[:min(int(created.Load()), n)] {
			name := pgx.Identifier{tg.Database}.Sanitize()
			for _, sql := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "DROP ROLE IF EXISTS " + name} {
				if _, err := admin.Exec(context.Background(), sql); err != nil {
					tb.Errorf("%s: %v", sql, err)
				}
			}
		}
	})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			admin, err := pgx.Connect(ctx, serverDSN)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer admin.Close(ctx)
			for {
				i := int(created.Add(1)) - 1
				if i >= n {
					return
				}
				id := pgx.Identifier{out[i].Database}.Sanitize()
				for _, sql := range []string{"CREATE ROLE " + id + " LOGIN PASSWORD '" + out[i].Password + "'", "CREATE DATABASE " + id + " OWNER " + id} {
					if _, err := admin.Exec(ctx, sql); err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("%s: %w", sql, err))
						mu.Unlock()
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		tb.Fatal(err)
	}
	return out
}

// databases creates n tenants with ids 1..n on the test server.
func databases(t *testing.T, n int) []Target {
	t.Helper()
	return tenants(t, testenv.PostgresURL(t), 1, n)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterBudget is the budget the throwaway cluster has room for.
const clusterBudget = 20

var (
	clusterOnce sync.Once
	clusterDSN  string
	clusterErr  error
	// cluster is kept for its exit guard, which stops it when the test
	// process ends.
	cluster *pgcluster.Cluster
)

// smallServer is a throwaway cluster, shared by the package's tests, whose
// max_connections leaves room for exactly clusterBudget tenant sessions
// next to one observer: a superuser takes an ordinary slot while there is
// one, and the last superuser_reserved_connections (3) are refused to
// everybody else.
func smallServer(tb testing.TB) string {
	tb.Helper()
	clusterOnce.Do(func() { clusterDSN, cluster, clusterErr = startCluster(clusterBudget + 1 + 3) })
	if clusterErr != nil {
		tb.Fatalf("throwaway cluster: %v", clusterErr)
	}
	return clusterDSN
}

func startCluster(maxConnections int) (string, *pgcluster.Cluster, error) {
	dir, err := os.MkdirTemp("", "tenantbase-pools-pg-")
	if err != nil {
		return "", nil, err
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return "", nil, err
	}
	c, err := pgcluster.StartWith(context.Background(), dir, port, map[string]string{
		"max_connections":                strconv.Itoa(maxConnections),
		"superuser_reserved_connections": "3",
		"max_wal_senders":                "0",
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	if err := c.StopOnExit(true); err != nil {
		c.Stop()
		return "", nil, err
	}
	return c.DSN("postgres"), c, nil
}

// observer watches a server through one superuser connection of its own;
// not for concurrent use.
type observer struct{ conn *pgx.Conn }

func observe(tb testing.TB, serverDSN string) *observer {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), serverDSN)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return &observer{conn: conn}
}

// sessions counts the sessions open on the databases.
func (o *observer) sessions(tb testing.TB, databases ...string) int {
	tb.Helper()
	var n int
	if err := o.conn.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1)`, databases).Scan(&n); err != nil {
		tb.Fatalf("count sessions: %v", err)
	}
	return n
}

// opened is how many sessions the databases have had
// (pg_stat_database.sessions, counted when a session starts).
func (o *observer) opened(tb testing.TB, databases ...string) int64 {
	tb.Helper()
	var n int64
	if err := o.conn.QueryRow(context.Background(),
		`SELECT coalesce(sum(sessions), 0)::bigint FROM pg_stat_database WHERE datname = ANY($1)`, databases).Scan(&n); err != nil {
		tb.Fatalf("count opened sessions: %v", err)
	}
	return n
}

// peak counts the sessions on the databases over and over, every pause,
// until stop is called, which returns the highest count seen.
func (o *observer) peak(tb testing.TB, pause time.Duration, databases ...string) (stop func() int) {
	tb.Helper()
	var (
		highest = o.sessions(tb, databases...)
		done    = make(chan struct{})
		sampled = make(chan struct{})
	)
	go func() {
		defer close(sampled)
		for {
			select {
			case <-done:
				return
			case <-time.After(pause):
			}
			var n int
			if err := o.conn.QueryRow(context.Background(),
				`SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1)`, databases).Scan(&n); err != nil {
				tb.Errorf("count sessions: %v", err)
				return
			}
			highest = max(highest, n)
		}
	}()
	return func() int {
		close(done)
		<-sampled
		return highest
	}
}

func newManager(t testing.TB, opts Options) *Manager {
	t.Helper()
	if opts.MaxConnIdle == 0 {
		opts.MaxConnIdle = time.Minute
	}
	if opts.SSLMode == "" {
		opts.SSLMode = "disable"
	}
	m, err := New(opts, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// names lists the targets' databases.
func names(targets ...Target) []string {
	out := make([]string, len(targets))
	for i, tg := range targets {
		out[i] = tg.Database
	}
	return out
}

func currentDatabase(t *testing.T, l *Lease) string {
	t.Helper()
	var db string
	if err := l.Conn().QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	return db
}

func backendPID(t *testing.T, m *Manager, tg Target) uint32 {
	t.Helper()
	l, err := m.Acquire(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	return l.Conn().PgConn().PID()
}

// slotsUsed is the budget held on tg's server.
func slotsUsed(m *Manager, tg Target) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	srv := m.serverLocked(tg)
	return srv.used
}

func retirements(m *Manager) float64 {
	var n float64
	for _, reason := range []string{"event", "target_changed", "unused", "shutdown"} {
		n += testutil.ToFloat64(m.metrics.retired.WithLabelValues(reason))
	}
	return n
}

// load runs workers goroutines of requests each, every request picking
// a target with pick and running one short statement, and returns the
// failures.
func load(m *Manager, targets []Target, workers, requests int, pick func(r *mrand.Rand) int) []error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(uint64(w), 7))
			for range requests {
				tg := targets[pick(r)]
				l, err := m.Acquire(context.Background(), tg)
				if err == nil {
					_, err = l.Conn().Exec(context.Background(), "SELECT 1")
					l.Release()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errs
}

func TestBudgetIsNeverExceeded(t *testing.T) {
	const budget = 3
	targets := databases(t, 3*budget)
	m := newManager(t, Options{Budget: budget, PerTenant: 2, AcquireTimeout: 20 * time.Second})
	stopSampling := testenv.Sessions(t).Peak(t, names(targets...)...)

	var wg sync.WaitGroup
	errs := make(chan error, len(targets)*4*10)
	for _, tg := range targets {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					l, err := m.Acquire(context.Background(), tg)
					if err != nil {
						errs <- err
						continue
					}
					_, err = l.Conn().Exec(context.Background(), "SELECT pg_sleep(0.002)")
					l.Release()
					if err != nil {
						errs <- err
					}
				}
			}()
		}
	}
	wg.Wait()
	peak := stopSampling()
	close(errs)
	for err := range errs {
		t.Errorf("request failed: %v", err)
	}
	if peak > budget || peak == 0 {
		t.Errorf("peak sessions on tenant databases = %d, want 1..%d", peak, budget)
	}
	if n := testutil.ToFloat64(m.metrics.idleTrimmed); n == 0 {
		t.Error("no connection was closed to make room, so the budget was never under pressure")
	}
}

// The budget is a hard cap that the server itself checks: with room for
// exactly the budget, any session beyond it would be refused, and the
// request would fail with ErrUnavailable.
func TestBudgetHoldsOnAServerWithRoomForExactlyTheBudget(t *testing.T) {
	server := smallServer(t)
	targets := tenants(t, server, 1, 2*clusterBudget)
	obs := observe(t, server)

	t.Run("skewed load over twice as many tenants", func(t *testing.T) {
		m := newManager(t, Options{Budget: clusterBudget, PerTenant: 5, AcquireTimeout: 20 * time.Second})
		stop := obs.peak(t, 0, names(targets...)...)
		zipf := func(r *mrand.Rand) int { return int(mrand.NewZipf(r, 1.1, 1, uint64(len(targets)-1)).Uint64()) }
		errs := load(m, targets, 2*clusterBudget, 25, zipf)
		peak := stop()
		for _, err := range errs {
			t.Errorf("request failed: %v", err)
		}
		if peak > clusterBudget || peak == 0 {
			t.Errorf("peak sessions = %d, want 1..%d", peak, clusterBudget)
		}
		m.Close()
	})

	t.Run("the budget fills the server and one more session is refused", func(t *testing.T) {
		m := newManager(t, Options{Budget: clusterBudget, PerTenant: 5, AcquireTimeout: 300 * time.Millisecond})
		var held []*Lease
		defer func() {
			for _, l := range held {
				l.Release()
			}
		}()
		for _, tg := range targets[:clusterBudget] {
			l, err := m.Acquire(context.Background(), tg)
			if err != nil {
				t.Fatalf("lease %d of the budget: %v", len(held)+1, err)
			}
			held = append(held, l)
		}
		if _, err := m.Acquire(context.Background(), targets[clusterBudget]); !errors.Is(err, ErrBusy) {
			t.Fatalf("acquire beyond the budget: err = %v, want ErrBusy", err)
		}
		extra := targets[clusterBudget]
		cfg, err := pgx.ParseConfig(server)
		if err != nil {
			t.Fatal(err)
		}
		cfg.User, cfg.Password, cfg.Database = extra.User, extra.Password, extra.Database
		c, err := pgx.ConnectConfig(context.Background(), cfg)
		var pgErr *pgconn.PgError
		if err == nil {
			c.Close(context.Background())
			t.Fatal("the server accepted a session beyond the budget: the test server leaves too much room")
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
			t.Fatalf("session beyond the budget: %v, want SQLSTATE 53300 (too many connections)", err)
		}
	})
}

func TestBudgetIsPerServer(t *testing.T) {
	const budget = 3
	shared := databases(t, budget+1)
	other := tenants(t, smallServer(t), 100, budget)
	m := newManager(t, Options{Budget: budget, PerTenant: 1, AcquireTimeout: 300 * time.Millisecond})

	var held []*Lease
	defer func() {
		for _, l := range held {
			l.Release()
		}
	}()
	hold := func(tg Target) {
		t.Helper()
		l, err := m.Acquire(context.Background(), tg)
		if err != nil {
			t.Fatalf("tenant %d on %s:%d: %v", tg.TenantID, tg.Host, tg.Port, err)
		}
		held = append(held, l)
	}
	for _, tg := range shared[:budget] {
		hold(tg)
	}
	// The shared server's budget is all leased; the other server's is untouched.
	for _, tg := range other {
		hold(tg)
	}
	if _, err := m.Acquire(context.Background(), shared[budget]); !errors.Is(err, ErrBusy) {
		t.Fatalf("acquire beyond the shared server's budget: err = %v, want ErrBusy", err)
	}
	if a, b := slotsUsed(m, shared[0]), slotsUsed(m, other[0]); a != budget || b != budget {
		t.Errorf("slots used: %d on the shared server, %d on the other; want %d each", a, b, budget)
	}
	if n := observe(t, smallServer(t)).sessions(t, names(other...)...); n != budget {
		t.Errorf("sessions on the other server = %d, want %d", n, budget)
	}
	if n := testenv.Sessions(t).Count(t, names(shared...)...); n != budget {
		t.Errorf("sessions on the shared server = %d, want %d", n, budget)
	}
}

// The case the budget is for: the tenants in use fit, with two connections
// each. Once every tenant has a connection, none opens another session,
// and no pool is closed or created again.
func TestNoThrashingWhenTheWorkingSetFits(t *testing.T) {
	const tenantCount = clusterBudget / 2
	server := smallServer(t)
	targets := tenants(t, server, 1, tenantCount)
	obs := observe(t, server)
	m := newManager(t, Options{Budget: clusterBudget, PerTenant: 5, AcquireTimeout: 20 * time.Second})
	uniform := func(r *mrand.Rand) int { return r.IntN(tenantCount) }
	workers := tenantCount * 8 / 10

	for _, err := range load(m, targets, workers, 50, uniform) {
		t.Fatalf("warm-up request failed: %v", err)
	}
	before := obs.opened(t, names(targets...)...)
	const requests = 300
	stop := obs.peak(t, 0, names(targets...)...)
	errs := load(m, targets, workers, requests, uniform)
	peak := stop()
	for _, err := range errs {
		t.Errorf("request failed: %v", err)
	}
	newSessions := obs.opened(t, names(targets...)...) - before
	if total := int64(workers * requests); newSessions*100 > total {
		t.Errorf("%d new sessions for %d requests after warm-up, want at most one per 100", newSessions, total)
	}
	if created := testutil.ToFloat64(m.metrics.poolsCreated); created != tenantCount {
		t.Errorf("pools created = %v, want one per tenant (%d)", created, tenantCount)
	}
	if n := retirements(m); n != 0 {
		t.Errorf("pools retired = %v, want 0", n)
	}
	if peak > clusterBudget {
		t.Errorf("peak sessions = %d, over the budget of %d", peak, clusterBudget)
	}
}

// A tenant without a connection takes the one of the tenant with the
// lowest request rate, not the one used least recently.
func TestFrequentTenantKeepsItsConnection(t *testing.T) {
	targets := databases(t, 3)
	hot, cold, newcomer := targets[0], targets[1], targets[2]
	m := newManager(t, Options{Budget: 2, PerTenant: 1, AcquireTimeout: 5 * time.Second})
	admin := testenv.Sessions(t)

	pid := backendPID(t, m, hot)
	for range 20 {
		backendPID(t, m, hot)
	}
	backendPID(t, m, cold)
	l, err := m.Acquire(context.Background(), newcomer)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	testenv.Eventually(t, 5*time.Second, func() bool { return admin.Count(t, cold.Database) == 0 },
		"the rarely used tenant's connection is the one closed")
	if got := backendPID(t, m, hot); got != pid {
		t.Errorf("the busy tenant's connection was replaced (backend %d, was %d)", got, pid)
	}
}

func TestAcquireFailsFastWhenTheBudgetIsHeld(t *testing.T) {
	targets := databases(t, 2)
	a, b := targets[0], targets[1]
	m := newManager(t, Options{Budget: 1, PerTenant: 1, AcquireTimeout: 200 * time.Millisecond})
	admin := testenv.Sessions(t)

	held, err := m.Acquire(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Acquire(ctx, b); !errors.Is(err, ErrBusy) {
		t.Fatalf("acquire while the budget is leased elsewhere: err = %v, want ErrBusy", err)
	}
	if got := testutil.ToFloat64(m.metrics.acquireTimeouts); got != 1 {
		t.Errorf("acquire timeouts metric = %v, want 1", got)
	}

	held.Release()
	l, err := m.Acquire(ctx, b)
	if err != nil {
		t.Fatalf("acquire after the other tenant's lease returned: %v", err)
	}
	defer l.Release()
	if db := currentDatabase(t, l); db != b.Database {
		t.Errorf("connected to %s, want %s", db, b.Database)
	}
	if n := admin.Count(t, names(a)...); n != 0 {
		t.Errorf("sessions on the evicted tenant's database = %d, want 0", n)
	}
	if got := testutil.ToFloat64(m.metrics.idleTrimmed); got != 1 {
		t.Errorf("connections taken = %v, want 1", got)
	}
	if n := retirements(m); n != 0 {
		t.Errorf("pools retired = %v, want 0: a connection is taken, not a pool", n)
	}
}

func TestIdleConnectionOfABusyPoolIsTrimmed(t *testing.T) {
	targets := databases(t, 2)
	a, b := targets[0], targets[1]
	m := newManager(t, Options{Budget: 2, PerTenant: 2, AcquireTimeout: 5 * time.Second})
	admin := testenv.Sessions(t)

	a1, err := m.Acquire(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Release()
	a2, err := m.Acquire(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	a2.Release()

	l, err := m.Acquire(context.Background(), b)
	if err != nil {
		t.Fatalf("acquire with an idle connection of another tenant to spare: %v", err)
	}
	defer l.Release()
	if got := testutil.ToFloat64(m.metrics.idleTrimmed); got != 1 {
		t.Errorf("trimmed idle connections = %v, want 1", got)
	}
	if db := currentDatabase(t, a1); db != a.Database {
		t.Errorf("the busy tenant's lease now on %s, want %s", db, a.Database)
	}
	if n := admin.Count(t, names(targets...)...); n != 2 {
		t.Errorf("sessions = %d, want 2", n)
	}
}

// A tenant whose requests queue on its one connection takes another
// tenant's connection that nobody has used for unusedAfter at once, not
// only after its requests have waited growAfter (here a minute): a busy
// tenant is not kept to the connections it had when the budget filled.
func TestQueueingTenantTakesAnUnusedConnection(t *testing.T) {
	targets := databases(t, 2)
	busy, quiet := targets[0], targets[1]
	m := newManager(t, Options{Budget: 2, PerTenant: 2, AcquireTimeout: 10 * time.Minute})
	m.unusedAfter = 100 * time.Millisecond
	admin := testenv.Sessions(t)

	backendPID(t, m, quiet)
	first, err := m.Acquire(context.Background(), busy)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	time.Sleep(2 * m.unusedAfter)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second, err := m.Acquire(ctx, busy)
	if err != nil {
		t.Fatalf("second connection for the busy tenant, with the quiet tenant's unused: %v", err)
	}
	defer second.Release()
	if n := admin.Count(t, quiet.Database); n != 0 {
		t.Errorf("sessions on the quiet tenant's database = %d, want 0", n)
	}
	if n := admin.Count(t, busy.Database); n != 2 {
		t.Errorf("sessions on the busy tenant's database = %d, want 2", n)
	}
}

// A connection used a moment ago is not taken that way: the queueing
// tenant waits for its own connection.
func TestQueueingTenantLeavesARecentlyUsedConnection(t *testing.T) {
	targets := databases(t, 2)
	busy, quiet := targets[0], targets[1]
	m := newManager(t, Options{Budget: 2, PerTenant: 2, AcquireTimeout: 10 * time.Minute})
	m.unusedAfter = time.Minute
	admin := testenv.Sessions(t)

	backendPID(t, m, quiet)
	first, err := m.Acquire(context.Background(), busy)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		first.Release()
		close(released)
	}()
	second, err := m.Acquire(context.Background(), busy)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Release()
	<-released
	if n := admin.Count(t, quiet.Database); n != 1 {
		t.Errorf("sessions on the quiet tenant's database = %d, want its 1 kept", n)
	}
	if got := testutil.ToFloat64(m.metrics.idleTrimmed); got != 0 {
		t.Errorf("connections taken = %v, want 0", got)
	}
}

// A tenant whose requests keep waiting for its one connection takes the
// connection of a tenant that uses its own less.
func TestWaitingTenantTakesAQuieterTenantsConnection(t *testing.T) {
	targets := databases(t, 2)
	busy, quiet := targets[0], targets[1]
	m := newManager(t, Options{Budget: 2, PerTenant: 2, AcquireTimeout: 3 * time.Second})
	admin := testenv.Sessions(t)

	backendPID(t, m, quiet)
	for range 10 {
		backendPID(t, m, busy)
	}
	first, err := m.Acquire(context.Background(), busy)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	second, err := m.Acquire(context.Background(), busy)
	if err != nil {
		t.Fatalf("second connection for the busy tenant: %v", err)
	}
	defer second.Release()
	if n := admin.Count(t, quiet.Database); n != 0 {
		t.Errorf("sessions on the quiet tenant's database = %d, want 0", n)
	}
	if got := testutil.ToFloat64(m.metrics.idleTrimmed); got != 1 {
		t.Errorf("connections taken = %v, want 1", got)
	}
}

func TestPoolRefusesAConnectionToAnotherDatabase(t *testing.T) {
	targets := databases(t, 2)
	m := newManager(t, Options{Budget: 2, PerTenant: 1, AcquireTimeout: 5 * time.Second})
	m.mu.Lock()
	p, err := m.poolLocked(targets[0], time.Now())
	if err == nil {
		// As if a proxy or a wrong directory record sent the connection elsewhere.
		p.cfg.Database = targets[1].Database
	}
	m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Acquire(context.Background(), targets[0]); !errors.Is(err, ErrWrongDatabase) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrWrongDatabase and ErrUnavailable", err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return slotsUsed(m, targets[0]) == 0 },
		"the refused connection gives its slot back")
}

// A new password or a new home for a tenant: requests that carry the old
// target, and leases on it, finish there; requests with the new one go to
// the new target; none fails; the old target's sessions end.
func TestTargetChangeUnderLoad(t *testing.T) {
	cases := []struct {
		name string
		// change gives the tenant's new target: relocation moves it to
		// another database, rotation gives it other credentials.
		change func(old, other Target) Target
	}{
		{"relocation", func(old, other Target) Target { other.TenantID = old.TenantID; return other }},
		{"credential rotation", func(old, other Target) Target {
			old.User, old.Password = other.User, other.Password
			return old
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			targets := databases(t, 2)
			old := targets[0]
			next := tc.change(old, targets[1])
			m := newManager(t, Options{Budget: 4, PerTenant: 2, AcquireTimeout: 10 * time.Second})

			inFlight, err := m.Acquire(context.Background(), old)
			if err != nil {
				t.Fatal(err)
			}
			var current atomic.Pointer[Target]
			current.Store(&old)
			var (
				wg       sync.WaitGroup
				served   atomic.Int64
				switched = make(chan struct{})
				errs     = make(chan error, 1000)
			)
			for range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 60; i++ {
						if i == 30 {
							<-switched
						}
						tg := *current.Load()
						l, err := m.Acquire(context.Background(), tg)
						if err != nil {
							errs <- err
							continue
						}
						var db, user string
						err = l.Conn().QueryRow(context.Background(), "SELECT current_database(), current_user").Scan(&db, &user)
						l.Release()
						switch {
						case err != nil:
							errs <- err
						case db != tg.Database || user != tg.User:
							errs <- errors.New("served as " + user + " on " + db + ", want " + tg.User + " on " + tg.Database)
						default:
							served.Add(1)
						}
					}
				}()
			}
			current.Store(&next)
			close(switched)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("request failed: %v", err)
			}
			var db, user string
			if err := inFlight.Conn().QueryRow(context.Background(), "SELECT current_database(), current_user").Scan(&db, &user); err != nil || db != old.Database || user != old.User {
				t.Errorf("the lease taken before the change: %s on %s, %v", user, db, err)
			}
			inFlight.Release()

			l, err := m.Acquire(context.Background(), next)
			if err != nil {
				t.Fatal(err)
			}
			if got := l.Conn().Config().User; got != next.User {
				t.Errorf("after the change, served as %s, want %s", got, next.User)
			}
			l.Release()
			testenv.Eventually(t, 5*time.Second, func() bool {
				n := 0
				for _, s := range activity(t, old.Database) {
					if s == old.User {
						n++
					}
				}
				return n == 0
			}, "the old target's sessions end")
		})
	}
}

// activity lists the users of the sessions on database db.
func activity(t *testing.T, db string) []string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), "SELECT usename FROM pg_stat_activity WHERE datname = $1", db)
	if err != nil {
		t.Fatal(err)
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return users
}

func TestRetireWaitsForLeases(t *testing.T) {
	targets := databases(t, 1)
	m := newManager(t, Options{Budget: 1, PerTenant: 1, AcquireTimeout: 5 * time.Second})
	admin := testenv.Sessions(t)

	l, err := m.Acquire(context.Background(), targets[0])
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	waited := make(chan error, 1)
	go func() {
		w, err := m.Acquire(context.Background(), targets[0])
		if err == nil {
			w.Release()
		}
		waited <- err
	}()
	// The second request waits for the only connection before the event.
	testenv.Eventually(t, 5*time.Second, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		tn := m.tenants[targets[0].TenantID]
		return tn != nil && len(tn.pools[0].waiters) == 1
	}, "a second request waits")
	m.Retire(targets[0].TenantID)
	if db := currentDatabase(t, l); db != targets[0].Database {
		t.Fatalf("leased connection broken by Retire: on %q", db)
	}
	l.Release()
	if err := <-waited; err != nil {
		t.Errorf("the request waiting on the retired pool: %v", err)
	}
	if got := testutil.ToFloat64(m.metrics.retired.WithLabelValues("event")); got != 1 {
		t.Errorf("retired by event = %v, want 1", got)
	}
	m.Retire(targets[0].TenantID)
	testenv.Eventually(t, 5*time.Second, func() bool { return admin.Count(t, names(targets...)...) == 0 },
		"the retired pool closes its connection once the lease returns")
	testenv.Eventually(t, 5*time.Second, func() bool { return slotsUsed(m, targets[0]) == 0 }, "the budget slot is free again")
}

func TestUnreachableDatabase(t *testing.T) {
	target := databases(t, 1)[0]
	target.Database = "no_such_database_for_pools_test"
	var reported atomic.Int64
	m := newManager(t, Options{Budget: 1, PerTenant: 1, AcquireTimeout: 5 * time.Second,
		OnConnectError: func(id int64, err error) { reported.Store(id) }})

	if _, err := m.Acquire(context.Background(), target); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return reported.Load() == target.TenantID },
		"OnConnectError hears of the tenant")
	testenv.Eventually(t, 5*time.Second, func() bool { return slotsUsed(m, target) == 0 },
		"the failed connection gives its slot back")
}

// With several requests waiting, dials overlap: each failure must still
// reach the waiting requests once no connection is open, rather than
// start another dial while the others are in flight, in a loop that lasts
// until every request times out (seen with a replica holding an old
// password after a rotation).
func TestUnreachableDatabaseWithSeveralWaiting(t *testing.T) {
	target := databases(t, 1)[0]
	target.Database = "no_such_database_for_pools_test"
	m := newManager(t, Options{Budget: 40, PerTenant: 5, AcquireTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			l, err := m.Acquire(ctx, target)
			if err == nil {
				l.Release()
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; !errors.Is(err, ErrUnavailable) {
			t.Errorf("err = %v, want ErrUnavailable", err)
		}
	}
}

func TestAcquireHonoursTheCallersContext(t *testing.T) {
	target := databases(t, 1)[0]
	m := newManager(t, Options{Budget: 1, PerTenant: 1, AcquireTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Acquire(ctx, target); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestClosedManager(t *testing.T) {
	target := databases(t, 1)[0]
	m := newManager(t, Options{Budget: 1, PerTenant: 1, AcquireTimeout: time.Second})
	m.Close()
	if _, err := m.Acquire(context.Background(), target); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

func TestDBReleasesEveryLease(t *testing.T) {
	target := databases(t, 1)[0]
	// One connection in all: any statement that kept its lease would make
	// the next one time out.
	m := newManager(t, Options{Budget: 1, PerTenant: 1, AcquireTimeout: 2 * time.Second})
	db := m.DB(target)
	ctx := context.Background()

	steps := []struct {
		name string
		run  func() error
	}{
		{"exec", func() error {
			_, err := db.Exec(ctx, "CREATE TABLE item (id int PRIMARY KEY)")
			return err
		}},
		{"transaction committed", func() error {
			return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO item VALUES (1), (2), (3)")
				return err
			})
		}},
		{"transaction rolled back", func() error {
			err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO item VALUES (4)"); err != nil {
					return err
				}
				return errors.New("abort")
			})
			if err == nil || err.Error() != "abort" {
				return errors.New("transaction did not report its error")
			}
			return nil
		}},
		{"query read to the end", func() error {
			rows, err := db.Query(ctx, "SELECT id FROM item ORDER BY id")
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
			if err != nil {
				return err
			}
			if len(ids) != 3 {
				return errors.New("rolled-back row is visible or rows are missing")
			}
			return nil
		}},
		{"query closed early", func() error {
			rows, err := db.Query(ctx, "SELECT id FROM item ORDER BY id")
			if err != nil {
				return err
			}
			rows.Next()
			rows.Close()
			return nil
		}},
		{"query row", func() error {
			var n int
			return db.QueryRow(ctx, "SELECT count(*) FROM item").Scan(&n)
		}},
		{"query row that fails", func() error {
			var n int
			if err := db.QueryRow(ctx, "SELECT nope FROM item").Scan(&n); err == nil {
				return errors.New("bad query did not fail")
			}
			return nil
		}},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if _, err := db.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("statement after %s: %v (its lease was kept)", s.name, err)
		}
	}
}
