package deploy_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/config"
	"tenantbase/libs/pgcluster"
	"tenantbase/libs/testenv"
	cpapp "tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// TestPostgresRestartUnderLoad runs both planes on a Postgres of the
// test's own and stops it under a steady load: while it is down both
// planes answer 503 problems (never a 500, never a hang), and once it is
// back they serve again without being restarted.
func TestPostgresRestartUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir, port := t.TempDir(), testenv.FreePort(t)
	cluster, err := pgcluster.Start(ctx, dir, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Stop() })
	if err := pgcluster.EnsureDatabase(ctx, cluster.DSN("postgres"), "core"); err != nil {
		t.Fatal(err)
	}
	// Tenant databases go to the core database's server: this cluster.
	cp := cptest.Start(t, cptest.Options{DatabaseURL: cluster.DSN("core"), Configure: func(c *cpapp.Config) {
		c.TenantDBAdminURL = config.Secret(cluster.DSN("postgres"))
	}})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner-password-1")
	org := cp.CreateReadyOrganization(t, owner, "Acme")
	tp := lcStartPlane(t, cp.InternalURL, cp.NATS.URL())
	tok := tp.login(t, org.ID, owner.Email, "owner-password-1")

	type answer struct {
		status int
		code   string
	}
	var mu sync.Mutex
	seen := map[string]map[answer]int{"control plane": {}, "tenant plane": {}}
	last := map[string]int{}
	record := func(plane string, res *testenv.Response) {
		a := answer{status: res.Status}
		if res.Status != http.StatusOK {
			a.code = res.Problem(t).Code
		}
		mu.Lock()
		defer mu.Unlock()
		seen[plane][a]++
		last[plane] = res.Status
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				record("control plane", cp.Do(t, http.MethodGet, "/auth/me", owner.AccessToken, nil))
				record("tenant plane", tp.call(t, http.MethodGet, "/profile", org.ID, tok, nil))
			}
		})
	}
	both := func(status int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return last["control plane"] == status && last["tenant plane"] == status
		}
	}
	testenv.Eventually(t, 30*time.Second, both(http.StatusOK), "both planes serving")
	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, both(http.StatusServiceUnavailable), "both planes refusing with 503 while Postgres is down")
	restarted, err := pgcluster.Start(ctx, dir, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Stop() })
	testenv.Eventually(t, 60*time.Second, both(http.StatusOK), "both planes serving again without a restart")
	close(stop)
	wg.Wait()

	t.Logf("answers during the run: %v", seen)
	want := map[string]string{"control plane": "database_unavailable", "tenant plane": "tenant_database_unavailable"}
	for plane, answers := range seen {
		for a := range answers {
			if a.status != http.StatusOK && a.status != http.StatusServiceUnavailable {
				t.Errorf("%s answered %d (%s) during the outage; want only 200 and 503", plane, a.status, a.code)
			}
		}
		if answers[answer{http.StatusServiceUnavailable, want[plane]}] == 0 {
			t.Errorf("%s never answered 503 %s: %v", plane, want[plane], answers)
		}
	}
}
