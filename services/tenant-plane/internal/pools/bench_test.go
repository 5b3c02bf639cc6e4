package pools

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"tenantbase/libs/pgcluster"
)

const (
	// benchWorkers is how many goroutines send requests at once, as
	// wrk -c16 does against the plane.
	benchWorkers = 16
	benchBudget  = 40
	benchPerTen  = 5
	// benchWarmUp requests run before the measured ones.
	benchWarmUp = 4000
)

var (
	benchOnce sync.Once
	benchDSN  string
	benchErr  error
	// benchCluster is kept for its exit guard, which stops it when the
	// process ends.
	benchCluster *pgcluster.Cluster
)

// benchServer is a throwaway cluster for the benchmark, with room for the
// naive design's connections: on the shared server it would take every
// slot other runs need.
func benchServer(b *testing.B) string {
	b.Helper()
	benchOnce.Do(func() { benchDSN, benchCluster, benchErr = startCluster(1100) })
	if benchErr != nil {
		b.Fatalf("throwaway cluster: %v", benchErr)
	}
	return benchDSN
}

// client is what the benchmark drives: the manager, or the naive design.
type client interface {
	run(ctx context.Context, t Target) error
	close()
}

type managed struct{ m *Manager }

func (c managed) run(ctx context.Context, t Target) error {
	l, err := c.m.Acquire(ctx, t)
	if err != nil {
		return err
	}
	defer l.Release()
	_, err = l.Conn().Exec(ctx, "SELECT 1")
	return err
}

func (c managed) close() { c.m.Close() }

// naive is one pgxpool per tenant, created on first use and kept for
// good, with no budget across tenants: the seed's TenantConnectionManager.
type naive struct {
	mu    sync.Mutex
	pools map[int64]*pgxpool.Pool
}

func (c *naive) pool(t Target) (*pgxpool.Pool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.pools[t.TenantID]; p != nil {
		return p, nil
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(t.User, t.Password),
		Host: net.JoinHostPort(t.Host, strconv.Itoa(t.Port)), Path: "/" + t.Database, RawQuery: "sslmode=disable"}
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = benchPerTen
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	c.pools[t.TenantID] = p
	return p, nil
}

func (c *naive) run(ctx context.Context, t Target) error {
	p, err := c.pool(t)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = p.Exec(ctx, "SELECT 1")
	return err
}

func (c *naive) close() {
	for _, p := range c.pools {
		p.Close()
	}
}

// BenchmarkZipf drives Acquire, one statement and Release from 16
// goroutines over 1, 20 (uniform picks) and 200 tenants (Zipf-skewed picks,
// s = 1.1), the manager with a budget of 40 (5 per tenant) beside the
// naive design (one pgxpool of 5 per tenant, no budget), on a throwaway
// cluster. Each run warms up with 4000 requests first; it reports req/s,
// requests per new server session (pg_stat_database.sessions of the tenant
// databases) and the new sessions after the warm-up, the peak of server
// sessions (sampled), and failed requests. Run it with a fixed count:
//
//	go test ./internal/pools -run '^$' -bench Zipf -benchtime 20000x
func BenchmarkZipf(b *testing.B) {
	server := benchServer(b)
	targets := tenants(b, server, 1, 200)
	// One observer counts sessions, another samples them meanwhile.
	obs, sampler := observe(b, server), observe(b, server)
	scenarios := []struct {
		name    string
		tenants int
		zipf    bool
	}{
		{"1-tenant", 1, false},
		{"20-tenants-uniform", 20, false},
		{"200-tenants-zipf", 200, true},
	}
	designs := []struct {
		name string
		open func(b *testing.B) client
	}{
		{"manager", func(b *testing.B) client {
			m, err := New(Options{Budget: benchBudget, PerTenant: benchPerTen, AcquireTimeout: 2 * time.Second,
				MaxConnIdle: 5 * time.Minute, SSLMode: "disable"}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			return managed{m}
		}},
		{"naive", func(*testing.B) client { return &naive{pools: map[int64]*pgxpool.Pool{}} }},
	}
	for _, s := range scenarios {
		dbs := names(targets[:s.tenants]...)
		for _, d := range designs {
			b.Run(fmt.Sprintf("%s/%s", s.name, d.name), func(b *testing.B) {
				seq := picks(s.tenants, s.zipf, benchWarmUp+b.N)
				c := d.open(b)
				stop := sampler.peak(b, 2*time.Millisecond, dbs...)
				drive(c, targets, seq[:benchWarmUp])
				// A session counts in pg_stat_database once it has gone
				// idle for the first time; give the last ones a moment.
				time.Sleep(50 * time.Millisecond)
				before := obs.opened(b, dbs...)
				b.ResetTimer()
				start := time.Now()
				failed := drive(c, targets, seq[benchWarmUp:])
				elapsed := time.Since(start)
				b.StopTimer()
				time.Sleep(50 * time.Millisecond)
				sessions := obs.opened(b, dbs...) - before
				peak := stop()
				c.close()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
				b.ReportMetric(float64(b.N)/float64(max(sessions, 1)), "req/session")
				b.ReportMetric(float64(sessions), "new-sessions")
				b.ReportMetric(float64(peak), "peak-conns")
				b.ReportMetric(float64(failed), "errors")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// picks is the tenant sequence of n requests.
func picks(tenants int, zipf bool, n int) []int {
	r := mrand.New(mrand.NewPCG(1, 2))
	seq := make([]int, n)
	if tenants == 1 {
		return seq
	}
	z := mrand.NewZipf(r, 1.1, 1, uint64(tenants-1))
	for i := range seq {
		if zipf {
			seq[i] = int(z.Uint64())
		} else {
			seq[i] = r.IntN(tenants)
		}
	}
	return seq
}

// drive sends the requests of seq from benchWorkers goroutines and returns
// how many failed.
func drive(c client, targets []Target, seq []int) int64 {
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(seq) {
					return
				}
				if c.run(context.Background(), targets[seq[i]]) != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}
