package tenants

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"tenantbase/libs/tenantapi"
)

// staticSource answers every id with a ready tenant, as the control plane
// would, without a network round trip.
type staticSource struct{}

func (staticSource) Tenant(_ context.Context, id int64) (Tenant, error) {
	name := "tenant_prod_" + strconv.FormatInt(id, 10) + "_k3f9x2"
	return Tenant{ID: id, Deployment: "prod", Status: tenantapi.StatusReady, SchemaVersion: 1,
		Database: &tenantapi.Database{Host: "db-" + strconv.FormatInt(id%16, 10) + ".internal", Port: 5432,
			Name: name, User: name, Password: "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"}}, nil
}

// inUse is the live heap plus goroutine stacks (each pgxpool runs one).
func inUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// BenchmarkResolvedTenantsMemory reports what the plane keeps per 1,000
// resolved tenants: their cache entries, and the empty pgxpool of each
// tenant in use (its connections aside, which live on the servers'
// budget). go test ./internal/tenants -run '^$' -bench ResolvedTenantsMemory -benchtime 1x
func BenchmarkResolvedTenantsMemory(b *testing.B) {
	const n = 10_000
	for range b.N {
		before := inUse()
		r, err := NewResolver(staticSource{}, Options{TTL: time.Hour, NegativeTTL: time.Minute, LookupTimeout: time.Second, Size: n, NegativeSize: 100},
			slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for id := int64(1); id <= n; id++ {
			if _, err := r.Resolve(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		cache := inUse() - before

		before = inUse()
		pools := make([]*pgxpool.Pool, 0, n)
		for id := int64(1); id <= n; id++ {
			t, _ := staticSource{}.Tenant(ctx, id)
			cfg, err := pgxpool.ParseConfig("postgres://" + t.Database.User + ":" + t.Database.Password.Reveal() + "@" +
				t.Database.Host + ":5432/" + t.Database.Name + "?sslmode=disable")
			if err != nil {
				b.Fatal(err)
			}
			cfg.MinConns = 0
			p, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			pools = append(pools, p)
		}
		poolBytes := inUse() - before
		for _, p := range pools {
			p.Close()
		}
		runtime.KeepAlive(r)
		b.ReportMetric(float64(cache)/n*1000/1024, "KiB-cache/1000-tenants")
		b.ReportMetric(float64(poolBytes)/n*1000/1024, "KiB-empty-pools/1000-tenants")
	}
}
