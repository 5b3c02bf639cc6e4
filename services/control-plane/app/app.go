// Package app wires the control plane: configuration, the core database,
// keys, the public and internal HTTP listeners and the background workers.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/config"
	"tenantbase/libs/httpx"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/problem"
	"tenantbase/migrations"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/deployment"
	"tenantbase/services/control-plane/internal/provisioning"
)

// Addrs are the bound addresses of the two listeners.
type Addrs struct {
	Public   string
	Internal string
}

// deps is what the parts of the control plane are built from.
type deps struct {
	cfg  Config
	log  *slog.Logger
	pool *pgxpool.Pool
	// deployment is this deployment's id, stored in the core database.
	deployment string
	keys       *auth.Keys
	passwords  *auth.Passwords
	metrics    *httpx.Metrics
	public     *echo.Echo
	internal   *echo.Echo
	// accounts is set by mountAccounts, which runs first.
	accounts *accounts.Service
	// jobs is set by mountOrganizations; it enqueues background work in a
	// caller's transaction (see ownerPasswordChanged).
	jobs *provisioning.Jobs
}

// Run serves the control plane until ctx is cancelled, then shuts down
// gracefully. ready, when not nil, is called once both listeners are bound.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(Addrs)) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	log.Info("starting control plane", "config", cfg)

	if _, err := Migrate(ctx, cfg); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL.Reveal())
	if err != nil {
		return fmt.Errorf("core database: %w", err)
	}
	defer pool.Close()
	dep, err := deployment.Ensure(ctx, pool, cfg.DeploymentID)
	if err != nil {
		return err
	}
	log.Info("deployment", "deployment_id", dep)

	priv, err := auth.LoadSigningKey(cfg.JWTSigningKey.Reveal(), cfg.KeysDir, "control-plane-jwt")
	if err != nil {
		return err
	}
	passwords, err := auth.NewPasswords(cfg.BcryptCost)
	if err != nil {
		return err
	}
	metrics := httpx.NewMetrics()
	d := &deps{
		cfg:        cfg,
		log:        log,
		pool:       pool,
		deployment: dep,
		keys:       auth.NewKeys(cfg.JWTIssuer, priv),
		passwords:  passwords,
		metrics:    metrics,
		public:     httpx.New(httpx.Options{Log: log, Errors: errorTable, Metrics: metrics}),
		internal:   httpx.New(httpx.Options{Log: log, Errors: errorTable}),
	}
	d.internal.GET("/metrics", echo.WrapHandler(metrics.Handler()))
	d.public.GET("/health", httpx.Health(cfg.Version))
	d.public.GET("/health/db", d.handleHealthDB)
	d.public.GET("/.well-known/jwks.json", func(c echo.Context) error { return c.JSON(http.StatusOK, d.keys.JWKS()) })
	d.public.GET("/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", OpenAPI) })

	if err := mountAccounts(ctx, d); err != nil {
		return err
	}
	background, err := mountOrganizations(ctx, d)
	if err != nil {
		return err
	}

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
	log.Info("control plane listening", "public", addrs.Public, "internal", addrs.Internal)
	if ready != nil {
		ready(addrs)
	}

	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	bgDone := make(chan error, 1)
	go func() { bgDone <- background(bgCtx) }()

	serveErr := httpx.Serve(ctx, cfg.ShutdownTimeout,
		httpx.Server{Listener: pl, Handler: d.public},
		httpx.Server{Listener: il, Handler: d.internal})
	stopBackground()
	bgErr := <-bgDone
	d.accounts.Close()
	log.Info("control plane stopped")
	return errors.Join(serveErr, bgErr)
}

// Migrate applies the core migrations and returns the schema version.
func Migrate(ctx context.Context, cfg Config) (uint, error) {
	return pgutil.Migrate(cfg.DatabaseURL.Reveal(), migrations.Core, "core")
}

func (d *deps) handleHealthDB(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := d.pool.Ping(ctx); err != nil {
		httpx.Logger(ctx).Warn("core database unreachable", "error", err.Error())
		return problem.New(http.StatusServiceUnavailable, "database_unavailable", "the core database is unreachable")
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ok", "database": "ok"})
}

func (c Config) validate() error {
	switch c.OwnerSignupPolicy {
	case "open", "admin":
	default:
		return fmt.Errorf("config: OWNER_SIGNUP_POLICY must be open or admin, got %q", c.OwnerSignupPolicy)
	}
	if c.LoginMaxFailures < 1 || c.LoginLockout <= 0 {
		return errors.New("config: LOGIN_MAX_FAILURES must be at least 1 and LOGIN_LOCKOUT positive")
	}
	if c.AccessTokenTTL <= 0 || c.RefreshTokenTTL <= 0 {
		return errors.New("config: ACCESS_TOKEN_TTL and REFRESH_TOKEN_TTL must be positive")
	}
	if err := deployment.Validate(c.DeploymentID); err != nil {
		return fmt.Errorf("config: DEPLOYMENT_ID: %w", err)
	}
	if err := c.eventChannel().Validate(); err != nil {
		return fmt.Errorf("config: EVENTS_STREAM, EVENTS_SUBJECT_PREFIX: %w", err)
	}
	if err := c.checkNATSLogin(); err != nil {
		return err
	}
	if err := CheckPublicURL(c.Env, c.PublicURL); err != nil {
		return err
	}
	if (c.BootstrapAdminEmail == "") != (c.BootstrapAdminPassword == "") {
		return errors.New("config: set both BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD, or neither")
	}
	return config.RequireInProduction(c.Env, map[string]config.Secret{
		"JWT_SIGNING_KEY": c.JWTSigningKey,
		"CREDENTIALS_KEY": c.CredentialsKey,
	}, c.ServiceToken)
}
