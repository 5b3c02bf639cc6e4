package pools

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"tenantbase/libs/testenv"
)

// databases creates n empty databases and returns a target per database,
// tenant ids 1..n.
func databases(t *testing.T, n int) []Target {
	t.Helper()
	out := make([]Target, n)
	for i := range out {
		cfg, err := pgconn.ParseConfig(testenv.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = Target{TenantID: int64(i + 1), Host: cfg.Host, Port: int(cfg.Port), Database: cfg.Database, User: cfg.User, Password: cfg.Password}
	}
	return out
}

func newManager(t *testing.T, opts Options) *Manager {
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
	if n := testutil.ToFloat64(m.metrics.retired.WithLabelValues("lru_idle")) + testutil.ToFloat64(m.metrics.idleTrimmed); n == 0 {
		t.Error("no pool or idle connection was closed to make room, so the budget was never under pressure")
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
	if got := testutil.ToFloat64(m.metrics.retired.WithLabelValues("lru_idle")); got != 1 {
		t.Errorf("lru_idle retirements = %v, want 1", got)
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

func TestPoolRefusesAConnectionToAnotherDatabase(t *testing.T) {
	targets := databases(t, 2)
	m := newManager(t, Options{Budget: 2, PerTenant: 1, AcquireTimeout: 5 * time.Second})
	cfg, err := m.poolConfig(targets[0])
	if err != nil {
		t.Fatal(err)
	}
	// As if a proxy or a wrong directory record sent the connection elsewhere.
	cfg.ConnConfig.Database = targets[1].Database
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.WithValue(context.Background(), ownerKey{}, &tenantPool{target: targets[0]})
	if _, err := pool.Acquire(ctx); !errors.Is(err, ErrWrongDatabase) {
		t.Fatalf("err = %v, want ErrWrongDatabase", err)
	}
	if n := len(m.slots); n != 0 {
		t.Errorf("budget slots still held after the refused connection: %d", n)
	}
}

func TestChangedTargetReplacesThePool(t *testing.T) {
	targets := databases(t, 2)
	m := newManager(t, Options{Budget: 2, PerTenant: 1, AcquireTimeout: 5 * time.Second})
	admin := testenv.Sessions(t)
	first := targets[0]
	moved := targets[1]
	moved.TenantID = first.TenantID

	l, err := m.Acquire(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	l, err = m.Acquire(context.Background(), moved)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if db := currentDatabase(t, l); db != moved.Database {
		t.Errorf("after the move the tenant is served from %s, want %s", db, moved.Database)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return admin.Count(t, names(first)...) == 0 },
		"the old database's sessions are closed")
}

func TestRetireWaitsForLeases(t *testing.T) {
	targets := databases(t, 1)
	m := newManager(t, Options{Budget: 2, PerTenant: 2, AcquireTimeout: 5 * time.Second})
	admin := testenv.Sessions(t)

	l, err := m.Acquire(context.Background(), targets[0])
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	m.Retire(targets[0].TenantID)
	if db := currentDatabase(t, l); db != targets[0].Database {
		t.Fatalf("leased connection broken by Retire: on %q", db)
	}
	l.Release()
	testenv.Eventually(t, 5*time.Second, func() bool { return admin.Count(t, names(targets...)...) == 0 },
		"the retired pool closes its connection once the lease returns")
	testenv.Eventually(t, 5*time.Second, func() bool { return len(m.slots) == 0 }, "the budget slot is free again")
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
	if got := reported.Load(); got != target.TenantID {
		t.Errorf("OnConnectError heard of tenant %d, want %d", got, target.TenantID)
	}
	if n := len(m.slots); n != 0 {
		t.Errorf("budget slots held after the failed connection: %d", n)
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
