// Package ingress routes public requests the way the production ingress
// does, for local runs: no X-TENANT header -> control plane, X-TENANT set ->
// tenant plane. Internal endpoints are never reachable through it, and it
// enforces nginx.conf's rate limits (Limits).
package ingress

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strconv"
	"strings"

	"tenantbase/libs/problem"
)

// TenantHeader selects the tenant plane when it carries a value.
const TenantHeader = "X-TENANT"

// RequestIDHeader is set on requests that arrive without one, so both planes
// log the same id the ingress assigned.
const RequestIDHeader = "X-Request-ID"

// New returns the routing handler. An empty X-TENANT counts as absent, as
// with nginx's $http_x_tenant. Requests over a limit get 429 rate_limited
// with Retry-After and never reach a plane.
func New(controlPlane, tenantPlane *url.URL, lim Limits, log *slog.Logger) http.Handler {
	proxy := func(target *url.URL, name string) *httputil.ReverseProxy {
		return &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(target)
				r.SetXForwarded()
				// As nginx does: the planes trust it from the ingress only.
				r.Out.Header.Set("X-Real-IP", clientAddr(r.In))
				r.Out.Host = r.In.Host
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				log.Error("ingress: upstream unreachable", "upstream", name, "request_id", r.Header.Get(RequestIDHeader), "error", err.Error())
				writeProblem(w, problem.New(http.StatusBadGateway, "upstream_unavailable", name+" is not answering"))
			},
		}
	}
	cp := proxy(controlPlane, "control plane")
	tp := proxy(tenantPlane, "tenant plane")
	limits := newLimits(lim)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isInternal(r.URL.Path) {
			writeProblem(w, problem.New(http.StatusNotFound, "not_found", "no such endpoint"))
			return
		}
		if r.Header.Get(RequestIDHeader) == "" {
			r.Header.Set(RequestIDHeader, newRequestID())
		}
		if ok, wait := limits.admit(r); !ok {
			w.Header().Set(RequestIDHeader, r.Header.Get(RequestIDHeader))
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter(wait)))
			writeProblem(w, problem.New(http.StatusTooManyRequests, "rate_limited", "too many requests; retry after the time in Retry-After"))
			return
		}
		if r.Header.Get(TenantHeader) != "" {
			tp.ServeHTTP(w, r)
			return
		}
		cp.ServeHTTP(w, r)
	})
}

// isInternal matches the cleaned path, so "/a/../internal/x" or
// "//metrics" cannot slip past.
func isInternal(p string) bool {
	p = path.Clean("/" + p)
	return p == "/internal" || strings.HasPrefix(p, "/internal/") || p == "/metrics" || strings.HasPrefix(p, "/metrics/")
}

func writeProblem(w http.ResponseWriter, p *problem.Problem) {
	w.Header().Set("Content-Type", problem.ContentType)
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

func newRequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
