package tenants

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"testing"
	"time"

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
// resolved tenants in its cache (the whole process, with connections, is
// measured by make bench: P5). go test ./internal/tenants -run '^$' -bench ResolvedTenantsMemory -benchtime 1x
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

		runtime.KeepAlive(r)
		b.ReportMetric(float64(cache)/n*1000/1024, "KiB-cache/1000-tenants")
	}
}
