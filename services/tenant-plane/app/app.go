// Package app wires the tenant plane: tenant resolution, per-tenant pools,
// the public API and the internal metrics listener.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/auth"
	"tenantbase/libs/config"
	"tenantbase/libs/events"
	"tenantbase/libs/httpx"
	"tenantbase/services/tenant-plane/internal/accounts"
	"tenantbase/services/tenant-plane/internal/pools"
	"tenantbase/services/tenant-plane/internal/tenants"
)

// Addrs are the bound addresses of the two listeners.
type Addrs struct {
	Public   string
	Internal string
}

// api is what the handlers are built from.
type api struct {
	resolver *tenants.Resolver
	pools    *pools.Manager
	accounts *accounts.Service
}

// Run serves the tenant plane until ctx is cancelled, then shuts down
// gracefully. ready, when not nil, is called once both listeners are bound.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(Addrs)) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	log.Info("starting tenant plane", "config", cfg)
	started := time.Now()

	priv, err := auth.LoadSigningKey(cfg.JWTSigningKey.Reveal(), cfg.KeysDir, "tenant-plane-jwt")
	if err != nil {
		return err
	}
	keys := auth.NewKeys(cfg.JWTIssuer, priv)
	passwords, err := auth.NewPasswords(cfg.BcryptCost)
	if err != nil {
		return err
	}
	metrics := httpx.NewMetrics()

	directory := tenants.NewClient(cfg.ControlPlaneURL, cfg.ServiceToken.Reveal(), &http.Client{Timeout: cfg.LookupTimeout})
	resolver := tenants.NewResolver(directory, tenants.Options{
		TTL:           cfg.CacheTTL,
		NegativeTTL:   cfg.NegativeCacheTTL,
		LookupTimeout: cfg.LookupTimeout,
	}, log.With("component", "tenants"), metrics.Registry)
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
		resolver: resolver,
		pools:    pm,
		accounts: accounts.New(passwords, keys, accounts.Options{
			AccessTokenTTL:  cfg.AccessTokenTTL,
			RefreshTokenTTL: cfg.RefreshTokenTTL,
			Throttle:        auth.Throttle{MaxFailures: cfg.LoginMaxFailures, Lockout: cfg.LoginLockout},
		}),
	}

	stopEvents, err := a.followEvents(cfg, started, log.With("component", "events"))
	if err != nil {
		return err
	}
	defer stopEvents()

	public := httpx.New(httpx.Options{Log: log, Errors: errorTable, Metrics: metrics})
	public.HTTPErrorHandler = handleError(errorTable)
	internal := httpx.New(httpx.Options{Log: log, Errors: errorTable})
	jwks := func(c echo.Context) error { return c.JSON(http.StatusOK, keys.JWKS()) }
	public.GET("/health", httpx.Health(cfg.Version))
	public.GET("/.well-known/jwks.json", jwks)
	public.GET("/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", OpenAPI) })
	a.mountAccounts(public)
	internal.GET("/metrics", echo.WrapHandler(metrics.Handler()))
	internal.GET("/.well-known/jwks.json", jwks)

	pl, err := httpx.Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	il, err := httpx.Listen(cfg.InternalAddr)
	if err != nil {
		pl.Close()
		return err
	}
	addrs := Addrs{Public: pl.Addr().String(), Internal: il.Addr().String()}
	log.Info("tenant plane listening", "public", addrs.Public, "internal", addrs.Internal)
	if ready != nil {
		ready(addrs)
	}
	err = httpx.Serve(ctx, cfg.ShutdownTimeout,
		httpx.Server{Listener: pl, Handler: public},
		httpx.Server{Listener: il, Handler: internal})
	log.Info("tenant plane stopped")
	return err
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

// applyEvent drops what the cache knows of the tenant, and closes its
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

func (c Config) validate() error {
	switch {
	case c.PoolBudget < 1 || c.PoolPerTenantMax < 1:
		return errors.New("config: POOL_BUDGET and POOL_PER_TENANT_MAX must be at least 1")
	case c.PoolAcquireWait <= 0 || c.PoolMaxConnIdle <= 0:
		return errors.New("config: POOL_ACQUIRE_TIMEOUT and POOL_MAX_CONN_IDLE must be positive")
	case c.CacheTTL <= 0 || c.NegativeCacheTTL <= 0 || c.LookupTimeout <= 0:
		return errors.New("config: TENANT_CACHE_TTL, TENANT_NEGATIVE_CACHE_TTL and TENANT_LOOKUP_TIMEOUT must be positive")
	case c.AccessTokenTTL <= 0 || c.RefreshTokenTTL <= 0:
		return errors.New("config: ACCESS_TOKEN_TTL and REFRESH_TOKEN_TTL must be positive")
	case c.LoginMaxFailures < 1 || c.LoginLockout <= 0:
		return errors.New("config: LOGIN_MAX_FAILURES must be at least 1 and LOGIN_LOCKOUT positive")
	case c.ServiceToken == "":
		return errors.New("config: SERVICE_TOKEN is required")
	case (c.NATSUser == "") != (c.NATSPassword == ""):
		return errors.New("config: set both NATS_USER and NATS_PASSWORD, or neither")
	}
	if err := c.eventChannel().Validate(); err != nil {
		return fmt.Errorf("config: EVENTS_STREAM, EVENTS_SUBJECT_PREFIX: %w", err)
	}
	return config.RequireInProduction(c.Env, map[string]config.Secret{"JWT_SIGNING_KEY": c.JWTSigningKey}, c.ServiceToken)
}
