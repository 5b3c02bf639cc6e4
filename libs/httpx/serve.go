package httpx

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// Server is one listener and the handler it serves.
type Server struct {
	Listener net.Listener
	Handler  http.Handler
}

// Addrs are the bound addresses of a service's public and internal listeners.
type Addrs struct {
	Public   string
	Internal string
}

// Listeners is the public and internal listener pair every service has.
type Listeners struct {
	Public, Internal net.Listener
}

// Listen binds both addresses ("127.0.0.1:0" picks a free port).
func Listen(public, internal string) (Listeners, error) {
	pl, err := net.Listen("tcp", public)
	if err != nil {
		return Listeners{}, err
	}
	il, err := net.Listen("tcp", internal)
	if err != nil {
		pl.Close()
		return Listeners{}, err
	}
	return Listeners{Public: pl, Internal: il}, nil
}

// Addrs are the addresses l is bound to.
func (l Listeners) Addrs() Addrs {
	return Addrs{Public: l.Public.Addr().String(), Internal: l.Internal.Addr().String()}
}

// Serve serves public and internal on l until ctx is cancelled or one
// fails (see Serve).
func (l Listeners) Serve(ctx context.Context, timeout time.Duration, public, internal http.Handler) error {
	return Serve(ctx, timeout, Server{Listener: l.Public, Handler: public}, Server{Listener: l.Internal, Handler: internal})
}

// Serve serves every server until ctx is cancelled or one fails, then shuts
// them all down, letting in-flight requests finish within timeout.
func Serve(ctx context.Context, timeout time.Duration, servers ...Server) error {
	errc := make(chan error, len(servers))
	hs := make([]*http.Server, len(servers))
	for i, s := range servers {
		hs[i] = &http.Server{
			Handler:           s.Handler,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
		}
		go func(h *http.Server, l net.Listener) {
			if err := h.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(hs[i], s.Listener)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, h := range hs {
		if err := h.Shutdown(sctx); err != nil && serveErr == nil {
			serveErr = err
		}
	}
	return serveErr
}

// Health answers GET /health: the process is up.
func Health(version string) echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]any{
			"status":    "ok",
			"timestamp": time.Now().UTC().Format(time.RFC3339Nano),
			"version":   version,
		})
	}
}
