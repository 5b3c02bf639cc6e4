package app_test

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tenantbase/libs/events"
	"tenantbase/libs/tenantapi/tenantapitest"
	"tenantbase/libs/testenv"
	"tenantbase/services/tenant-plane/app"
)

func TestConnectionBudgetAcrossTenants(t *testing.T) {
	t.Parallel()
	const budget = 3
	nats := testenv.NATS(t)
	dir := tenantapitest.NewDirectory(t)
	tenantapitest.NewPublisher(t, nats.URL(), events.DefaultChannel) // the stream the plane follows
	type served struct {
		id    int64
		token string
	}
	var (
		tenants   []served
		databases []string
	)
	for i := range 3 * budget {
		tn := addTenant(t, dir, int64(i+1))
		databases = append(databases, tn.DB.Name)
		tenants = append(tenants, served{id: tn.ID})
	}
	// Only the plane's sessions may count: the ones that set the tenants
	// up must have left.
	sessions := testenv.Sessions(t)
	testenv.Eventually(t, 30*time.Second, func() bool { return sessions.Count(t, databases...) == 0 },
		"the setup's sessions on the tenant databases end")
	tp := startPlane(t, dir.URL, nats.URL(), func(c *app.Config) {
		c.PoolBudget = budget
		c.PoolPerTenantMax = 2
		c.PoolAcquireWait = 20 * time.Second
	})
	for i := range tenants {
		tenants[i].token = tp.login(t, tenants[i].id, ownerEmail, ownerPassword).AccessToken
	}

	stopSampling := sessions.Peak(t, databases...)

	const workersPerTenant, requestsPerWorker = 3, 10
	var (
		wg       sync.WaitGroup
		answered atomic.Int64
		failures = make(chan string, len(tenants)*workersPerTenant*requestsPerWorker)
	)
	for _, tn := range tenants {
		for range workersPerTenant {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range requestsPerWorker {
					res := tp.call(t, http.MethodGet, "/profile", tn.id, tn.token, nil)
					answered.Add(1)
					if res.Status != http.StatusOK {
						failures <- strconv.Itoa(res.Status) + " " + string(res.Body)
					}
				}
			}()
		}
	}
	wg.Wait()
	peak := stopSampling()
	close(failures)
	for f := range failures {
		t.Errorf("request failed: %s", f)
	}
	if want := int64(len(tenants) * workersPerTenant * requestsPerWorker); answered.Load() != want {
		t.Errorf("answered %d requests, want %d", answered.Load(), want)
	}
	if peak > budget || peak == 0 {
		t.Errorf("peak server sessions on the tenant databases = %d, want 1..%d", peak, budget)
	}
	if n := tp.metric(t, `tenant_pools_retired_total{reason="lru_idle"}`) + tp.metric(t, "tenant_pool_idle_conns_trimmed_total"); n == 0 {
		t.Error("no pool or connection was closed to free budget: the test never reached the budget")
	}
	if used, limit := tp.metric(t, "tenant_pool_budget_used"), tp.metric(t, "tenant_pool_budget_limit"); used > limit || limit != budget {
		t.Errorf("budget metrics: used %v of %v", used, limit)
	}
}
