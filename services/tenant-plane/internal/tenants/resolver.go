package tenants

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"tenantbase/libs/tenantapi"
)

// Source answers tenant lookups; *Client is the real one.
type Source interface {
	Tenant(ctx context.Context, id int64) (Tenant, error)
}

// Options tune the cache.
type Options struct {
	// TTL is how long a ready tenant is served from the cache.
	TTL time.Duration
	// NegativeTTL is how long unknown tenants and tenants in any other
	// status are remembered, and how long to wait before asking again
	// after a failed lookup while serving a stale entry.
	NegativeTTL time.Duration
	// LookupTimeout bounds one request to the control plane.
	LookupTimeout time.Duration
	// Size bounds the tenants remembered with an answer, and NegativeSize
	// the ids remembered as unknown or whose lookup failed; the least
	// recently used go first. Two bounds, so that a flood of random ids
	// churns only the second and never pushes out real tenants.
	Size, NegativeSize int
	// MinSchemaVersion is the lowest schema version served; a ready tenant
	// below it is kept for NegativeTTL only, so that it is served soon
	// after its migration even if the event announcing it is lost.
	MinSchemaVersion int
}

// Resolver caches tenant lookups: a TTL per entry, one lookup in flight per
// tenant however many requests wait for it, short-lived negative entries,
// and the last good answer served when the control plane cannot be reached.
type Resolver struct {
	src     Source
	opts    Options
	log     *slog.Logger
	metrics resolverMetrics
	flight  singleflight.Group

	// deployment is the deployment id of the last answer of the source.
	deployment atomic.Value

	mu sync.Mutex
	// found holds tenants the control plane answered for; others holds
	// unknown ids and ids being looked up for the first time.
	found, others *simplelru.LRU[int64, *entry]
}

type entry struct {
	tenant Tenant
	// known is true once a lookup answered; found is false for unknown tenants.
	known, found bool
	// stale is set while an expired entry is served because lookups fail.
	stale   bool
	expires time.Time
	// gen changes on every invalidation, so that a lookup started before
	// an event cannot store what it read after the event.
	gen uint64
}

// NewResolver returns a cache in front of src whose metrics are registered in reg.
func NewResolver(src Source, opts Options, log *slog.Logger, reg prometheus.Registerer) (*Resolver, error) {
	found, err := simplelru.NewLRU[int64, *entry](opts.Size, nil)
	if err != nil {
		return nil, fmt.Errorf("tenants: cache size: %w", err)
	}
	others, err := simplelru.NewLRU[int64, *entry](opts.NegativeSize, nil)
	if err != nil {
		return nil, fmt.Errorf("tenants: negative cache size: %w", err)
	}
	r := &Resolver{src: src, opts: opts, log: log, found: found, others: others}
	r.metrics = newResolverMetrics(reg, r)
	return r, nil
}

// getLocked returns the entry of id, marking it used.
func (r *Resolver) getLocked(id int64) *entry {
	if e, ok := r.found.Get(id); ok {
		return e
	}
	e, _ := r.others.Get(id)
	return e
}

// current reports whether e is still the entry of id.
func (r *Resolver) currentLocked(id int64, e *entry) bool {
	got, ok := r.found.Peek(id)
	if !ok {
		got, ok = r.others.Peek(id)
	}
	return ok && got == e
}

// placeLocked files e in the cache its answer belongs to.
func (r *Resolver) placeLocked(id int64, e *entry) {
	if e.known && e.found {
		r.others.Remove(id)
		r.found.Add(id, e)
		return
	}
	r.found.Remove(id)
	r.others.Add(id, e)
}

// Resolve returns tenant id, from the cache when it is fresh. Concurrent
// calls for one tenant share one lookup. Errors: ErrNotFound, or
// ErrUnavailable when the control plane cannot answer and nothing usable
// is cached.
func (r *Resolver) Resolve(ctx context.Context, id int64) (Tenant, error) {
	r.mu.Lock()
	e := r.getLocked(id)
	if e == nil {
		e = &entry{}
		r.others.Add(id, e)
	}
	if e.known && time.Now().Before(e.expires) {
		t, err := e.answer()
		result := e.result()
		r.mu.Unlock()
		r.metrics.requests.WithLabelValues(result).Inc()
		return t, err
	}
	gen := e.gen
	r.mu.Unlock()
	r.metrics.requests.WithLabelValues("miss").Inc()

	key := strconv.FormatInt(id, 10) + "/" + strconv.FormatUint(gen, 10)
	ch := r.flight.DoChan(key, func() (any, error) { return r.lookup(e, id, gen) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return Tenant{}, res.Err
		}
		return res.Val.(Tenant), nil
	case <-ctx.Done():
		return Tenant{}, ctx.Err()
	}
}

// lookup asks the source and stores the answer in e, unless e was
// invalidated or dropped meanwhile. It runs detached from the request
// that started it, because other requests wait for the same answer.
func (r *Resolver) lookup(e *entry, id int64, gen uint64) (Tenant, error) {
	// A lookup that finished between this caller's miss and its joining
	// the flight already stored the answer: no second lookup for it.
	r.mu.Lock()
	if r.currentLocked(id, e) && e.gen == gen && e.known && time.Now().Before(e.expires) {
		t, err := e.answer()
		r.mu.Unlock()
		return t, err
	}
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), r.opts.LookupTimeout)
	defer cancel()
	t, err := r.src.Tenant(ctx, id)

	r.mu.Lock()
	defer r.mu.Unlock()
	current := r.currentLocked(id, e) && e.gen == gen
	now := time.Now()
	switch {
	case err == nil:
		r.metrics.lookups.WithLabelValues("ok").Inc()
		r.deployment.Store(t.Deployment)
		if current {
			*e = entry{tenant: t, known: true, found: true, expires: now.Add(r.ttl(t)), gen: gen}
			r.placeLocked(id, e)
		}
		return t, nil
	case errors.Is(err, ErrNotFound):
		r.metrics.lookups.WithLabelValues("not_found").Inc()
		if current {
			*e = entry{known: true, expires: now.Add(r.opts.NegativeTTL), gen: gen}
			r.placeLocked(id, e)
		}
		return Tenant{}, ErrNotFound
	}
	r.metrics.lookups.WithLabelValues("error").Inc()
	if current && e.known && e.found {
		if !e.stale {
			r.log.Warn("tenant lookup failed; serving the cached answer", "tenant_id", id, "error", err.Error())
		}
		e.stale = true
		e.expires = now.Add(r.opts.NegativeTTL)
		r.metrics.requests.WithLabelValues("stale").Inc()
		return e.tenant, nil
	}
	r.log.Warn("tenant lookup failed", "tenant_id", id, "error", err.Error())
	return Tenant{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// ttl keeps ready tenants long and every other status briefly: a tenant
// that finishes provisioning, is resumed or is migrated must not wait a
// whole TTL when the event announcing it is lost.
func (r *Resolver) ttl(t Tenant) time.Duration {
	if t.Status == tenantapi.StatusReady && t.SchemaVersion >= r.opts.MinSchemaVersion {
		return r.opts.TTL
	}
	return r.opts.NegativeTTL
}

func (e *entry) answer() (Tenant, error) {
	if !e.found {
		return Tenant{}, ErrNotFound
	}
	return e.tenant, nil
}

// Deployment is the deployment id the control plane reported, "" before
// its first answer.
func (r *Resolver) Deployment() string {
	d, _ := r.deployment.Load().(string)
	return d
}

// Invalidate forgets tenant id at once: the next request looks it up, and
// no stale copy is served, since the event says the copy is wrong.
func (r *Resolver) Invalidate(id int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics.invalidations.Inc()
	if e := r.getLocked(id); e != nil {
		*e = entry{gen: e.gen + 1}
		r.placeLocked(id, e)
	}
}

// Expire makes the next request for tenant id look it up again, keeping
// the current answer as a fallback should the lookup fail.
func (r *Resolver) Expire(id int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.getLocked(id); e != nil {
		e.expires = time.Time{}
	}
}

func (r *Resolver) size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.found.Len() + r.others.Len()
}

type resolverMetrics struct {
	requests      *prometheus.CounterVec
	lookups       *prometheus.CounterVec
	invalidations prometheus.Counter
}

func newResolverMetrics(reg prometheus.Registerer, r *Resolver) resolverMetrics {
	m := resolverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenant_cache_requests_total",
			Help: "Tenant resolutions by cache result: hit, negative_hit, stale (an expired entry served because the control plane could not be reached) or miss.",
		}, []string{"result"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenant_lookups_total",
			Help: "Lookups sent to the control plane's internal API, by outcome: ok, not_found or error.",
		}, []string{"outcome"}),
		invalidations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenant_cache_invalidations_total",
			Help: "Cache entries dropped because a tenant event arrived.",
		}),
	}
	reg.MustRegister(m.requests, m.lookups, m.invalidations,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tenant_cache_entries",
			Help: "Tenants currently in the resolution cache.",
		}, func() float64 { return float64(r.size()) }))
	return m
}

// result labels a cache hit on e.
func (e *entry) result() string {
	switch {
	case !e.found:
		return "negative_hit"
	case e.stale:
		return "stale"
	}
	return "hit"
}
