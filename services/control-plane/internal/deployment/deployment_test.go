package deployment_test

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/pgutil"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
	"tenantbase/services/control-plane/internal/deployment"
)

func coreDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	dsn := testenv.NewDatabase(t)
	if _, err := pgutil.Migrate(dsn, migrations.Core, "core"); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestEnsureGeneratesOnce starts several replicas on a new core database:
// they agree on one random id, kept on every later start.
func TestEnsureGeneratesOnce(t *testing.T) {
	t.Parallel()
	pool := coreDB(t)
	ctx := context.Background()
	ids := make([]string, 5)
	errs := make([]error, 5)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i], errs[i] = deployment.Ensure(ctx, pool, "") })
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("replica %d: %q, %v; replica 0: %q", i, ids[i], errs[i], ids[0])
		}
	}
	if !regexp.MustCompile(`^d[a-z0-9]{7}$`).MatchString(ids[0]) {
		t.Fatalf("generated id %q", ids[0])
	}
	if again, err := deployment.Ensure(ctx, pool, ids[0]); err != nil || again != ids[0] {
		t.Fatalf("restart naming the stored id: %q, %v", again, err)
	}
	if _, err := deployment.Ensure(ctx, pool, "prod"); !errors.Is(err, deployment.ErrMismatch) {
		t.Fatalf("restart with another DEPLOYMENT_ID: %v, want ErrMismatch", err)
	}
}

func TestEnsureStoresTheConfiguredID(t *testing.T) {
	t.Parallel()
	pool := coreDB(t)
	ctx := context.Background()
	if id, err := deployment.Ensure(ctx, pool, "staging"); err != nil || id != "staging" {
		t.Fatalf("first start with DEPLOYMENT_ID=staging: %q, %v", id, err)
	}
	if id, err := deployment.Ensure(ctx, pool, ""); err != nil || id != "staging" {
		t.Fatalf("later start without DEPLOYMENT_ID: %q, %v", id, err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"", true}, {"prod", true}, {"eu1", true}, {"a234567890123456", true},
		{"a2345678901234567", false}, {"1prod", false}, {"Prod", false}, {"pro-d", false}, {"pro_d", false}, {"pr\"od", false},
	} {
		if err := deployment.Validate(tc.id); (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok %v", tc.id, err, tc.ok)
		}
	}
}
