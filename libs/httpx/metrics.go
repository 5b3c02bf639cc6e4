package httpx

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds a service's Prometheus registry and its HTTP metrics.
type Metrics struct {
	Registry *prometheus.Registry
	duration *prometheus.HistogramVec
}

// NewMetrics returns a fresh registry (one per app, so tests can run several
// apps in one process) with Go/process collectors and HTTP request metrics.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "HTTP request duration by method, route and status.",
		Buckets: prometheus.DefBuckets,
	}, []string{"method", "route", "status"})
	reg.MustRegister(d)
	return &Metrics{Registry: reg, duration: d}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

func (m *Metrics) observe(c echo.Context, d time.Duration) {
	route := c.Path()
	if route == "" {
		route = "unmatched"
	}
	m.duration.WithLabelValues(c.Request().Method, route, strconv.Itoa(c.Response().Status)).Observe(d.Seconds())
}
