package ingress

import (
	"math"
	"net"
	"net/http"
	"path"
	"regexp"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the ingress's rate limits. deploy/nginx/nginx.conf carries
// the same numbers for production (a test checks that they agree), so
// that what a user meets under `make run` is what production does.
type Limits struct {
	// AuthRate (requests per second) and AuthBurst limit each client
	// address on the auth routes of both planes (AuthRoute).
	AuthRate  float64
	AuthBurst int
	// TenantRate and TenantBurst limit the requests for each tenant
	// (X-TENANT value), whichever route they are for.
	TenantRate  float64
	TenantBurst int
	// MaxKeys bounds how many addresses and tenants each limit tracks; the
	// least useful entries (those whose bucket is full again) go first.
	MaxKeys int
}

// DefaultLimits are the limits of deploy/nginx/nginx.conf.
var DefaultLimits = Limits{AuthRate: 5, AuthBurst: 10, TenantRate: 50, TenantBurst: 100, MaxKeys: 100_000}

// AuthRoutePattern matches the routes limited per client address: sign-up,
// login, token refresh, verification resend and invitation acceptance, on
// either plane. nginx.conf's auth location is this expression.
const AuthRoutePattern = `^/auth/(register|login|refresh|verify/resend|invitations/accept)$`

var authRoute = regexp.MustCompile(AuthRoutePattern)

// AuthRoute reports whether p (cleaned as nginx normalises it) is an auth
// route limited per client address.
func AuthRoute(p string) bool { return authRoute.MatchString(path.Clean("/" + p)) }

// limiter holds one token bucket per key (client address or tenant).
type limiter struct {
	mu    sync.Mutex
	limit rate.Limit
	burst int
	max   int
	m     map[string]*rate.Limiter
}

func newLimiter(perSecond float64, burst, maxKeys int) *limiter {
	return &limiter{limit: rate.Limit(perSecond), burst: max(burst, 1), max: max(maxKeys, 1), m: map[string]*rate.Limiter{}}
}

// reserve takes a token of key's bucket at now. ok is false when none is
// free; wait is then how long until one is, and nothing was taken.
// undo gives a taken token back (another limit refused the request).
func (l *limiter) reserve(key string, now time.Time) (ok bool, wait time.Duration, undo func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.m[key]
	if !found {
		if len(l.m) >= l.max {
			l.evict(now)
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.m[key] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d, nil
	}
	return true, 0, func() { r.CancelAt(now) }
}

// evict makes room: buckets that are full again are as good as new and
// go first; if that frees too little, arbitrary ones follow until a tenth
// of the room is free.
func (l *limiter) evict(now time.Time) {
	for k, b := range l.m {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.m, k)
		}
	}
	for k := range l.m {
		if len(l.m) < l.max-l.max/10 {
			break
		}
		delete(l.m, k)
	}
}

// limits applies the two limits of Limits to requests.
type limits struct {
	auth, tenant *limiter
	now          func() time.Time
}

func newLimits(l Limits) *limits {
	return &limits{
		auth:   newLimiter(l.AuthRate, l.AuthBurst, l.MaxKeys),
		tenant: newLimiter(l.TenantRate, l.TenantBurst, l.MaxKeys),
		now:    time.Now,
	}
}

// admit reports whether r may pass, and else how long to wait.
func (l *limits) admit(r *http.Request) (bool, time.Duration) {
	now := l.now()
	var undo []func()
	refuse := func(wait time.Duration) (bool, time.Duration) {
		for _, u := range undo {
			u()
		}
		return false, wait
	}
	if AuthRoute(r.URL.Path) {
		ok, wait, u := l.auth.reserve(clientAddr(r), now)
		if !ok {
			return refuse(wait)
		}
		undo = append(undo, u)
	}
	if t := r.Header.Get(TenantHeader); t != "" {
		ok, wait, u := l.tenant.reserve(t, now)
		if !ok {
			return refuse(wait)
		}
		undo = append(undo, u)
	}
	return true, 0
}

// retryAfter is wait in whole seconds, at least 1, for Retry-After.
func retryAfter(wait time.Duration) int { return max(1, int(math.Ceil(wait.Seconds()))) }

// clientAddr is the peer's address: this ingress is the edge, so nothing
// a client writes in a header counts.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
