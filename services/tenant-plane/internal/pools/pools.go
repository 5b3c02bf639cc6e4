// Package pools keeps a small pool of connections per tenant database,
// created on first use, under a budget of connections per database server
// shared by all tenants on that server.
//
// The budget is enforced where connections are born: every connection
// dialled to a server takes one of that server's slots and gives it back
// only once the server has ended the session, so the sessions this process
// holds on a server never exceed the budget. The budget is per server
// (host:port of the Target) because max_connections is: tenants on
// different servers do not compete.
//
// Under a full budget, every new session for one tenant costs another
// tenant a connection, so the rules aim at opening few sessions:
//
//   - A tenant that holds a connection waits for one of its own rather
//     than take one from another tenant: its requests are short, and a
//     connection of its own comes back sooner than a new session is set
//     up. It grows into free slots only, up to Options.PerTenant.
//   - A tenant without a connection takes an idle one from another
//     tenant: first a connection beyond a pool's first (the longest idle),
//     which costs its owner no new session, only a short wait; then the
//     only connection of the tenant with the lowest request rate (a
//     decayed count, so frequency counts as well as recency). Busy tenants
//     keep one connection each and the long tail churns through the rest.
//   - A tenant whose oldest waiting request has waited a tenth of the
//     acquire timeout needs more connections than it has: it may take a
//     connection from a pool at least two larger than its own, or the
//     only connection of a tenant that uses it less than it uses each of
//     its own. Each move costs a session, hence the wait; and after a
//     move by size the other pool is no longer two larger, so the
//     connection does not come straight back.
//   - At most Budget/8 sessions are set up at a time on a server, and no
//     more connections are closed to make room for them: setting up a
//     session is CPU work on the server, so more at once do not finish
//     sooner, and each slot a session in the making holds is one a
//     tenant could have kept. With a long tail of tenants, this is what
//     keeps the busy ones' connections.
//   - Connections are taken one at a time; pools are never closed to make
//     room. A pool without connections costs nothing (no goroutine) and
//     keeps its tenant's request rate until it has been unused for
//     MaxConnIdle.
//
// A request waits at most the acquire timeout and then gets ErrBusy.
// Handlers hold at most one connection at a time (see DB), so they cannot
// deadlock on the budget. A tenant whose target changes (credential
// rotation, relocation) gets a pool for the new target, and each request
// is served by the pool of the target it carries, so none fails because
// another carries a different one. The pool asked for last is the
// tenant's current one; the others serve their leases and waiting
// requests but keep no idle connection, so they drain and are dropped.
package pools

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Target is a tenant database and the credentials to reach it.
type Target struct {
	TenantID int64
	Host     string
	Port     int
	Database string
	User     string
	Password string
}

// Options size the pools.
type Options struct {
	// Budget is the most connections open to one database server
	// (host:port) across all tenants on it. Every replica has its own
	// budget: a server sees up to replicas x Budget tenant sessions.
	Budget int
	// PerTenant is the most connections one tenant's pool opens.
	PerTenant int
	// AcquireTimeout bounds the wait for a connection.
	AcquireTimeout time.Duration
	// MaxConnIdle closes a connection idle that long; a pool without
	// connections that has not been used for that long is dropped.
	MaxConnIdle time.Duration
	// SSLMode is the sslmode of every tenant connection.
	SSLMode string
	// OnConnectError, when set, hears of every failed connection attempt
	// (wrong credentials, a dropped database).
	OnConnectError func(tenantID int64, err error)
}

// Errors of Acquire.
var (
	ErrBusy          = errors.New("no connection to the tenant's database became free in time")
	ErrUnavailable   = errors.New("the tenant's database cannot be reached")
	ErrWrongDatabase = errors.New("connected to a database that is not the tenant's")
	ErrClosed        = errors.New("pools: closed")
)

var (
	// errRetired sends a waiting request of a retired pool back to look
	// its pool up again.
	errRetired = errors.New("pools: pool retired")
	// errSecondDial refuses a dial while the attempt's slot is in use: one
	// attempt holds one slot.
	errSecondDial = errors.New("pools: second concurrent dial in one connection attempt")
)

const (
	// connectTimeout bounds one connection attempt.
	connectTimeout = 15 * time.Second
	// drainTimeout bounds the wait for the server to end a closed session.
	drainTimeout = 2 * time.Second
	// pingIdle: a connection idle for longer is pinged before it is
	// leased, as pgxpool does, so that one the server dropped is replaced.
	pingIdle = time.Second
	// maxConnLifetime closes connections that old when they are idle, as
	// pgxpool does, so that backends do not grow forever.
	maxConnLifetime = time.Hour
	// demandWindow is the time constant of a tenant's request rate.
	demandWindow = 30 * time.Second
	// unusedAfter is how long a connection stays idle before a tenant
	// whose requests queue may take it at once: nobody has needed it for
	// a while, so taking it costs its owner at most one session later,
	// while a busy tenant kept to the connections it happened to have when
	// the budget filled up would queue on them for good.
	unusedAfter = 5 * time.Second
)

// Manager owns every tenant pool and the connection budgets.
type Manager struct {
	opts Options
	log  *slog.Logger
	// growAfter is how long the oldest waiting request of a pool waits
	// before the pool may take a connection from another tenant.
	growAfter time.Duration
	// unusedAfter: see the constant (a field for tests).
	unusedAfter time.Duration
	// maxConnecting bounds the sessions being set up on a server, and
	// those being closed to make room for them (see New).
	maxConnecting int
	dialer        net.Dialer
	metrics       metrics
	// conns counts connections from their dial until their session ended.
	conns     sync.WaitGroup
	stop      chan struct{}
	sweepDone chan struct{}

	mu      sync.Mutex
	closed  bool
	tenants map[int64]*tenant
	servers map[string]*server
}

// server is one database server and its budget.
type server struct {
	addr string
	// used counts slots: connections being dialled, open, or closed
	// until the server has ended the session.
	used int
	// closing counts connections being closed: each will free a slot.
	closing int
	// dialing counts connections being set up.
	dialing int
	// first lists pools with waiting requests and no connection, and grow
	// pools that may take a connection from another tenant (see
	// Manager.growAfter); free slots go to first, then to grow.
	first, grow []*tenantPool
	// idle holds the pools with idle connections, the candidates for
	// giving one up.
	idle map[*tenantPool]struct{}
}

// tenant groups a tenant's pools: one per target, the current one first.
// Only the current pool keeps idle connections.
type tenant struct {
	id    int64
	pools []*tenantPool
	// seen is the first request; demand decays with demandWindow.
	seen     time.Time
	demand   float64
	demandAt time.Time
}

type queue int

const (
	notQueued queue = iota
	queuedFirst
	queuedGrow
)

type tenantPool struct {
	target Target
	tenant *tenant
	srv    *server
	cfg    *pgx.ConnConfig
	// idle connections, the longest idle first; leases take the last one,
	// so a pool's extra connections stay idle and are the ones given up.
	idle    []*conn
	total   int // open or being dialled
	dialing int
	leased  int
	waiters []*waiter
	queue   queue
	retired bool
	// lastUsed is the last Acquire.
	lastUsed time.Time
}

type conn struct {
	pg        *pgx.Conn
	pool      *tenantPool
	created   time.Time
	idleSince time.Time
}

// waiter is a request waiting for a connection of its pool; done is set,
// under Manager.mu, when its grant has been sent.
type waiter struct {
	ch    chan grant
	since time.Time
	done  bool
}

type grant struct {
	conn *conn
	err  error
}

// New returns a Manager whose metrics are registered in reg.
func New(opts Options, log *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	if opts.Budget < 1 || opts.PerTenant < 1 || opts.AcquireTimeout <= 0 || opts.MaxConnIdle <= 0 {
		return nil, errors.New("pools: budget, per-tenant cap, acquire timeout and idle time must be positive")
	}
	opts.PerTenant = min(opts.PerTenant, opts.Budget)
	if opts.SSLMode == "" {
		opts.SSLMode = "prefer"
	}
	m := &Manager{
		opts:        opts,
		log:         log,
		growAfter:   opts.AcquireTimeout / 10,
		unusedAfter: unusedAfter,
		// Setting up sessions is work for the server's CPUs: more at once
		// does not make them faster, and every slot held by a session in
		// the making is one a tenant cannot keep.
		maxConnecting: max(1, opts.Budget/8),
		stop:          make(chan struct{}),
		sweepDone:     make(chan struct{}),
		tenants:       map[int64]*tenant{},
		servers:       map[string]*server{},
	}
	m.metrics = newMetrics(reg, m)
	go m.sweep()
	return m, nil
}

// Lease is one connection of a tenant's pool, held until Release.
type Lease struct {
	c    *conn
	m    *Manager
	once sync.Once
}

// Conn is the leased connection; it must not be used after Release.
func (l *Lease) Conn() *pgx.Conn { return l.c.pg }

// Release returns the connection to its pool.
func (l *Lease) Release() {
	l.once.Do(func() { l.m.release(l.c) })
}

// Acquire leases a connection to t's database, creating the tenant's pool
// on first use, or a new one when t's connection details changed.
// It fails with ErrBusy when no connection is free within the acquire
// timeout, and with ErrUnavailable when the database cannot be reached.
func (m *Manager) Acquire(ctx context.Context, t Target) (*Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(m.opts.AcquireTimeout)
	for {
		c, ping, err := m.acquire(ctx, t, deadline)
		switch {
		case errors.Is(err, errRetired):
			continue
		case errors.Is(err, ErrBusy):
			m.metrics.acquireTimeouts.Inc()
			return nil, err
		case err != nil:
			return nil, err
		}
		if ping {
			if err := c.pg.Ping(ctx); err != nil {
				m.discard(c)
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				continue
			}
		}
		return &Lease{c: c, m: m}, nil
	}
}

// acquire takes an idle connection of t's pool or waits for one until
// deadline; ping says the connection has been idle long enough to check.
func (m *Manager) acquire(ctx context.Context, t Target, deadline time.Time) (c *conn, ping bool, err error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, false, ErrClosed
	}
	now := time.Now()
	p, err := m.poolLocked(t, now)
	if err != nil {
		m.mu.Unlock()
		return nil, false, err
	}
	if c := p.popIdle(); c != nil {
		p.leased++
		m.mu.Unlock()
		return c, now.Sub(c.idleSince) > pingIdle, nil
	}
	w := &waiter{ch: make(chan grant, 1), since: now}
	p.waiters = append(p.waiters, w)
	m.provideLocked(p, now)
	m.mu.Unlock()

	// One timer: first when the wait asks the pool to grow, then at the
	// deadline (most waits end before either).
	grown := false
	timer := time.NewTimer(min(m.growAfter, time.Until(deadline)))
	defer timer.Stop()
	for {
		select {
		case g := <-w.ch:
			return g.conn, false, g.err
		case <-timer.C:
			if !grown && time.Now().Before(deadline) {
				grown = true
				m.mu.Lock()
				if !w.done {
					m.provideLocked(p, time.Now())
				}
				m.mu.Unlock()
				timer.Reset(time.Until(deadline))
				continue
			}
			if g, ok := m.abandon(p, w); ok {
				return g.conn, false, g.err
			}
			return nil, false, ErrBusy
		case <-ctx.Done():
			if g, ok := m.abandon(p, w); ok && g.conn != nil {
				m.release(g.conn)
			}
			return nil, false, ctx.Err()
		}
	}
}

// abandon takes w out of its pool's queue, or returns what it was granted
// meanwhile.
func (m *Manager) abandon(p *tenantPool, w *waiter) (grant, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.done {
		return <-w.ch, true
	}
	p.waiters = slices.DeleteFunc(p.waiters, func(x *waiter) bool { return x == w })
	m.provideLocked(p, time.Now())
	m.dropIfDrainedLocked(p)
	return grant{}, false
}

// poolLocked finds or creates the pool for t, makes it its tenant's
// current pool, and counts the request.
func (m *Manager) poolLocked(t Target, now time.Time) (*tenantPool, error) {
	tn := m.tenants[t.TenantID]
	if tn == nil {
		tn = &tenant{id: t.TenantID, seen: now, demandAt: now}
		m.tenants[t.TenantID] = tn
	}
	i := slices.IndexFunc(tn.pools, func(p *tenantPool) bool { return p.target == t })
	var p *tenantPool
	if i < 0 {
		cfg, err := m.connConfig(t)
		if err != nil {
			if len(tn.pools) == 0 {
				delete(m.tenants, t.TenantID)
			}
			return nil, err
		}
		p = &tenantPool{target: t, tenant: tn, srv: m.serverLocked(t), cfg: cfg}
		tn.pools = append(tn.pools, p)
		i = len(tn.pools) - 1
		m.metrics.poolsCreated.Inc()
	} else {
		p = tn.pools[i]
	}
	if i > 0 {
		old := tn.pools[0]
		copy(tn.pools[1:i+1], tn.pools[:i])
		tn.pools[0] = p
		m.supersedeLocked(old)
	}
	tn.touch(now)
	p.lastUsed = now
	return p, nil
}

func (m *Manager) serverLocked(t Target) *server {
	addr := net.JoinHostPort(strings.ToLower(t.Host), strconv.Itoa(t.Port))
	srv := m.servers[addr]
	if srv == nil {
		srv = &server{addr: addr, idle: map[*tenantPool]struct{}{}}
		m.servers[addr] = srv
	}
	return srv
}

// supersedeLocked lets p, no longer its tenant's current pool, drain: its
// idle connections close now, the others when their lease returns.
func (m *Manager) supersedeLocked(p *tenantPool) {
	m.metrics.retired.WithLabelValues("target_changed").Inc()
	for len(p.idle) > 0 {
		m.destroyLocked(p.takeOldestIdle())
	}
	m.dropIfDrainedLocked(p)
}

// dropIfDrainedLocked forgets a superseded pool once nothing uses it.
func (m *Manager) dropIfDrainedLocked(p *tenantPool) {
	tn := p.tenant
	if p.retired || tn.pools[0] == p || p.total > 0 || len(p.waiters) > 0 {
		return
	}
	tn.pools = slices.DeleteFunc(tn.pools, func(x *tenantPool) bool { return x == p })
}

// wantsConn says p has more waiting requests than connections on their
// way, and room to grow.
func (p *tenantPool) wantsConn(perTenant int) bool {
	return !p.retired && len(p.waiters) > p.dialing && p.total < perTenant
}

// provideLocked gets p's waiting requests connections: it dials into free
// slots, else queues p for a slot when it has no connection, its oldest
// request has waited growAfter, or another tenant's connection has been
// idle unusedAfter, and looks for a connection to take.
func (m *Manager) provideLocked(p *tenantPool, now time.Time) {
	srv := p.srv
	for p.wantsConn(m.opts.PerTenant) && m.canDialLocked(srv) {
		m.dialLocked(p)
	}
	q := notQueued
	if p.wantsConn(m.opts.PerTenant) {
		switch {
		case p.total == 0:
			q = queuedFirst
		case now.Sub(p.waiters[0].since) >= m.growAfter, m.unusedIdleLocked(p, now) != nil:
			q = queuedGrow
		}
	}
	m.queueLocked(p, q)
	if q != notQueued {
		m.makeRoomLocked(srv, now)
	}
}

// queueLocked moves p to queue q of its server.
func (m *Manager) queueLocked(p *tenantPool, q queue) {
	if p.queue == q {
		return
	}
	srv := p.srv
	out := func(x *tenantPool) bool { return x == p }
	switch p.queue {
	case queuedFirst:
		srv.first = slices.DeleteFunc(srv.first, out)
	case queuedGrow:
		srv.grow = slices.DeleteFunc(srv.grow, out)
	}
	switch q {
	case queuedFirst:
		srv.first = append(srv.first, p)
	case queuedGrow:
		srv.grow = append(srv.grow, p)
	}
	if q != notQueued && p.queue == notQueued {
		m.metrics.budgetWaits.Inc()
	}
	p.queue = q
}

// serveLocked hands free slots to the queued pools, first then grow.
func (m *Manager) serveLocked(srv *server, now time.Time) {
	for m.canDialLocked(srv) {
		var p *tenantPool
		switch {
		case len(srv.first) > 0:
			p = srv.first[0]
		case len(srv.grow) > 0:
			p = srv.grow[0]
		default:
			return
		}
		m.queueLocked(p, notQueued)
		m.provideLocked(p, now)
	}
}

// makeRoomLocked closes idle connections of other tenants for the queued
// pools that closes already under way will not serve. Slots go to the
// queues in order, so the closes under way cover their heads.
func (m *Manager) makeRoomLocked(srv *server, now time.Time) {
	for srv.closing+srv.dialing < m.maxConnecting {
		i := srv.closing
		var p *tenantPool
		switch {
		case i < len(srv.first):
			p = srv.first[i]
		case i < len(srv.first)+len(srv.grow):
			p = srv.grow[i-len(srv.first)]
		default:
			return
		}
		victim := m.victimLocked(srv, p, now)
		if victim == nil {
			return
		}
		victim.pool.takeIdle(victim)
		m.metrics.idleTrimmed.Inc()
		m.destroyLocked(victim)
	}
}

// victimLocked picks the idle connection p may take, nil for none: a
// connection beyond its pool's first (for a pool that grows, from a pool
// at least two larger), the longest idle; else the only connection of the
// tenant with the lowest request rate (for a pool that grows, one that
// uses it less than p uses each of its own). A pool that grows before its
// requests have waited growAfter takes only a connection unused for
// unusedAfter.
func (m *Manager) victimLocked(srv *server, p *tenantPool, now time.Time) *conn {
	if p.total > 0 && (len(p.waiters) == 0 || now.Sub(p.waiters[0].since) < m.growAfter) {
		// Queued for an unused connection only (see provideLocked).
		return m.unusedIdleLocked(p, now)
	}
	var extra, last *conn
	lastRate := math.Inf(1)
	for q := range srv.idle {
		if q == p {
			continue
		}
		c := q.idle[0]
		if q.total > p.total+1 {
			if extra == nil || c.idleSince.Before(extra.idleSince) {
				extra = c
			}
			continue
		}
		if q.total == 1 {
			if r := q.tenant.rate(now); r < lastRate || r == lastRate && c.idleSince.Before(last.idleSince) {
				last, lastRate = c, r
			}
		}
	}
	switch {
	case extra != nil:
		return extra
	case last == nil:
		return nil
	case p.total > 0 && lastRate*float64(p.total) >= p.tenant.rate(now):
		return nil
	}
	return last
}

// unusedIdleLocked returns the connection of another pool on p's server
// that has been idle longest, if that is at least unusedAfter; else nil.
func (m *Manager) unusedIdleLocked(p *tenantPool, now time.Time) *conn {
	var oldest *conn
	for q := range p.srv.idle {
		if c := q.idle[0]; q != p && now.Sub(c.idleSince) >= m.unusedAfter && (oldest == nil || c.idleSince.Before(oldest.idleSince)) {
			oldest = c
		}
	}
	return oldest
}

// dialLocked opens a connection for p in the background, holding a slot
// of its server; the connection goes to p's first waiting request.
func (m *Manager) dialLocked(p *tenantPool) {
	p.total++
	p.dialing++
	p.srv.used++
	p.srv.dialing++
	m.conns.Add(1)
	go m.connect(p)
}

func (m *Manager) connect(p *tenantPool) {
	a := &attempt{m: m, srv: p.srv, held: true}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), attemptKey{}, a), connectTimeout)
	pg, err := pgx.ConnectConfig(ctx, p.cfg)
	if err == nil {
		if err = checkDatabase(ctx, pg, p.target.Database); err != nil {
			pg.Close(ctx)
		}
	}
	cancel()
	a.finish()

	m.mu.Lock()
	now := time.Now()
	p.dialing--
	p.srv.dialing--
	m.serveLocked(p.srv, now)
	if err == nil {
		m.metrics.connsOpened.Inc()
		m.putLocked(&conn{pg: pg, pool: p, created: now}, now, false)
		m.mu.Unlock()
		return
	}
	err = fmt.Errorf("%w: tenant %d: %w", ErrUnavailable, p.target.TenantID, err)
	p.total--
	if p.total == p.dialing {
		// No connection is open, only dials like this one in flight:
		// nothing else will serve them, so they all hear of the failure
		// rather than each dial in turn (with several dials at once,
		// waiting for the count to reach zero never ended).
		for _, w := range p.waiters {
			w.done = true
			w.ch <- grant{err: err}
		}
		p.waiters = nil
	}
	m.provideLocked(p, now)
	m.dropIfDrainedLocked(p)
	m.mu.Unlock()
	m.conns.Done()
	if m.opts.OnConnectError != nil {
		m.opts.OnConnectError(p.target.TenantID, err)
	}
}

// putLocked gives a connection that is free again to its pool's first
// waiting request, or keeps it idle. A returning connection may instead
// make way for a tenant without one (mayYield).
func (m *Manager) putLocked(c *conn, now time.Time, mayYield bool) {
	p := c.pool
	srv := p.srv
	switch {
	case p.retired:
		m.destroyLocked(c)
	case mayYield && len(p.waiters) > 0 && p.total > 1 && len(srv.first) > srv.closing:
		// A tenant without a connection waits for a slot: one of the
		// extra connections of a busy pool makes way for it.
		m.metrics.idleTrimmed.Inc()
		m.destroyLocked(c)
	case len(p.waiters) > 0:
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w.done = true
		p.leased++
		w.ch <- grant{conn: c}
		m.provideLocked(p, now)
	case p.tenant.pools[0] != p:
		m.destroyLocked(c)
	default:
		c.idleSince = now
		p.pushIdle(c)
		m.makeRoomLocked(srv, now)
	}
}

// release takes back a leased connection.
func (m *Manager) release(c *conn) {
	pc := c.pg.PgConn()
	broken := c.pg.IsClosed() || pc.IsBusy() || pc.TxStatus() != 'I'
	m.mu.Lock()
	defer m.mu.Unlock()
	c.pool.leased--
	if broken {
		m.destroyLocked(c)
		return
	}
	m.putLocked(c, time.Now(), true)
}

// discard closes a leased connection that failed its ping.
func (m *Manager) discard(c *conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c.pool.leased--
	m.destroyLocked(c)
}

// destroyLocked closes c in the background; its slot is free once the
// server has ended the session (see budgetConn).
func (m *Manager) destroyLocked(c *conn) {
	p := c.pool
	srv := p.srv
	p.total--
	srv.closing++
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		c.pg.Close(ctx)
		cancel()
		<-c.pg.PgConn().CleanupDone()
		m.mu.Lock()
		srv.closing--
		m.makeRoomLocked(srv, time.Now())
		m.mu.Unlock()
		m.conns.Done()
	}()
	now := time.Now()
	m.provideLocked(p, now)
	m.dropIfDrainedLocked(p)
}

// canDialLocked says a slot of srv is free and fewer than maxConnecting
// sessions are being set up on it.
func (m *Manager) canDialLocked(srv *server) bool {
	return srv.used < m.opts.Budget && srv.dialing < m.maxConnecting
}

// slotFreed gives back a slot whose session the server has ended.
func (m *Manager) slotFreed(srv *server) {
	m.mu.Lock()
	defer m.mu.Unlock()
	srv.used--
	m.serveLocked(srv, time.Now())
}

// retireLocked takes p out of use: its idle connections close now, the
// leased ones when they return, and its waiting requests look their pool
// up again.
func (m *Manager) retireLocked(p *tenantPool, reason string) {
	if p.retired {
		return
	}
	p.retired = true
	m.metrics.retired.WithLabelValues(reason).Inc()
	tn := p.tenant
	tn.pools = slices.DeleteFunc(tn.pools, func(x *tenantPool) bool { return x == p })
	if len(tn.pools) == 0 && m.tenants[tn.id] == tn {
		delete(m.tenants, tn.id)
	}
	m.queueLocked(p, notQueued)
	for len(p.idle) > 0 {
		m.destroyLocked(p.takeOldestIdle())
	}
	for _, w := range p.waiters {
		w.done = true
		w.ch <- grant{err: errRetired}
	}
	p.waiters = nil
}

// Retire closes tenant id's pools, if there are any, once their leases
// have returned: its database was dropped, suspended or moved.
func (m *Manager) Retire(tenantID int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tn := m.tenants[tenantID]; tn != nil {
		for _, p := range slices.Clone(tn.pools) {
			m.retireLocked(p, "event")
		}
	}
}

// sweep closes idle connections past MaxConnIdle or their lifetime, and
// drops pools without connections unused for MaxConnIdle.
func (m *Manager) sweep() {
	defer close(m.sweepDone)
	t := time.NewTicker(min(m.opts.MaxConnIdle, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		now := time.Now()
		for _, tn := range m.tenants {
			for _, p := range slices.Clone(tn.pools) {
				for _, c := range slices.Clone(p.idle) {
					if now.Sub(c.idleSince) >= m.opts.MaxConnIdle || now.Sub(c.created) >= maxConnLifetime {
						p.takeIdle(c)
						m.destroyLocked(c)
					}
				}
				if p.total == 0 && len(p.waiters) == 0 && now.Sub(p.lastUsed) >= m.opts.MaxConnIdle {
					m.retireLocked(p, "unused")
				}
			}
		}
		m.mu.Unlock()
	}
}

// Close closes every pool, waiting for leases to return.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	close(m.stop)
	for _, tn := range m.tenants {
		for _, p := range slices.Clone(tn.pools) {
			m.retireLocked(p, "shutdown")
		}
	}
	m.mu.Unlock()
	<-m.sweepDone
	m.conns.Wait()
}

func (p *tenantPool) pushIdle(c *conn) {
	p.idle = append(p.idle, c)
	p.srv.idle[p] = struct{}{}
}

// popIdle takes the most recently used idle connection, nil for none.
func (p *tenantPool) popIdle() *conn {
	if len(p.idle) == 0 {
		return nil
	}
	c := p.idle[len(p.idle)-1]
	p.takeIdle(c)
	return c
}

func (p *tenantPool) takeOldestIdle() *conn {
	c := p.idle[0]
	p.takeIdle(c)
	return c
}

func (p *tenantPool) takeIdle(c *conn) {
	p.idle = slices.DeleteFunc(p.idle, func(x *conn) bool { return x == c })
	if len(p.idle) == 0 {
		delete(p.srv.idle, p)
	}
}

// touch counts a request.
func (tn *tenant) touch(now time.Time) {
	tn.demand = tn.demandNow(now) + 1
	tn.demandAt = now
}

func (tn *tenant) demandNow(now time.Time) float64 {
	return tn.demand * math.Exp(-now.Sub(tn.demandAt).Seconds()/demandWindow.Seconds())
}

// rate estimates the tenant's requests per second: the decayed count over
// the time it covers, so that a tenant seen for a few seconds is not
// taken for a quiet one.
func (tn *tenant) rate(now time.Time) float64 {
	window := min(max(now.Sub(tn.seen), time.Second), demandWindow)
	return tn.demandNow(now) / window.Seconds()
}

func (m *Manager) connConfig(t Target) (*pgx.ConnConfig, error) {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(t.User, t.Password),
		Host:     net.JoinHostPort(t.Host, strconv.Itoa(t.Port)),
		Path:     "/" + t.Database,
		RawQuery: url.Values{"sslmode": {m.opts.SSLMode}, "application_name": {"tenant-plane"}}.Encode(),
	}
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %d: bad connection details", ErrUnavailable, t.TenantID)
	}
	cfg.ConnectTimeout = connectTimeout
	cfg.DialFunc = m.dial
	return cfg, nil
}

// checkDatabase refuses a connection that is not on the tenant's own
// database, whatever a proxy or a wrong record in the directory says.
func checkDatabase(ctx context.Context, c *pgx.Conn, want string) error {
	var got string
	if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: on %q, want %q", ErrWrongDatabase, got, want)
	}
	return nil
}
