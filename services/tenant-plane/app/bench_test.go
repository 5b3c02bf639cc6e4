package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/events"
	"tenantbase/libs/tenantapi/tenantapitest"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/tenant-plane/app"
)

// benchConcurrency is how many clients send requests at once.
const benchConcurrency = 16

// figures are the results of one load run.
type figures struct {
	requests  int
	failed    int64
	perSecond float64
	p50, p99  time.Duration
}

// load sends n requests from benchConcurrency clients, request(i) building
// the i-th, and measures each round trip.
func load(b *testing.B, n int, request func(i int) *http.Request) figures {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchConcurrency}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var (
		next    atomic.Int64
		failed  atomic.Int64
		mu      sync.Mutex
		samples = make([]time.Duration, 0, n)
		wg      sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for range benchConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, n/benchConcurrency+1)
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					break
				}
				t0 := time.Now()
				res, err := client.Do(request(i))
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				local = append(local, time.Since(t0))
				if err != nil || res.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(samples)
	f := figures{requests: n, failed: failed.Load(), perSecond: float64(n) / elapsed.Seconds()}
	if len(samples) > 0 {
		f.p50 = samples[len(samples)*50/100]
		f.p99 = samples[min(len(samples)-1, len(samples)*99/100)]
	}
	b.ReportMetric(f.perSecond, "req/s")
	b.ReportMetric(float64(f.p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(f.p99.Microseconds())/1000, "p99-ms")
	if f.failed > 0 {
		b.Errorf("%d of %d requests failed", f.failed, n)
	}
	return f
}

// BenchmarkProfile measures GET /profile on the tenant plane against a bare
// echo + pgx handler running the same query on one tenant database, in the
// same run, and again with requests spread over 200 tenants under a budget
// of 40 connections (round robin, then Zipf-skewed). The 200 tenants are
// real migrated tenant databases made directly (tenantdbtest), served
// through a tenantapitest.Directory: no control plane is involved. Run it with a fixed
// count, and -v for the summary table:
//
//	go test ./app -run '^$' -bench Profile -benchtime 20000x
func BenchmarkProfile(b *testing.B) {
	const tenantCount, budget = 200, 40
	nats := testenv.NATS(b)
	dir := tenantapitest.NewDirectory(b)
	tenantapitest.NewPublisher(b, nats.URL(), events.DefaultChannel) // the stream the plane follows
	began := time.Now()
	orgs := make([]tenant, tenantCount)
	for i := range orgs {
		orgs[i] = addTenant(b, dir, int64(i+1))
	}
	b.Logf("%d tenant databases created in %s", tenantCount, time.Since(began).Round(time.Millisecond))
	tp := startPlane(b, dir.URL, nats.URL(), func(c *app.Config) {
		c.LogLevel = "info"
		c.PoolBudget = budget
	})
	tokens := make([]string, tenantCount)
	for i, org := range orgs {
		tokens[i] = tp.login(b, org.ID, ownerEmail, ownerPassword).AccessToken
	}

	// The baseline: the same query on the first tenant's database, with a
	// pool as large as the plane's per-tenant cap, behind a bare echo.
	first := orgs[0].ID
	var me struct {
		ID int64 `json:"id"`
	}
	tp.call(b, http.MethodGet, "/profile", first, tokens[0], nil).Expect(b, http.StatusOK).Decode(b, &me)
	poolCfg, err := pgxpool.ParseConfig(tenantdbtest.DSN(orgs[0].DB))
	if err != nil {
		b.Fatal(err)
	}
	poolCfg.MaxConns = int32(tp.Config.PoolPerTenantMax)
	pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	e := echo.New()
	e.GET("/profile", func(c echo.Context) error {
		var p struct {
			ID           int64     `json:"id"`
			Email        string    `json:"email"`
			Role         string    `json:"role"`
			IsActive     bool      `json:"is_active"`
			DisplayName  *string   `json:"display_name"`
			Bio          *string   `json:"bio"`
			AvatarURL    *string   `json:"avatar_url"`
			CreatedAt    time.Time `json:"created_at"`
			UpdatedAt    time.Time `json:"updated_at"`
			TokenVersion int       `json:"-"`
		}
		err := pool.QueryRow(c.Request().Context(), `SELECT id, email, role, is_active, display_name, bio, avatar_url, created_at, updated_at, token_version
			FROM tenantuser WHERE id = $1`, me.ID).
			Scan(&p.ID, &p.Email, &p.Role, &p.IsActive, &p.DisplayName, &p.Bio, &p.AvatarURL, &p.CreatedAt, &p.UpdatedAt, &p.TokenVersion)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, p)
	})
	bare := httptest.NewServer(e)
	defer bare.Close()

	profile := func(tenant int) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, tp.PublicURL+"/profile", nil)
		req.Header.Set("X-TENANT", strconv.FormatInt(orgs[tenant].ID, 10))
		req.Header.Set("Authorization", "Bearer "+tokens[tenant])
		return req
	}
	results := map[string]figures{}
	// Each scenario builds the tenant sequence of n requests up front.
	scenarios := []struct {
		name    string
		prepare func(n int) func(i int) *http.Request
	}{
		{"bare-echo-pgx-1-db", func(int) func(int) *http.Request {
			return func(int) *http.Request {
				req, _ := http.NewRequest(http.MethodGet, bare.URL+"/profile", nil)
				return req
			}
		}},
		{"tenant-plane-1-tenant", func(int) func(int) *http.Request {
			return func(int) *http.Request { return profile(0) }
		}},
		// Every tenant in turn: the worst case for an LRU under a budget,
		// nearly every request needs a new server connection.
		{fmt.Sprintf("tenant-plane-%d-tenants-round-robin", tenantCount), func(int) func(int) *http.Request {
			return func(i int) *http.Request { return profile(i % tenantCount) }
		}},
		// A few busy tenants and a long tail, as real traffic tends to be.
		{fmt.Sprintf("tenant-plane-%d-tenants-zipf", tenantCount), func(n int) func(int) *http.Request {
			z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, tenantCount-1)
			seq := make([]int, n)
			for i := range seq {
				seq[i] = int(z.Uint64())
			}
			return func(i int) *http.Request { return profile(seq[i]) }
		}},
	}
	for _, s := range scenarios {
		b.Run(s.name, func(b *testing.B) { results[s.name] = load(b, b.N, s.prepare(b.N)) })
	}
	// For scale: how fast this Postgres sets up sessions, which bounds the
	// plane whenever the tenants in use need more connections than the budget.
	var sessionsPerSecond float64
	b.Run("postgres-new-sessions", func(b *testing.B) {
		sessionsPerSecond = newSessions(b, b.N, tenantdbtest.DSN(orgs[0].DB))
	})

	base := results[scenarios[0].name]
	b.Logf("GET /profile, %d concurrent clients; the plane has a budget of %d server connections (%d per tenant):",
		benchConcurrency, budget, tp.Config.PoolPerTenantMax)
	b.Logf("%-40s %9s %9s %9s %14s", "scenario", "req/s", "p50", "p99", "req/s vs bare")
	for _, s := range scenarios {
		f := results[s.name]
		b.Logf("%-40s %9.0f %9s %9s %13.2fx", s.name, f.perSecond, f.p50.Round(10*time.Microsecond),
			f.p99.Round(10*time.Microsecond), f.perSecond/base.perSecond)
	}
	b.Logf("%-40s %9.0f   (new Postgres sessions, each connect + SELECT 1 + close)", "postgres-new-sessions", sessionsPerSecond)
	var stats struct{ retired, trimmed, waits, timeouts float64 }
	stats.retired = tp.metric(b, `tenant_pools_retired_total{reason="lru_idle"}`)
	stats.trimmed = tp.metric(b, "tenant_pool_idle_conns_trimmed_total")
	stats.waits = tp.metric(b, "tenant_pool_budget_waits_total")
	stats.timeouts = tp.metric(b, "tenant_pool_acquire_timeouts_total")
	raw, _ := json.Marshal(map[string]float64{
		"pools_retired_lru": stats.retired, "idle_conns_trimmed": stats.trimmed,
		"budget_waits": stats.waits, "acquire_timeouts": stats.timeouts,
	})
	b.Logf("pool activity over the whole run: %s", raw)
}

// newSessions opens, uses and closes n sessions from benchConcurrency
// clients and returns sessions per second.
func newSessions(b *testing.B, n int, dsn string) float64 {
	b.Helper()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for range benchConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for int(next.Add(1)) <= n {
				c, err := pgx.Connect(context.Background(), dsn)
				if err != nil {
					b.Error(err)
					return
				}
				var one int
				if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
					b.Error(err)
				}
				c.Close(context.Background())
			}
		}()
	}
	wg.Wait()
	perSecond := float64(n) / time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(perSecond, "sessions/s")
	return perSecond
}
