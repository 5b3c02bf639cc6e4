package ingress

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// TestLimiterBurstAndRecovery runs the buckets on a clock of the test's:
// a burst passes, the next request is refused with the wait until a token
// is back, and after that wait one request passes again.
func TestLimiterBurstAndRecovery(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLimits(Limits{AuthRate: 5, AuthBurst: 10, TenantRate: 50, TenantBurst: 100, MaxKeys: 100})
	l.now = func() time.Time { return now }
	login := func(ip string) (bool, time.Duration) {
		r := httptest.NewRequest("POST", "/auth/login", nil)
		r.RemoteAddr = ip + ":4000"
		return l.admit(r)
	}
	for i := range 10 {
		if ok, _ := login("192.0.2.1"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := login("192.0.2.1")
	if ok || wait != 200*time.Millisecond || retryAfter(wait) != 1 {
		t.Fatalf("11th request: ok=%v wait=%s, want refused for 200ms (Retry-After 1)", ok, wait)
	}
	// Refused attempts take nothing: the wait does not grow.
	if _, again := login("192.0.2.1"); again != wait {
		t.Fatalf("wait grew to %s after a refusal", again)
	}
	if ok, _ := login("192.0.2.2"); !ok {
		t.Fatal("another address was limited too")
	}
	now = now.Add(wait)
	if ok, _ := login("192.0.2.1"); !ok {
		t.Fatal("no recovery after the wait")
	}
	if ok, _ := login("192.0.2.1"); ok {
		t.Fatal("more than one token came back")
	}
}

func TestTenantLimitAndRoutes(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLimits(Limits{AuthRate: 1, AuthBurst: 1, TenantRate: 1, TenantBurst: 3, MaxKeys: 100})
	l.now = func() time.Time { return now }
	req := func(method, path, tenant string) bool {
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = "192.0.2.1:4000"
		if tenant != "" {
			r.Header.Set(TenantHeader, tenant)
		}
		ok, _ := l.admit(r)
		return ok
	}
	for i := range 3 {
		if !req("GET", "/profile", "7") {
			t.Fatalf("tenant request %d refused", i+1)
		}
	}
	if req("GET", "/users", "7") {
		t.Fatal("tenant 7 over its burst was admitted")
	}
	if !req("GET", "/profile", "8") {
		t.Fatal("tenant 8 was limited by tenant 7's traffic")
	}
	// The control plane's other routes are not limited.
	for range 20 {
		if !req("GET", "/organizations", "") {
			t.Fatal("a non-auth control-plane route was limited")
		}
	}
	// A tenant login counts against both limits; a refusal by the tenant
	// limit gives the address's token back.
	if req("POST", "/auth/login", "7") {
		t.Fatal("login for tenant 7 over its limit admitted")
	}
	if !req("POST", "/auth/login", "") {
		t.Fatal("the address lost its token to a request the tenant limit refused")
	}
	for _, p := range []string{"/auth/register", "/auth/refresh", "/auth/verify/resend", "/auth/invitations/accept", "//auth/login", "/auth/./login"} {
		if !AuthRoute(p) {
			t.Errorf("%s is not an auth route", p)
		}
	}
	for _, p := range []string{"/auth/logout", "/auth/me", "/auth/verify", "/auth/login/x", "/authx/login"} {
		if AuthRoute(p) {
			t.Errorf("%s is an auth route", p)
		}
	}
}

func TestLimiterIsBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLimiter(1, 2, 100)
	for i := range 1000 {
		if ok, _, _ := l.reserve("k"+strconv.Itoa(i), now); !ok {
			t.Fatalf("new key %d refused", i)
		}
		if len(l.m) > 100 {
			t.Fatalf("%d keys tracked, bound 100", len(l.m))
		}
	}
}
