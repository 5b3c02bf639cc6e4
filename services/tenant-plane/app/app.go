// Package app wires the tenant plane: tenant resolution, per-tenant pools,
// the public API and the internal metrics listener.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/auth"
	"tenantbase/libs/events"
	"tenantbase/libs/httpx"
	"tenantbase/libs/tenantdb"
	"tenantbase/services/tenant-plane/internal/accounts"
	"tenantbase/services/tenant-plane/internal/pools"
	"tenantbase/services/tenant-plane/internal/tenants"
)

// Addrs are the bound addresses of the two listeners.
type Addrs = httpx.Addrs

// Option changes how Run runs; production runs take none.
type Option func(*options)

type options struct {
	ready     func(Addrs)
	minSchema int
}

// WithReady has Run call ready once both listeners are bound.
func WithReady(ready func(Addrs)) Option { return func(o *options) { o.ready = ready } }

// WithMinSchemaVersion replaces tenantdb.MinSchemaVersion, the lowest
// tenant schema version served: tests play a release whose contract step
// needs a version tenants are not at yet.
func WithMinSchemaVersion(v int) Option { return func(o *options) { o.minSchema = v } }

// api is what the handlers are built from.
type api struct {
	resolver *tenants.Resolver
	pools    *pools.Manager
	accounts *accounts.Service
	// minSchema is the lowest tenant schema version the handlers work
	// with; tenants below it answer 503 tenant_migrating.
	minSchema int
}

// Run serves the tenant plane until ctx is cancelled, then shuts down
// gracefully: HTTP first, then the event consumer, then the pools.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) error {
	o := options{minSchema: tenantdb.MinSchemaVersion}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log.Info("starting tenant plane", "config", cfg)
	started := time.Now()

	// Keys and passwords.
	priv, err := auth.LoadSigningKey(cfg.JWTSigningKey.Reveal(), cfg.KeysDir, "tenant-plane-jwt")
	if err != nil {
		return err
	}
	previous, err := auth.LoadVerifyKeys(cfg.JWTPreviousKeys.Reveal())
	if err != nil {
		return err
	}
	keys := auth.NewKeys(cfg.JWTIssuer, priv, previous...)
	passwords, err := auth.NewPasswords(cfg.BcryptCost, auth.PasswordOptions{
		Concurrency: cfg.BcryptConcurrency, QueueWait: cfg.BcryptQueueWait,
	})
	if err != nil {
		return err
	}
	metrics := httpx.NewMetrics()

	// Tenant resolution and the pools of tenant databases.
	directory := tenants.NewClient(cfg.ControlPlaneURL, cfg.ServiceToken.Reveal(), &http.Client{Timeout: cfg.LookupTimeout})
	resolver, err := tenants.NewResolver(directory, tenants.Options{
		TTL:           cfg.CacheTTL,
		NegativeTTL:   cfg.NegativeCacheTTL,
		LookupTimeout: cfg.LookupTimeout,
		Size:          cfg.CacheSize,
		NegativeSize:  cfg.NegativeCacheSize,
		// A tenant below it is asked for again soon: it is being migrated.
		MinSchemaVersion: o.minSchema,
	}, log.With("component", "tenants"), metrics.Registry)
	if err != nil {
		return err
	}
	poolLog := log.With("component", "pools")
	pm, err := pools.New(pools.Options{
		Budget:         cfg.PoolBudget,
		PerTenant:      cfg.PoolPerTenantMax,
		AcquireTimeout: cfg.PoolAcquireWait,
		MaxConnIdle:    cfg.PoolMaxConnIdle,
		SSLMode:        cfg.TenantDBSSLMode,
		// Wrong credentials or a dropped database may mean the directory
		// changed (rotation, relocation): ask it again on the next request.
		OnConnectError: func(id int64, err error) {
			poolLog.Warn("cannot connect to the tenant database", "tenant_id", id, "error", err.Error())
			resolver.Expire(id)
		},
	}, poolLog, metrics.Registry)
	if err != nil {
		return err
	}
	defer pm.Close()
	a := &api{
		resolver:  resolver,
		pools:     pm,
		minSchema: o.minSchema,
		accounts: accounts.New(passwords, keys, accounts.Options{
			AccessTokenTTL:  cfg.AccessTokenTTL,
			RefreshTokenTTL: cfg.RefreshTokenTTL,
			Throttle:        auth.Throttle{MaxFailures: cfg.LoginMaxFailures, Lockout: cfg.LoginLockout},
		}),
	}

	// Events that invalidate the cache and retire pools.
	stopEvents, err := a.followEvents(cfg, started, log.With("component", "events"))
	if err != nil {
		return err
	}
	defer stopEvents()

	// HTTP.
	trusted, err := httpx.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return err
	}
	public := httpx.New(httpx.Options{Log: log, Errors: errorTable, Metrics: metrics, TrustedProxies: trusted})
	internal := httpx.New(httpx.Options{Log: log, Errors: errorTable})
	registerServiceRoutes(public, internal, cfg.Version, keys, metrics)
	a.registerAccountRoutes(public)

	listeners, err := httpx.Listen(cfg.HTTPAddr, cfg.InternalAddr)
	if err != nil {
		return err
	}
	log.Info("tenant plane listening", "public", listeners.Addrs().Public, "internal", listeners.Addrs().Internal)
	if o.ready != nil {
		o.ready(listeners.Addrs())
	}
	err = listeners.Serve(ctx, cfg.ShutdownTimeout, public, internal)
	log.Info("tenant plane stopped")
	return err
}

// registerServiceRoutes registers health, keys, the API document and metrics.
func registerServiceRoutes(public, internal *echo.Echo, version string, keys *auth.Keys, metrics *httpx.Metrics) {
	jwks := func(c echo.Context) error { return c.JSON(http.StatusOK, keys.JWKS()) }
	public.GET("/health", httpx.Health(version))
	public.GET("/.well-known/jwks.json", jwks)
	public.GET("/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", OpenAPI) })
	internal.GET("/metrics", echo.WrapHandler(metrics.Handler()))
	internal.GET("/.well-known/jwks.json", jwks)
}

// followEvents connects to NATS and applies tenant events to the cache
// and the pools until the returned stop is called. A NATS server that is
// down does not keep the plane from serving: the client keeps trying, and
// the cache TTL bounds staleness meanwhile.
func (a *api) followEvents(cfg Config, since time.Time, log *slog.Logger) (stop func(), err error) {
	opts := []nats.Option{
		nats.Name("tenant-plane"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "error", err.Error())
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("reconnected to NATS") }),
		// Permission violations answer no request: without this they would
		// only show up as timeouts.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// An ordered consumer that starts over deletes its old consumer,
			// which a user with follower permissions may not; the server
			// drops it once inactive.
			if strings.Contains(err.Error(), `"$JS.API.CONSUMER.DELETE.`) {
				log.Debug("old consumer left to expire", "error", err.Error())
				return
			}
			log.Error("nats error", "error", err.Error())
		}),
	}
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword.Reveal()))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tenants.Follow(ctx, js, cfg.eventChannel(), since, log, a.applyEvent)
	}()
	return func() {
		cancel()
		<-done
		nc.Close()
	}, nil
}

// applyEvent drops what the cache knows of the tenant (tenant.migrated
// included: the next request sees the new schema version), and closes its
// pool when its connections must not be used any longer. Tenant ids are
// unique within a deployment only: events of another deployment sharing
// the stream are ignored.
func (a *api) applyEvent(id int64, ev events.Envelope) {
	if !ev.FromDeployment(a.resolver.Deployment()) {
		return
	}
	a.resolver.Invalidate(id)
	switch ev.Type {
	case events.TenantSuspended, events.TenantDeleted, events.TenantUpdated:
		a.pools.Retire(id)
	}
}
