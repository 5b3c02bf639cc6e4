package tenants

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tenantbase/libs/tenantapi"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// directory is an in-memory stand-in for the control plane's answers that
// counts lookups; the end-to-end tests use the real control plane.
type directory struct {
	mu      sync.Mutex
	tenants map[int64]Tenant
	down    bool
	// gate, when set, holds every lookup until it is closed.
	gate    chan struct{}
	started chan struct{}
	calls   atomic.Int64
}

func newDirectory(ts ...Tenant) *directory {
	d := &directory{tenants: map[int64]Tenant{}, started: make(chan struct{}, 100)}
	for _, t := range ts {
		d.tenants[t.ID] = t
	}
	return d
}

func (d *directory) Tenant(ctx context.Context, id int64) (Tenant, error) {
	d.calls.Add(1)
	select {
	case d.started <- struct{}{}:
	default:
	}
	d.mu.Lock()
	gate := d.gate
	d.mu.Unlock()
	if gate != nil {
		<-gate
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return Tenant{}, errors.New("connection refused")
	}
	t, ok := d.tenants[id]
	if !ok {
		return Tenant{}, ErrNotFound
	}
	return t, nil
}

func (d *directory) set(t Tenant) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tenants[t.ID] = t
}

func (d *directory) setDown(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

func (d *directory) hold() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gate = make(chan struct{})
	return d.gate
}

func ready(id int64) Tenant {
	return Tenant{ID: id, Status: tenantapi.StatusReady, SchemaVersion: 1,
		Database: &tenantapi.Database{Host: "127.0.0.1", Port: 5432, Name: "tenant_x", User: "tenant_x", Password: "pw"}}
}

func newResolver(src Source, opts Options) *Resolver {
	if opts.TTL == 0 {
		opts.TTL = time.Minute
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = time.Minute
	}
	opts.LookupTimeout = time.Second
	if opts.Size == 0 {
		opts.Size, opts.NegativeSize = 1000, 1000
	}
	r, err := NewResolver(src, opts, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	return r
}

func resolve(t *testing.T, r *Resolver, id int64) (Tenant, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.Resolve(ctx, id)
}

func mustResolve(t *testing.T, r *Resolver, id int64) Tenant {
	t.Helper()
	tn, err := resolve(t, r, id)
	if err != nil {
		t.Fatalf("resolve %d: %v", id, err)
	}
	return tn
}

func requests(r *Resolver, result string) float64 {
	return testutil.ToFloat64(r.metrics.requests.WithLabelValues(result))
}

func TestResolverCachesReadyTenants(t *testing.T) {
	d := newDirectory(ready(1))
	r := newResolver(d, Options{})
	for range 3 {
		if got := mustResolve(t, r, 1); got.ID != 1 || got.Status != tenantapi.StatusReady {
			t.Fatalf("got %+v", got)
		}
	}
	if n := d.calls.Load(); n != 1 {
		t.Errorf("lookups = %d, want 1", n)
	}
	if hits, misses := requests(r, "hit"), requests(r, "miss"); hits != 2 || misses != 1 {
		t.Errorf("hits/misses = %v/%v, want 2/1", hits, misses)
	}
}

func TestResolverSharesOneLookupAmongConcurrentRequests(t *testing.T) {
	d := newDirectory(ready(1))
	gate := d.hold()
	r := newResolver(d, Options{})

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.Resolve(context.Background(), 1)
			errs <- err
		}()
	}
	<-d.started
	// Let every request reach the cache before the lookup answers.
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := d.calls.Load(); got != 1 {
		t.Errorf("lookups = %d for %d concurrent requests, want 1", got, n)
	}
}

func TestResolverExpiry(t *testing.T) {
	provisioning := Tenant{ID: 2, Status: tenantapi.StatusProvisioning}
	cases := []struct {
		name   string
		tenant *Tenant
		opts   Options
		// wait passes the entry's lifetime; within it no new lookup happens.
		wait    time.Duration
		wantErr error
	}{
		{"ready tenants live for the TTL", &Tenant{ID: 1, Status: tenantapi.StatusReady, Database: ready(1).Database},
			Options{TTL: 100 * time.Millisecond, NegativeTTL: time.Hour}, 150 * time.Millisecond, nil},
		{"unknown tenants live for the negative TTL", nil,
			Options{TTL: time.Hour, NegativeTTL: 100 * time.Millisecond}, 150 * time.Millisecond, ErrNotFound},
		{"tenants that are not ready live for the negative TTL", &provisioning,
			Options{TTL: time.Hour, NegativeTTL: 100 * time.Millisecond}, 150 * time.Millisecond, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDirectory()
			id := int64(9)
			if tc.tenant != nil {
				tn := *tc.tenant
				tn.ID = id
				d.set(tn)
			}
			r := newResolver(d, tc.opts)
			for range 2 {
				if _, err := resolve(t, r, id); !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			}
			if n := d.calls.Load(); n != 1 {
				t.Fatalf("lookups within the entry's lifetime = %d, want 1", n)
			}
			time.Sleep(tc.wait)
			if _, err := resolve(t, r, id); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if n := d.calls.Load(); n != 2 {
				t.Errorf("lookups after the entry expired = %d, want 2", n)
			}
		})
	}
}

func TestResolverServesStaleWhenTheControlPlaneIsDown(t *testing.T) {
	d := newDirectory(ready(1))
	r := newResolver(d, Options{TTL: 50 * time.Millisecond, NegativeTTL: time.Hour})
	mustResolve(t, r, 1)
	d.setDown(true)
	time.Sleep(80 * time.Millisecond)

	for range 3 {
		if got := mustResolve(t, r, 1); got.Status != tenantapi.StatusReady {
			t.Fatalf("stale answer = %+v", got)
		}
	}
	if n := d.calls.Load(); n != 2 {
		t.Errorf("lookups = %d, want 2: one fresh, one failed, then none until the retry delay", n)
	}
	if got := requests(r, "stale"); got != 3 {
		t.Errorf("stale serves = %v, want 3", got)
	}
	if _, err := resolve(t, r, 2); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a tenant never seen while the control plane is down: err = %v, want ErrUnavailable", err)
	}
}

func TestResolverInvalidate(t *testing.T) {
	d := newDirectory(ready(1))
	r := newResolver(d, Options{})
	mustResolve(t, r, 1)

	suspended := ready(1)
	suspended.Status, suspended.Database = tenantapi.StatusSuspended, nil
	d.set(suspended)
	r.Invalidate(1)
	if got := mustResolve(t, r, 1); got.Status != tenantapi.StatusSuspended {
		t.Fatalf("after invalidation: status %q, want suspended", got.Status)
	}

	r.Invalidate(1)
	d.setDown(true)
	if _, err := resolve(t, r, 1); !errors.Is(err, ErrUnavailable) {
		t.Errorf("an invalidated entry was served stale: err = %v", err)
	}
}

func TestResolverDropsALookupOvertakenByAnEvent(t *testing.T) {
	d := newDirectory(ready(1))
	gate := d.hold()
	r := newResolver(d, Options{})

	first := make(chan Tenant)
	go func() {
		tn, _ := r.Resolve(context.Background(), 1)
		first <- tn
	}()
	<-d.started
	// The tenant is suspended and the event arrives while the lookup,
	// which read "ready", is still on its way back.
	r.Invalidate(1)
	close(gate)
	<-first

	suspended := ready(1)
	suspended.Status, suspended.Database = tenantapi.StatusSuspended, nil
	d.set(suspended)
	if got := mustResolve(t, r, 1); got.Status != tenantapi.StatusSuspended {
		t.Errorf("status %q cached from the overtaken lookup, want suspended", got.Status)
	}
}

func TestResolverExpireKeepsAFallback(t *testing.T) {
	d := newDirectory(ready(1))
	r := newResolver(d, Options{})
	mustResolve(t, r, 1)
	r.Expire(1)
	d.setDown(true)
	if got := mustResolve(t, r, 1); got.Status != tenantapi.StatusReady {
		t.Fatalf("got %+v", got)
	}
	if n := d.calls.Load(); n != 2 {
		t.Errorf("lookups = %d, want 2 (Expire forces one)", n)
	}
}

func TestResolverWaiterCancellationDoesNotFailOthers(t *testing.T) {
	d := newDirectory(ready(1))
	gate := d.hold()
	r := newResolver(d, Options{})

	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error)
	go func() {
		_, err := r.Resolve(ctx, 1)
		cancelled <- err
	}()
	<-d.started
	other := make(chan error)
	go func() {
		_, err := r.Resolve(context.Background(), 1)
		other <- err
	}()
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: err = %v", err)
	}
	close(gate)
	if err := <-other; err != nil {
		t.Fatalf("other waiter: %v", err)
	}
	if n := d.calls.Load(); n != 1 {
		t.Errorf("lookups = %d, want 1", n)
	}
}

// TestResolverCacheIsBounded floods the cache with random ids, answered
// unknown and then, with the control plane down, not answered at all: the
// cache never holds more than its two bounds, and the real tenants it
// knew are still answered from it afterwards.
func TestResolverCacheIsBounded(t *testing.T) {
	const size, negative, flood = 50, 100, 20_000
	d := newDirectory(ready(1), ready(2), ready(3))
	r := newResolver(d, Options{Size: size, NegativeSize: negative})
	for id := int64(1); id <= 3; id++ {
		mustResolve(t, r, id)
	}
	for i := range flood {
		if i == flood/2 {
			d.setDown(true)
		}
		id := 1_000_000 + rand.Int64N(1<<40)
		if _, err := resolve(t, r, id); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrUnavailable) {
			t.Fatal(err)
		}
		if n := r.size(); n > size+negative {
			t.Fatalf("cache holds %d entries after %d random ids, want at most %d", n, i+1, size+negative)
		}
	}
	calls := d.calls.Load()
	for id := int64(1); id <= 3; id++ {
		if got := mustResolve(t, r, id); got.ID != id {
			t.Fatalf("tenant %d answered as %+v", id, got)
		}
	}
	if n := d.calls.Load(); n != calls {
		t.Fatalf("%d lookups for the known tenants after the flood, want 0: the flood pushed them out", n-calls)
	}
}
