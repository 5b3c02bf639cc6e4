// Package app wires the tenant plane: tenant resolution, per-tenant pools,
// the public API and the internal metrics listener.
package app

import (
	"context"
	"log/slog"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/httpx"
	"tenantbase/libs/problem"
)

// Addrs are the bound addresses of the two listeners.
type Addrs struct {
	Public   string
	Internal string
}

// errorTable maps every domain error of the tenant plane to its problem.
var errorTable = problem.Table{}

// Run serves the tenant plane until ctx is cancelled, then shuts down
// gracefully. ready, when not nil, is called once both listeners are bound.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(Addrs)) error {
	log.Info("starting tenant plane", "config", cfg)
	metrics := httpx.NewMetrics()
	public := httpx.New(httpx.Options{Log: log, Errors: errorTable, Metrics: metrics})
	internal := httpx.New(httpx.Options{Log: log, Errors: errorTable})
	internal.GET("/metrics", echo.WrapHandler(metrics.Handler()))
	public.GET("/health", httpx.Health(cfg.Version))

	pl, err := httpx.Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	il, err := httpx.Listen(cfg.InternalAddr)
	if err != nil {
		pl.Close()
		return err
	}
	addrs := Addrs{Public: pl.Addr().String(), Internal: il.Addr().String()}
	log.Info("tenant plane listening", "public", addrs.Public, "internal", addrs.Internal)
	if ready != nil {
		ready(addrs)
	}
	err = httpx.Serve(ctx, cfg.ShutdownTimeout,
		httpx.Server{Listener: pl, Handler: public},
		httpx.Server{Listener: il, Handler: internal})
	log.Info("tenant plane stopped")
	return err
}
