package pools

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	poolsCreated    prometheus.Counter
	retired         *prometheus.CounterVec
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
			Help: "Tenant pools closed, by reason: lru_idle (to free budget), event (tenant suspended, deleted or moved), target_changed, unused, shutdown.",
		}, []string{"reason"}),
		idleTrimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pool_idle_conns_trimmed_total",
			Help: "Idle connections closed to free budget for another tenant.",
		}),
		budgetWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pool_budget_waits_total",
			Help: "New connections that had to wait for a budget slot.",
		}),
		acquireTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_pool_acquire_timeouts_total",
			Help: "Requests answered 503 because no connection became free in time.",
		}),
	}
	reg.MustRegister(x.poolsCreated, x.retired, x.idleTrimmed, x.budgetWaits, x.acquireTimeouts, collector{m})
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
		"Most server connections open across all tenants.", nil, nil)
	budgetUsedDesc = prometheus.NewDesc("tenant_pool_budget_used",
		"Server connections currently holding a budget slot.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolsOpenDesc
	ch <- connsDesc
	ch <- budgetLimitDesc
	ch <- budgetUsedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	var acquired, idle, constructing int32
	for _, tp := range c.m.pools {
		st := tp.pool.Stat()
		acquired += st.AcquiredConns()
		idle += st.IdleConns()
		constructing += st.ConstructingConns()
	}
	open := len(c.m.pools)
	c.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(poolsOpenDesc, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(acquired), "acquired")
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(idle), "idle")
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(constructing), "constructing")
	ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(cap(c.m.slots)))
	ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(len(c.m.slots)))
}
