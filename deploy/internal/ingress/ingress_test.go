package ingress_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"tenantbase/deploy/internal/ingress"
)

type seen struct {
	Plane     string `json:"plane"`
	Path      string `json:"path"`
	RequestID string `json:"request_id"`
	Tenant    string `json:"tenant"`
	Forwarded string `json:"forwarded"`
}

func upstream(t *testing.T, plane string) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{
			Plane:     plane,
			Path:      r.URL.RequestURI(),
			RequestID: r.Header.Get("X-Request-ID"),
			Tenant:    r.Header.Get("X-TENANT"),
			Forwarded: r.Header.Get("X-Forwarded-For"),
		})
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRouting(t *testing.T) {
	h := ingress.New(upstream(t, "control"), upstream(t, "tenant"), ingress.DefaultLimits, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	defer srv.Close()

	tests := []struct {
		name          string
		method        string
		path          string
		header        map[string]string
		wantStatus    int
		wantPlane     string
		wantRequestID string
	}{
		{name: "no tenant header goes to the control plane", method: "GET", path: "/health?x=1", wantStatus: 200, wantPlane: "control"},
		{name: "tenant header goes to the tenant plane", method: "POST", path: "/auth/login", header: map[string]string{"X-TENANT": "42"}, wantStatus: 200, wantPlane: "tenant"},
		{name: "invalid tenant header still goes to the tenant plane", method: "GET", path: "/profile", header: map[string]string{"X-TENANT": "abc"}, wantStatus: 200, wantPlane: "tenant"},
		{name: "empty tenant header counts as absent", method: "GET", path: "/health", header: map[string]string{"X-TENANT": ""}, wantStatus: 200, wantPlane: "control"},
		{name: "request id is kept", method: "GET", path: "/health", header: map[string]string{"X-Request-ID": "given-id"}, wantStatus: 200, wantPlane: "control", wantRequestID: "given-id"},
		{name: "internal api is not routed", method: "GET", path: "/internal/tenants/1", wantStatus: 404},
		{name: "internal api with tenant header is not routed", method: "GET", path: "/internal/tenants/1", header: map[string]string{"X-TENANT": "1"}, wantStatus: 404},
		{name: "internal api behind dot segments is not routed", method: "GET", path: "/auth/../internal/tenants/1", wantStatus: 404},
		{name: "internal root is not routed", method: "GET", path: "/internal", wantStatus: 404},
		{name: "metrics are not routed", method: "GET", path: "/metrics", wantStatus: 404},
		{name: "metrics with doubled slash are not routed", method: "GET", path: "//metrics", wantStatus: 404},
		{name: "internal-looking public path is routed", method: "GET", path: "/internals", wantStatus: 200, wantPlane: "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Keep dot segments and doubled slashes as sent.
			req.URL.Opaque = "//" + req.URL.Host + strings.SplitN(tt.path, "?", 2)[0]
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", res.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus == http.StatusNotFound {
				var p struct {
					Status int    `json:"status"`
					Code   string `json:"code"`
				}
				if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("content type = %q, want application/problem+json", ct)
				}
				if err := json.Unmarshal(body, &p); err != nil || p.Status != 404 || p.Code != "not_found" {
					t.Errorf("body %s is not a not_found problem (%v)", body, err)
				}
				return
			}
			var got seen
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("upstream body %s: %v", body, err)
			}
			if got.Plane != tt.wantPlane {
				t.Errorf("routed to %s plane, want %s", got.Plane, tt.wantPlane)
			}
			if got.Path != tt.path {
				t.Errorf("upstream saw %q, want %q", got.Path, tt.path)
			}
			if got.Tenant != tt.header["X-TENANT"] {
				t.Errorf("upstream X-TENANT = %q, want %q", got.Tenant, tt.header["X-TENANT"])
			}
			if got.Forwarded == "" {
				t.Error("X-Forwarded-For not set")
			}
			switch {
			case tt.wantRequestID != "" && got.RequestID != tt.wantRequestID:
				t.Errorf("request id = %q, want %q", got.RequestID, tt.wantRequestID)
			case tt.wantRequestID == "" && len(got.RequestID) != 32:
				t.Errorf("request id = %q, want a generated 32-hex id", got.RequestID)
			}
		})
	}
}

func TestUnreachableUpstreamIsBadGateway(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL, _ := url.Parse(dead.URL)
	dead.Close()
	h := ingress.New(deadURL, deadURL, ingress.DefaultLimits, slog.New(slog.DiscardHandler))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != http.StatusBadGateway || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %q, want 502 problem+json", rec.Code, rec.Header().Get("Content-Type"))
	}
}

// TestRateLimited checks the answer over a limit: 429 rate_limited as a
// problem with Retry-After, without reaching the plane, and that requests
// pass again once the wait is over.
func TestRateLimited(t *testing.T) {
	lim := ingress.Limits{AuthRate: 2, AuthBurst: 3, TenantRate: 1000, TenantBurst: 1000, MaxKeys: 100}
	reached := 0
	cp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer cp.Close()
	cpURL, _ := url.Parse(cp.URL)
	srv := httptest.NewServer(ingress.New(cpURL, cpURL, lim, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	login := func() *http.Response {
		res, err := http.Post(srv.URL+"/auth/login", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	var limited *http.Response
	passed := 0
	for range 20 {
		res := login()
		if res.StatusCode == http.StatusTooManyRequests {
			limited = res
			break
		}
		passed++
	}
	if limited == nil || passed < 3 {
		t.Fatalf("limited after %d logins (%v), want the burst of 3 to pass first", passed, limited != nil)
	}
	if reached != passed {
		t.Fatalf("%d requests reached the plane, %d passed: a refused one got through", reached, passed)
	}
	if ra, err := strconv.Atoi(limited.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", limited.Header.Get("Retry-After"))
	}
	if limited.Header.Get("Content-Type") != "application/problem+json" || limited.Header.Get("X-Request-ID") == "" {
		t.Fatalf("429 headers %v", limited.Header)
	}
	res, err := http.Post(srv.URL+"/auth/login", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	}
	json.NewDecoder(res.Body).Decode(&p)
	res.Body.Close()
	if res.StatusCode == http.StatusTooManyRequests && (p.Status != 429 || p.Code != "rate_limited") {
		t.Fatalf("429 body %+v, want a rate_limited problem", p)
	}
	// Recovery: the rate gives a token back within half a second; wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for login().StatusCode == http.StatusTooManyRequests {
		if time.Now().After(deadline) {
			t.Fatal("still limited after 10s at 2 requests per second")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
