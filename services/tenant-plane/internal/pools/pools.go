// Package pools keeps one pgx pool per tenant database, created on first
// use, under one budget of server connections shared by all tenants.
//
// The budget is enforced where connections are born: every connection a
// pool dials takes a slot, and gives it back only once the server has
// closed the session, so the number of tenant sessions on the servers
// never exceeds the budget. When no slot is free, the least recently used
// pool without leases is closed; failing that, one idle connection of
// another pool is; failing that, the dial waits for a slot until the
// acquire timeout, and the request gets ErrBusy instead of hanging.
package pools

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
	// Budget is the most server connections open across all tenants.
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
	// other than a budget timeout (wrong credentials, a dropped database).
	OnConnectError func(tenantID int64, err error)
}

// Errors of Acquire.
var (
	ErrBusy          = errors.New("no connection to the tenant's database became free in time")
	ErrUnavailable   = errors.New("the tenant's database cannot be reached")
	ErrWrongDatabase = errors.New("connected to a database that is not the tenant's")
	ErrClosed        = errors.New("pools: closed")
)

// errNoSlot fails a dial that waited for a budget slot in vain.
var errNoSlot = errors.New("pools: connection budget exhausted")

const (
	// connectTimeout bounds one connection attempt, the budget wait included.
	connectTimeout = 15 * time.Second
	// drainTimeout bounds the wait for the server to end a closed session.
	drainTimeout = 2 * time.Second
	// retireAttempts bounds retries when a pool is retired under a request.
	retireAttempts = 3
)

// Manager owns every tenant pool and the connection budget.
type Manager struct {
	opts    Options
	log     *slog.Logger
	dialer  net.Dialer
	metrics metrics

	// slots holds one token per open server connection.
	slots chan struct{}
	// waiting counts dials waiting for a slot; freeing counts the slots
	// that closes already under way will give back, so that waiters do
	// not close more pools than they need.
	waiting atomic.Int64
	freeing atomic.Int64
	// closing tracks pools being closed, for Close.
	closing sync.WaitGroup
	stop    chan struct{}

	mu     sync.Mutex
	pools  map[int64]*tenantPool
	closed bool
	// changed is closed and replaced, while dials wait, whenever a lease
	// returns or a close finishes, so that they look for something to
	// close again.
	changed chan struct{}
}

type tenantPool struct {
	target Target
	pool   *pgxpool.Pool
	// leases and lastUsed are guarded by Manager.mu.
	leases   int
	lastUsed time.Time
	retired  atomic.Bool
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
		opts:    opts,
		log:     log,
		slots:   make(chan struct{}, opts.Budget),
		stop:    make(chan struct{}),
		pools:   map[int64]*tenantPool{},
		changed: make(chan struct{}),
	}
	m.metrics = newMetrics(reg, m)
	go m.sweep()
	return m, nil
}

// Lease is one connection of a tenant's pool, held until Release.
type Lease struct {
	conn *pgxpool.Conn
	tp   *tenantPool
	m    *Manager
	once sync.Once
}

// Conn is the leased connection; it must not be used after Release.
func (l *Lease) Conn() *pgx.Conn { return l.conn.Conn() }

// Release returns the connection to its pool.
func (l *Lease) Release() {
	l.once.Do(func() {
		l.conn.Release()
		l.m.checkin(l.tp)
	})
}

// Acquire leases a connection to t's database, creating the tenant's pool
// on first use, or replacing it when t's connection details changed.
// It fails with ErrBusy when no connection is free within the acquire
// timeout, and with ErrUnavailable when the database cannot be reached.
func (m *Manager) Acquire(ctx context.Context, t Target) (*Lease, error) {
	for attempt := 1; ; attempt++ {
		tp, err := m.checkout(t)
		if err != nil {
			return nil, err
		}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, ownerKey{}, tp), m.opts.AcquireTimeout)
		conn, err := tp.pool.Acquire(actx)
		cancel()
		if err == nil {
			return &Lease{conn: conn, tp: tp, m: m}, nil
		}
		m.checkin(tp)
		if tp.retired.Load() && ctx.Err() == nil && attempt < retireAttempts {
			continue
		}
		return nil, m.acquireError(ctx, t, err)
	}
}

func (m *Manager) acquireError(ctx context.Context, t Target, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errNoSlot):
		m.metrics.acquireTimeouts.Inc()
		return ErrBusy
	}
	if m.opts.OnConnectError != nil {
		m.opts.OnConnectError(t.TenantID, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// checkout finds or creates the pool for t and counts a lease on it.
func (m *Manager) checkout(t Target) (*tenantPool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	tp := m.pools[t.TenantID]
	if tp != nil && tp.target != t {
		m.retireLocked(tp, "target_changed")
		tp = nil
	}
	if tp == nil {
		var err error
		if tp, err = m.newPool(t); err != nil {
			return nil, err
		}
		m.pools[t.TenantID] = tp
	}
	tp.leases++
	tp.lastUsed = time.Now()
	return tp, nil
}

func (m *Manager) checkin(tp *tenantPool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tp.leases--
	m.signalLocked()
}

// signalLocked wakes the dials waiting for a slot, so that they look for
// something to close again.
func (m *Manager) signalLocked() {
	if m.waiting.Load() > 0 {
		close(m.changed)
		m.changed = make(chan struct{})
	}
}

// freed records that closes counted in freeing are done.
func (m *Manager) freed(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.freeing.Add(-n)
	m.signalLocked()
}

type ownerKey struct{}

func (m *Manager) newPool(t Target) (*tenantPool, error) {
	cfg, err := m.poolConfig(t)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %d: %w", ErrUnavailable, t.TenantID, err)
	}
	m.metrics.poolsCreated.Inc()
	return &tenantPool{target: t, pool: pool}, nil
}

func (m *Manager) poolConfig(t Target) (*pgxpool.Config, error) {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(t.User, t.Password),
		Host:     net.JoinHostPort(t.Host, strconv.Itoa(t.Port)),
		Path:     "/" + t.Database,
		RawQuery: url.Values{"sslmode": {m.opts.SSLMode}, "application_name": {"tenant-plane"}}.Encode(),
	}
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %d: bad connection details", ErrUnavailable, t.TenantID)
	}
	cfg.MaxConns = int32(m.opts.PerTenant)
	// Connections are only ever opened for a waiting request (see dial).
	cfg.MinConns = 0
	cfg.MinIdleConns = 0
	cfg.MaxConnIdleTime = m.opts.MaxConnIdle
	cfg.ConnConfig.ConnectTimeout = connectTimeout
	cfg.ConnConfig.DialFunc = m.dial
	cfg.AfterConnect = checkDatabase(t.Database)
	return cfg, nil
}

// checkDatabase refuses a connection that is not on the tenant's own
// database, whatever a proxy or a wrong record in the directory says.
func checkDatabase(want string) func(context.Context, *pgx.Conn) error {
	return func(ctx context.Context, c *pgx.Conn) error {
		var got string
		if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%w: on %q, want %q", ErrWrongDatabase, got, want)
		}
		return nil
	}
}

// dial opens a server connection that holds a budget slot until the
// server has ended its session. Connections are dialled for an Acquire,
// whose context names the pool (pgxpool hands the Acquire's values to the
// constructor); the only dials without one are pgconn's cancel requests,
// which the server answers and hangs up before any session exists, so
// they need no slot.
func (m *Manager) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	owner, ok := ctx.Value(ownerKey{}).(*tenantPool)
	if !ok {
		return m.dialer.DialContext(ctx, network, addr)
	}
	if err := m.reserve(ctx, owner); err != nil {
		return nil, err
	}
	c, err := m.dialer.DialContext(ctx, network, addr)
	if err != nil {
		<-m.slots
		return nil, err
	}
	return &budgetConn{Conn: c, release: func() { <-m.slots }}, nil
}

// reserve takes a budget slot, closing idle pools or connections of other
// tenants to free one, and waiting at most the acquire timeout. pgxpool
// keeps building a connection after its Acquire gave up, so the wait is
// bounded here too.
func (m *Manager) reserve(ctx context.Context, owner *tenantPool) error {
	select {
	case m.slots <- struct{}{}:
		return nil
	default:
	}
	m.waiting.Add(1)
	defer m.waiting.Add(-1)
	m.metrics.budgetWaits.Inc()
	timer := time.NewTimer(m.opts.AcquireTimeout)
	defer timer.Stop()
	for {
		changed := m.makeRoom(owner)
		select {
		case m.slots <- struct{}{}:
			return nil
		case <-changed:
		case <-timer.C:
			return errNoSlot
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// makeRoom closes the least recently used pool that has idle connections
// and no leases; if there is none, it closes one idle connection of the
// least recently used pool that has one, the owner's own pool last
// (pgxpool does not hand a connection released meanwhile to an Acquire
// already waiting for a new one). It does nothing while closes already
// under way will free a slot for every waiter. It returns the channel that
// signals the next returned lease.
func (m *Manager) makeRoom(owner *tenantPool) <-chan struct{} {
	m.mu.Lock()
	changed := m.changed
	if m.freeing.Load() >= m.waiting.Load() {
		m.mu.Unlock()
		return changed
	}
	var victim, trim *tenantPool
	for _, tp := range m.pools {
		if tp == owner || tp.pool.Stat().IdleConns() == 0 {
			continue
		}
		if tp.leases == 0 && (victim == nil || tp.lastUsed.Before(victim.lastUsed)) {
			victim = tp
		}
		if trim == nil || tp.lastUsed.Before(trim.lastUsed) {
			trim = tp
		}
	}
	if victim != nil {
		m.retireLocked(victim, "lru_idle")
		m.mu.Unlock()
		return changed
	}
	m.mu.Unlock()
	if trim == nil {
		trim = owner
	}
	m.trimIdle(trim)
	return changed
}

// trimIdle closes one idle connection of tp, keeping the pool.
func (m *Manager) trimIdle(tp *tenantPool) {
	idle := tp.pool.AcquireAllIdle(context.Background())
	if len(idle) == 0 {
		return
	}
	conn := idle[0].Hijack()
	for _, c := range idle[1:] {
		c.Release()
	}
	m.metrics.idleTrimmed.Inc()
	m.freeing.Add(1)
	go func() {
		defer m.freed(1)
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		conn.Close(ctx)
	}()
}

// retireLocked removes tp from the map and closes it in the background;
// pgxpool waits for its leases to return before closing their connections.
func (m *Manager) retireLocked(tp *tenantPool, reason string) {
	if m.pools[tp.target.TenantID] == tp {
		delete(m.pools, tp.target.TenantID)
	}
	if !tp.retired.CompareAndSwap(false, true) {
		return
	}
	m.metrics.retired.WithLabelValues(reason).Inc()
	var frees int64
	if tp.leases == 0 {
		frees = int64(tp.pool.Stat().IdleConns())
	}
	m.freeing.Add(frees)
	m.closing.Add(1)
	go func() {
		defer m.closing.Done()
		tp.pool.Close()
		m.freed(frees)
	}()
}

// Retire closes tenant id's pool, if there is one, once its leases have
// returned: its database was dropped, suspended or moved.
func (m *Manager) Retire(tenantID int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tp := m.pools[tenantID]; tp != nil {
		m.retireLocked(tp, "event")
	}
}

// sweep drops pools left without connections and unused for MaxConnIdle,
// so that tenants seen once do not keep a pool (and its goroutine) forever.
func (m *Manager) sweep() {
	t := time.NewTicker(min(m.opts.MaxConnIdle, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		cutoff := time.Now().Add(-m.opts.MaxConnIdle)
		for _, tp := range m.pools {
			if tp.leases == 0 && tp.lastUsed.Before(cutoff) && tp.pool.Stat().TotalConns() == 0 {
				m.retireLocked(tp, "unused")
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
	for _, tp := range m.pools {
		m.retireLocked(tp, "shutdown")
	}
	m.mu.Unlock()
	m.closing.Wait()
}
