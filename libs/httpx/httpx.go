// Package httpx holds the HTTP plumbing both services share: the echo setup
// (request ids, request-scoped slog loggers, body limit, metrics), the one
// place where errors become problem+json, strict JSON binding, and serving
// listeners with graceful shutdown.
package httpx

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"tenantbase/libs/logctx"
	"tenantbase/libs/problem"
	"tenantbase/libs/reqctx"
)

// MaxBodyBytes bounds every request body; larger bodies get 413.
const MaxBodyBytes = 1 << 20

// HeaderRequestID carries the request id in and out.
const HeaderRequestID = echo.HeaderXRequestID

// Logger returns the request-scoped logger in ctx (it carries request_id,
// and tenant_id where there is one), or slog.Default().
func Logger(ctx context.Context) *slog.Logger { return logctx.From(ctx, slog.Default()) }

// AddLogAttrs adds attributes (such as tenant_id) to the request's logger.
func AddLogAttrs(c echo.Context, args ...any) {
	r := c.Request()
	if !logctx.Add(r.Context(), args...) {
		c.SetRequest(r.WithContext(logctx.With(r.Context(), Logger(r.Context()).With(args...))))
	}
}

// Options configure New.
type Options struct {
	Log     *slog.Logger
	Errors  problem.Table
	Metrics *Metrics
	// TrustedProxies are the peers (the ingress) whose X-Real-IP and
	// X-Forwarded-For name the client; see ClientIP.
	TrustedProxies []netip.Prefix
}

// New returns an echo instance with the shared middleware and error handler.
func New(opts Options) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = ErrorHandler(opts.Errors)
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		Generator: func() string { return uuid.NewString() },
		RequestIDHandler: func(c echo.Context, id string) {
			r := c.Request()
			ctx := logctx.With(r.Context(), opts.Log, "request_id", id)
			ctx = reqctx.With(ctx, reqctx.Info{ID: id, ClientIP: ClientIP(r, opts.TrustedProxies)})
			c.SetRequest(r.WithContext(ctx))
		},
	}))
	e.Use(observe(opts.Metrics))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableErrorHandler: true}))
	e.Use(middleware.BodyLimit(strconv.Itoa(MaxBodyBytes) + "B"))
	return e
}

// observe renders a handler's error first, so that the access log line and
// the metrics see the status that was really sent.
func observe(m *Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			if m != nil {
				m.observe(c, time.Since(start))
			}
			logctx.Line(c.Request().Context(), slog.Default(), slog.LevelInfo, "request",
				slog.String("method", c.Request().Method),
				slog.String("path", c.Request().URL.Path),
				slog.String("route", c.Path()),
				slog.Int("status", c.Response().Status),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			)
			return nil
		}
	}
}

// ErrorHandler is the one place where errors become responses: problems
// and table rules render as problem+json, echo's own errors get stable
// codes, anything else is logged and answered as a plain 500.
func ErrorHandler(table problem.Table) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p, ok := table.Lookup(err)
		if ok && p.Status >= 500 {
			// A mapped outage (a database down, say) is no bug, but still worth a line.
			Logger(c.Request().Context()).Warn("request failed", "code", p.Code, "error", err.Error())
		}
		if !ok {
			p = fromEcho(err)
		}
		if p == nil {
			Logger(c.Request().Context()).Error("internal error", "error", err.Error(),
				"method", c.Request().Method, "path", c.Request().URL.Path)
			p = problem.New(http.StatusInternalServerError, "internal_error", "")
		}
		WriteProblem(c, p)
	}
}

// WriteProblem sends p as application/problem+json.
func WriteProblem(c echo.Context, p *problem.Problem) {
	if ra := p.RetryAfterHeader(); ra != "" {
		c.Response().Header().Set("Retry-After", ra)
	}
	c.Response().Header().Set(echo.HeaderContentType, problem.ContentType)
	c.Response().WriteHeader(p.Status)
	if c.Request().Method == http.MethodHead {
		return
	}
	_ = jsonEncode(c.Response(), p)
}

func fromEcho(err error) *problem.Problem {
	var he *echo.HTTPError
	if !errors.As(err, &he) {
		return nil
	}
	switch he.Code {
	case http.StatusNotFound:
		return problem.New(he.Code, "not_found", "no such resource")
	case http.StatusMethodNotAllowed:
		return problem.New(he.Code, "method_not_allowed", "method not allowed on this resource")
	case http.StatusRequestEntityTooLarge:
		return problem.New(he.Code, "body_too_large", "request body exceeds 1 MiB")
	case http.StatusUnsupportedMediaType:
		return problem.New(he.Code, "unsupported_media_type", "send application/json")
	case http.StatusUnauthorized:
		return problem.New(he.Code, "unauthorized", "missing or invalid credentials")
	case http.StatusForbidden:
		return problem.New(he.Code, "forbidden", "not allowed")
	case http.StatusBadRequest:
		return problem.New(he.Code, "bad_request", "malformed request")
	}
	if he.Code >= 400 && he.Code < 500 {
		return problem.New(he.Code, "request_rejected", http.StatusText(he.Code))
	}
	return nil
}
