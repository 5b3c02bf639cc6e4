// Package app wires the control plane: configuration, the core database,
// keys, the public and internal HTTP listeners and the background workers.
// Run builds every part in one sequence; the register functions only
// register routes.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/problem"
	"tenantbase/libs/tenantdb"
	"tenantbase/migrations"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/deployment"
	"tenantbase/services/control-plane/internal/fleet"
	"tenantbase/services/control-plane/internal/mailer"
	"tenantbase/services/control-plane/internal/natsbus"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/outbox"
	"tenantbase/services/control-plane/internal/provisioning"
	"tenantbase/services/control-plane/internal/secretbox"
)

// Addrs are the bound addresses of the two listeners.
type Addrs = httpx.Addrs

// Option changes how Run runs; production runs take none.
type Option func(*options)

type options struct {
	ready         func(Addrs)
	beforeStep    func(ctx context.Context, orgID int64, step string) error
	migrations    *tenantdb.Migrations
	beforeMigrate func(ctx context.Context, orgID int64) error
}

// WithReady has Run call ready once both listeners are bound.
func WithReady(ready func(Addrs)) Option { return func(o *options) { o.ready = ready } }

// WithBeforeProvisionStep has f run before every provisioning step; an
// error it returns fails the step. Tests inject failures and count steps
// with it.
func WithBeforeProvisionStep(f func(ctx context.Context, orgID int64, step string) error) Option {
	return func(o *options) { o.beforeStep = f }
}

// WithTenantMigrations replaces the embedded tenant migrations: new
// tenants are provisioned with m, and migration runs apply m. Tests ship a
// migration the binary does not have with it.
func WithTenantMigrations(m tenantdb.Migrations) Option {
	return func(o *options) { o.migrations = &m }
}

// WithBeforeTenantMigration has f run before a migration run migrates a
// tenant's database; an error it returns fails the tenant. Tests count
// migrations with it.
func WithBeforeTenantMigration(f func(ctx context.Context, orgID int64) error) Option {
	return func(o *options) { o.beforeMigrate = f }
}

// Run serves the control plane until ctx is cancelled, then shuts down
// gracefully: HTTP first, then the background work, then NATS and the pools.
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log.Info("starting control plane", "config", cfg)

	// The core database and this deployment's identity.
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
	if err := provisioning.RestrictDatabase(ctx, pool); err != nil {
		return fmt.Errorf("close the core database to tenant roles: %w", err)
	}

	// Keys and secrets.
	priv, err := auth.LoadSigningKey(cfg.JWTSigningKey.Reveal(), cfg.KeysDir, "control-plane-jwt")
	if err != nil {
		return err
	}
	previousJWT, err := auth.LoadVerifyKeys(cfg.JWTPreviousKeys.Reveal())
	if err != nil {
		return err
	}
	keys := auth.NewKeys(cfg.JWTIssuer, priv, previousJWT...)
	passwords, err := auth.NewPasswords(cfg.BcryptCost, auth.PasswordOptions{
		Concurrency: cfg.BcryptConcurrency, QueueWait: cfg.BcryptQueueWait,
	})
	if err != nil {
		return err
	}
	credKey, err := secretbox.LoadKey(cfg.CredentialsKey.Reveal(), cfg.KeysDir, "credentials")
	if err != nil {
		return err
	}
	previousCred, err := secretbox.ParseKeys(cfg.CredentialsPreviousKeys.Reveal())
	if err != nil {
		return err
	}
	box, err := secretbox.New(credKey, previousCred...)
	if err != nil {
		return err
	}

	// Core accounts.
	mail, err := newMailer(cfg, log)
	if err != nil {
		return err
	}
	accountSvc := accounts.New(pool, passwords, keys, mail, accounts.Options{
		PublicURL:       cfg.PublicURL,
		OpenOwnerSignup: cfg.OwnerSignupPolicy == "open",
		AccessTokenTTL:  cfg.AccessTokenTTL,
		RefreshTokenTTL: cfg.RefreshTokenTTL,
		Throttle:        auth.Throttle{MaxFailures: cfg.LoginMaxFailures, Lockout: cfg.LoginLockout},
		Log:             log,

		DefaultMaxOrganizations: cfg.OwnerMaxOrganizations,
		InvitationTTL:           cfg.InvitationTTL,
	})
	defer accountSvc.Close()
	if err := ensureBootstrapAdmin(ctx, cfg, accountSvc, log); err != nil {
		return err
	}

	// Organizations, the database servers they live on, their background
	// jobs and their events; the migration runs that move their databases
	// to other schema versions.
	tenantMigrations := tenantdb.Embedded()
	if o.migrations != nil {
		tenantMigrations = *o.migrations
	}
	jobs, err := provisioning.NewJobs(pool, cfg.ProvisionMaxAttempts)
	if err != nil {
		return err
	}
	orgs := organizations.NewStore(pool, jobs, dep)
	servers := dbservers.New(pool, box, orgs)
	if err := ensureDefaultServer(ctx, cfg, servers, orgs, log); err != nil {
		return err
	}
	prov, err := provisioning.New(pool, orgs, servers, jobs, box, provisioning.Options{
		Deployment:      dep,
		CoreDSN:         cfg.DatabaseURL.Reveal(),
		ConnectionLimit: cfg.TenantConnectionLimit,
		Spares:          cfg.TenantSpareDatabases,
		MoveGrace:       cfg.MoveGracePeriod,
		MoveTimeout:     cfg.MoveTimeout,
		PGBinDir:        cfg.PGBinDir,
		BeforeStep:      beforeStep(cfg.ProvisionStepMarker, cfg.ProvisionStepDelay, o.beforeStep),
		Migrations:      &tenantMigrations,
	}, log)
	if err != nil {
		return err
	}
	defer prov.Close()
	fleetSvc, err := fleet.New(pool, orgs, prov, fleet.Options{
		Migrations:    tenantMigrations,
		Workers:       cfg.TenantMigrateWorkers,
		StepDelay:     cfg.TenantMigrateStepDelay,
		BeforeMigrate: o.beforeMigrate,
	}, log)
	if err != nil {
		return err
	}
	runner, err := provisioning.NewRunner(pool, prov, provisioning.RunnerOptions{
		Workers:        cfg.Workers,
		MaxAttempts:    cfg.ProvisionMaxAttempts,
		RetryBackoff:   cfg.ProvisionRetryBackoff,
		JobTimeout:     cfg.JobTimeout,
		RescueAfter:    cfg.JobRescueAfter,
		StopTimeout:    cfg.ShutdownTimeout,
		ReconcileEvery: cfg.ReconcileInterval,
		Queues:         []provisioning.Queue{fleetSvc.Queue()},
	}, log)
	if err != nil {
		return err
	}
	eventLog := log.With("component", "events")
	bus, err := natsbus.Connect(cfg.NATSURL, "control-plane", natsbus.StreamOptions{
		Channel: cfg.eventChannel(), MaxAge: cfg.EventsMaxAge, Replicas: cfg.EventsReplicas,
	}, eventLog, cfg.natsLogin()...)
	if err != nil {
		return err
	}
	defer bus.Close()
	ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := bus.EnsureStream(ectx); err != nil {
		// Events wait in the outbox: NATS being down never stops the API.
		eventLog.Warn("event stream not ready yet; events wait in the outbox", "error", err.Error())
	}
	cancel()
	relay := &outbox.Relay{
		Pool:      pool,
		DSN:       cfg.DatabaseURL.Reveal(),
		Publisher: bus,
		Log:       eventLog,
		Retention: cfg.EventsMaxAge,
		Wake:      bus.Reconnected(),
	}

	// HTTP.
	metrics := httpx.NewMetrics()
	relay.Metrics = outbox.NewMetrics(metrics.Registry, func() (float64, error) {
		n, err := relay.Pending(context.Background())
		return float64(n), err
	})
	trusted, err := httpx.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return err
	}
	public := httpx.New(httpx.Options{Log: log, Errors: errorTable, Metrics: metrics, TrustedProxies: trusted})
	internal := httpx.New(httpx.Options{Log: log, Errors: errorTable})
	mw := middleware{keys: keys, accounts: accountSvc, serviceToken: cfg.ServiceToken.Reveal()}
	registerServiceRoutes(public, internal, cfg.Version, keys, pool, metrics)
	registerAccountRoutes(public, accountsAPI{svc: accountSvc}, mw)
	registerPasswordRoute(public, passwordAPI{accounts: accountSvc, jobs: jobs}, mw)
	orgRoutes := orgAPI{accounts: accountSvc, store: orgs, servers: servers}
	registerOrganizationRoutes(public, orgRoutes, mw)
	registerMigrationRoutes(public, migrationAPI{svc: fleetSvc}, mw)
	registerAdminRoutes(public, adminAPI{orgAPI: orgRoutes, db: pool}, mw)
	registerDBServerRoutes(public, dbServerAPI{servers: servers}, mw)
	registerInternalRoutes(internal, internalAPI{store: orgs, box: box, deployment: dep}, mw)

	listeners, err := httpx.Listen(cfg.HTTPAddr, cfg.InternalAddr)
	if err != nil {
		return err
	}
	log.Info("control plane listening", "public", listeners.Addrs().Public, "internal", listeners.Addrs().Internal)
	if o.ready != nil {
		o.ready(listeners.Addrs())
	}

	// Background work runs on a context of its own, so that it stops only
	// once the listeners have drained.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var bgErrs [3]error
	for i, run := range []func(context.Context) error{
		func(ctx context.Context) error {
			// Jobs drop and change tenant objects only when they carry
			// their tag, so tenants provisioned before tags get theirs first.
			if err := tagLegacy(ctx, prov, log); err != nil {
				return nil
			}
			// After a key rotation, stored passwords move to the new key.
			if n, err := prov.Reseal(ctx); err != nil {
				log.Error("sealing tenant passwords with the current credentials key failed", "error", err.Error())
			} else if n > 0 {
				log.Info("tenant passwords sealed with the current credentials key", "count", n)
			}
			return runner.Run(ctx)
		},
		relay.Run,
		// A run interrupted by a crash goes on; tenants behind the newest
		// migration of this binary are rolled forward.
		func(ctx context.Context) error { return fleetSvc.Start(ctx, cfg.TenantMigrateOnStart) },
	} {
		wg.Go(func() {
			if bgErrs[i] = run(bgCtx); bgErrs[i] != nil {
				log.Error("background work stopped", "error", bgErrs[i].Error())
			}
		})
	}
	serveErr := listeners.Serve(ctx, cfg.ShutdownTimeout, public, internal)
	stopBackground()
	wg.Wait()
	log.Info("control plane stopped")
	return errors.Join(serveErr, bgErrs[0], bgErrs[1], bgErrs[2])
}

// Migrate applies the core migrations and returns the schema version.
func Migrate(ctx context.Context, cfg Config) (uint, error) {
	return pgutil.Migrate(cfg.DatabaseURL.Reveal(), migrations.Core, "core")
}

// ensureDefaultServer registers the server of TENANT_DB_ADMIN_URL (or the
// core database's) as "default" on the first start, and records it as the
// server of the tenants provisioned before servers were registered.
func ensureDefaultServer(ctx context.Context, cfg Config, servers *dbservers.Registry, orgs *organizations.Store, log *slog.Logger) error {
	s, created, err := servers.EnsureDefault(ctx, dbservers.Registration{
		AdminURL: cfg.tenantAdminDSN(), Host: cfg.TenantDBHost, Port: cfg.TenantDBPort, MaxTenants: cfg.TenantDBMaxTenants,
	})
	if err != nil {
		return err
	}
	if created {
		log.Info("registered the default database server", "db_server_id", s.ID, "host", s.Host, "port", s.Port, "max_tenants", s.MaxTenants)
	} else if stored, err := servers.AdminURL(s); err != nil {
		// Jobs on tenants fail until the key is right; the API works.
		log.Error("the registered admin DSN of the default database server does not decrypt: is CREDENTIALS_KEY the one of the first start?",
			"db_server_id", s.ID)
	} else if stored != cfg.tenantAdminDSN() {
		log.Warn("TENANT_DB_ADMIN_URL differs from the admin DSN registered for the default database server on the first start; the registered one is used",
			"db_server_id", s.ID)
	}
	n, err := orgs.AdoptUnplaced(ctx, s.ID)
	if err != nil {
		return fmt.Errorf("record the server of earlier tenants: %w", err)
	}
	if n > 0 {
		log.Info("recorded the default database server for tenants provisioned before servers were registered", "tenants", n)
	}
	return nil
}

// newMailer sends over SMTP_ADDR, or writes messages to the log when none
// is configured (never in production: Validate refuses that, so links
// carrying single-use tokens never reach a production log).
func newMailer(cfg Config, log *slog.Logger) (accounts.Mailer, error) {
	if cfg.SMTPAddr == "" {
		log.Warn("no SMTP server configured (SMTP_ADDR): verification links are written to the log")
		return mailer.Log{Fallback: log}, nil
	}
	return mailer.NewSMTP(mailer.SMTPOptions{
		Addr: cfg.SMTPAddr, From: cfg.SMTPFrom, Username: cfg.SMTPUsername, Password: cfg.SMTPPassword.Reveal(),
		RequireTLS: cfg.SMTPRequireTLS,
	})
}

// ensureBootstrapAdmin creates the configured platform admin when absent.
func ensureBootstrapAdmin(ctx context.Context, cfg Config, svc *accounts.Service, log *slog.Logger) error {
	if cfg.BootstrapAdminEmail == "" {
		return nil
	}
	created, err := svc.EnsureAdmin(ctx, cfg.BootstrapAdminEmail, cfg.BootstrapAdminPassword.Reveal())
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	if created {
		log.Info("bootstrap admin created", "email", cfg.BootstrapAdminEmail)
	}
	return nil
}

// beforeStep combines the step marker and delay of crash tests and a
// test's hook.
func beforeStep(marker string, delay time.Duration, hook func(context.Context, int64, string) error) func(context.Context, int64, string) error {
	if marker == "" && delay <= 0 {
		return hook
	}
	return func(ctx context.Context, orgID int64, step string) error {
		if marker != "" {
			f, err := os.OpenFile(marker, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(f, "%d %d %s\n", os.Getpid(), orgID, step)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if hook != nil {
			return hook(ctx, orgID, step)
		}
		return nil
	}
}

// tagLegacy runs prov.TagLegacy until it succeeds, retrying while the
// tenant database server cannot be reached; it fails only when ctx ends.
func tagLegacy(ctx context.Context, prov *provisioning.Provisioner, log *slog.Logger) error {
	wait := time.Second
	for {
		err := prov.TagLegacy(ctx)
		if err == nil {
			return nil
		}
		log.Error("tagging tenants provisioned before tags failed; jobs wait", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// registerServiceRoutes registers health, keys, the API document and metrics.
func registerServiceRoutes(public, internal *echo.Echo, version string, keys *auth.Keys, pool *pgxpool.Pool, metrics *httpx.Metrics) {
	public.GET("/health", httpx.Health(version))
	public.GET("/health/db", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		if err := pool.Ping(ctx); err != nil {
			httpx.Logger(ctx).Warn("core database unreachable", "error", err.Error())
			return problem.New(http.StatusServiceUnavailable, "database_unavailable", "the core database is unreachable")
		}
		return c.JSON(http.StatusOK, map[string]any{"status": "ok", "database": "ok"})
	})
	public.GET("/.well-known/jwks.json", func(c echo.Context) error { return c.JSON(http.StatusOK, keys.JWKS()) })
	public.GET("/openapi.yaml", func(c echo.Context) error { return c.Blob(http.StatusOK, "application/yaml", OpenAPI) })
	internal.GET("/metrics", echo.WrapHandler(metrics.Handler()))
}
