package pools

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	poolsCreated    prometheus.Counter
	retired         *prometheus.CounterVec
	connsOpened     prometheus.Counter
	idleTrimmed     prometheus.Counter
	budgetWaits     prometheus.Counter
	acquireTimeouts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, m *Manager) metrics {
	x := metrics{
		poolsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pools_created_total",
			Help: "Tenant pools created.",
		}),
		retired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenant_pools_retired_total",
			Help: "Tenant pools closed, by reason: event (tenant suspended, deleted or moved), target_changed (left to drain), unused, shutdown.",
		}, []string{"reason"}),
		connsOpened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pool_connections_opened_total",
			Help: "Server sessions opened to tenant databases.",
		}),
		idleTrimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pool_idle_conns_trimmed_total",
			Help: "Connections closed to free budget for another tenant.",
		}),
		budgetWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pool_budget_waits_total",
			Help: "Times a pool had to wait for a budget slot.",
		}),
		acquireTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pool_acquire_timeouts_total",
			Help: "Requests answered 503 because no connection became free in time.",
		}),
	}
	reg.MustRegister(x.poolsCreated, x.retired, x.connsOpened, x.idleTrimmed, x.budgetWaits, x.acquireTimeouts, collector{m})
	return x
}

// collector reports the pools' state at scrape time.
type collector struct{ m *Manager }

var (
	poolsOpenDesc = prometheus.NewDesc("tenant_pools_open",
		"Tenant pools currently open.", nil, nil)
	connsDesc = prometheus.NewDesc("tenant_pool_connections",
		"Tenant connections by state: acquired (leased to a request), idle, constructing.", []string{"state"}, nil)
	budgetLimitDesc = prometheus.NewDesc("tenant_pool_budget_limit",
		"Most server connections open to one database server across all tenants.", nil, nil)
	budgetUsedDesc = prometheus.NewDesc("tenant_pool_budget_used",
		"Server connections holding a budget slot on the database server that has the most.", nil, nil)
	serverUsedDesc = prometheus.NewDesc("tenant_pool_server_budget_used",
		"Server connections holding a budget slot, by database server (host:port).", []string{"server"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolsOpenDesc
	ch <- connsDesc
	ch <- budgetLimitDesc
	ch <- budgetUsedDesc
	ch <- serverUsedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	var open, acquired, idle, constructing int
	for _, tn := range c.m.tenants {
		for _, p := range tn.pools {
			open++
			acquired += p.leased
			idle += len(p.idle)
			constructing += p.dialing
		}
	}
	used := map[string]int{}
	most := 0
	for addr, srv := range c.m.servers {
		used[addr] = srv.used
		most = max(most, srv.used)
	}
	c.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(poolsOpenDesc, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(acquired), "acquired")
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(idle), "idle")
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(constructing), "constructing")
	ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(c.m.opts.Budget))
	ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(most))
	for addr, n := range used {
		ch <- prometheus.MustNewConstMetric(serverUsedDesc, prometheus.GaugeValue, float64(n), addr)
	}
}
