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

// Listen opens addr ("127.0.0.1:0" picks a free port).
func Listen(addr string) (net.Listener, error) {
	return net.Listen("tcp", addr)
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
