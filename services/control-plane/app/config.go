package app

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"tenantbase/libs/auth"
	"tenantbase/libs/config"
	"tenantbase/libs/events"
	"tenantbase/libs/httpx"
	"tenantbase/services/control-plane/internal/deployment"
	"tenantbase/services/control-plane/internal/provisioning"
	"tenantbase/services/control-plane/internal/secretbox"
)

// Config is the control plane's whole configuration, read from the
// environment. Defaults work for a local run against 127.0.0.1.
type Config struct {
	Env     string `envconfig:"ENV" default:"local"`
	Version string `envconfig:"VERSION" default:"dev"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `envconfig:"LOG_LEVEL" default:"info"`

	// HTTPAddr serves the public API (routed by the ingress).
	HTTPAddr string `envconfig:"HTTP_ADDR" default:"127.0.0.1:8081"`
	// InternalAddr serves /internal/... and /metrics; the ingress never routes to it.
	InternalAddr string `envconfig:"INTERNAL_ADDR" default:"127.0.0.1:8082"`
	// PublicURL is where users reach the API; verification links point here.
	PublicURL string `envconfig:"PUBLIC_URL" default:"http://127.0.0.1:8000"`
	// TrustedProxies are the addresses (CIDR prefixes, comma-separated) of
	// the ingress: only from them are X-Real-IP and X-Forwarded-For taken
	// as the client's address (in audit rows). The default trusts loopback
	// and private networks, where the ingress runs in every shipped setup
	// and from where alone the public port is reachable (NetworkPolicies).
	TrustedProxies string `envconfig:"TRUSTED_PROXIES" default:"127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"`

	// DatabaseURL is the core database.
	DatabaseURL config.Secret `envconfig:"DATABASE_URL" default:"postgres://postgres@127.0.0.1:5432/tenantbase?sslmode=disable"`
	// TenantDBAdminURL is an admin connection (CREATEROLE, CREATEDB) to the
	// server registered as "default" on the first start; empty means the
	// core database's server. Later servers are registered through
	// POST /admin/db-servers; this setting is not read again once "default"
	// exists.
	TenantDBAdminURL config.Secret `envconfig:"TENANT_DB_ADMIN_URL"`
	// TenantDBHost/Port are the address the tenant plane uses to reach the
	// default server; empty means the host and port of TenantDBAdminURL.
	TenantDBHost string `envconfig:"TENANT_DB_HOST"`
	TenantDBPort int    `envconfig:"TENANT_DB_PORT"`
	// TenantDBMaxTenants is the max_tenants of the default server.
	TenantDBMaxTenants int `envconfig:"TENANT_DB_MAX_TENANTS" default:"2000"`
	// TenantConnectionLimit is the CONNECTION LIMIT of every tenant login
	// role (-1: none): at least tenant-plane replicas x POOL_PER_TENANT_MAX,
	// plus a few for the control plane.
	TenantConnectionLimit int `envconfig:"TENANT_CONNECTION_LIMIT" default:"20"`
	// TenantSpareDatabases is how many spare tenant databases each active
	// server keeps ready, so that provisioning renames one instead of
	// waiting for CREATE DATABASE; 0 turns them off.
	TenantSpareDatabases int `envconfig:"TENANT_SPARE_DATABASES" default:"2"`
	// MoveGracePeriod keeps the source database of a moved tenant this long
	// before it is dropped; longer than the tenant plane's TENANT_CACHE_TTL,
	// so that every replica has switched even if it missed the event.
	MoveGracePeriod time.Duration `envconfig:"MOVE_GRACE_PERIOD" default:"15m"`
	// MoveTimeout bounds one attempt at moving a tenant to another server.
	MoveTimeout time.Duration `envconfig:"MOVE_TIMEOUT" default:"30m"`
	// PGBinDir holds pg_dump and pg_restore (at least as new as every tenant
	// database server); empty means PATH, then the newest /usr/lib/postgresql/*/bin.
	PGBinDir string `envconfig:"PG_BIN_DIR"`
	// CredentialsKey encrypts tenant database passwords at rest (AES-256-GCM):
	// 32 bytes, base64. Empty outside production means a key generated once in KeysDir.
	CredentialsKey config.Secret `envconfig:"CREDENTIALS_KEY"`
	// CredentialsPreviousKeys are keys CREDENTIALS_KEY replaced
	// (comma-separated base64): stored passwords still open with them, and
	// are sealed again with the current key at start (docs/operations.md).
	CredentialsPreviousKeys config.Secret `envconfig:"CREDENTIALS_PREVIOUS_KEYS"`
	// DeploymentID names this deployment in tenant database and role names,
	// in the tags on them and in events. Empty means the id stored in the
	// core database, generated at random on the first start; set it (1 to
	// 16 lowercase letters and digits) before the first start for readable
	// names. It can never change afterwards.
	DeploymentID string `envconfig:"DEPLOYMENT_ID"`

	// NATSURL is one NATS server or several, comma-separated.
	NATSURL string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	// NATSUser and NATSPassword log in to NATS; empty means no login. The
	// user needs only the publisher permissions of docs/events.md.
	NATSUser     string        `envconfig:"NATS_USER"`
	NATSPassword config.Secret `envconfig:"NATS_PASSWORD"`
	// EventsStream and EventsSubjectPrefix name where events go; deployments
	// sharing a NATS server (without separate NATS accounts) pick their own.
	EventsStream        string `envconfig:"EVENTS_STREAM" default:"TENANT_EVENTS"`
	EventsSubjectPrefix string `envconfig:"EVENTS_SUBJECT_PREFIX" default:"tenant"`
	// EventsMaxAge bounds how long the stream keeps messages.
	EventsMaxAge time.Duration `envconfig:"EVENTS_MAX_AGE" default:"720h"`
	// EventsReplicas is the stream's replica count (3 on a JetStream cluster).
	EventsReplicas int `envconfig:"EVENTS_REPLICAS" default:"1"`

	// JWTSigningKey is an Ed25519 private key (base64 of the 32-byte seed).
	// Empty outside production means a key generated once in KeysDir.
	JWTSigningKey config.Secret `envconfig:"JWT_SIGNING_KEY"`
	// JWTPreviousKeys are signing keys JWT_SIGNING_KEY replaced
	// (comma-separated base64 seeds): tokens they signed stay valid until
	// they expire, and the JWKS publishes them meanwhile.
	JWTPreviousKeys config.Secret `envconfig:"JWT_PREVIOUS_KEYS"`
	JWTIssuer       string        `envconfig:"JWT_ISSUER" default:"tenantbase-control-plane"`
	// KeysDir keeps keys generated for local runs (git-ignored).
	KeysDir string `envconfig:"KEYS_DIR" default:".local/keys"`
	config.Session
	// OwnerSignupPolicy is "open" (anyone may register as an owner) or
	// "admin" (only platform admins grant is_owner).
	OwnerSignupPolicy string `envconfig:"OWNER_SIGNUP_POLICY" default:"open"`
	// OwnerMaxOrganizations is how many organizations (not being deleted)
	// an owner may have, unless a platform admin set the user's own limit.
	OwnerMaxOrganizations int `envconfig:"OWNER_MAX_ORGANIZATIONS" default:"10"`
	// InvitationTTL is how long the link mailed to an owner onboarded by a
	// platform admin stays valid.
	InvitationTTL time.Duration `envconfig:"INVITATION_TTL" default:"168h"`

	// SMTPAddr (host:port) sends verification mail; empty logs the link
	// instead, which production refuses.
	SMTPAddr     string        `envconfig:"SMTP_ADDR"`
	SMTPFrom     string        `envconfig:"SMTP_FROM" default:"no-reply@tenantbase.local"`
	SMTPUsername string        `envconfig:"SMTP_USERNAME"`
	SMTPPassword config.Secret `envconfig:"SMTP_PASSWORD"`
	// SMTPRequireTLS refuses servers that offer no STARTTLS; production
	// requires it, development mail catchers (Mailpit) go without.
	SMTPRequireTLS bool `envconfig:"SMTP_REQUIRE_TLS" default:"true"`

	BootstrapAdminEmail    string        `envconfig:"BOOTSTRAP_ADMIN_EMAIL"`
	BootstrapAdminPassword config.Secret `envconfig:"BOOTSTRAP_ADMIN_PASSWORD"`

	// ServiceToken authenticates the tenant plane on the internal API.
	ServiceToken config.Secret `envconfig:"SERVICE_TOKEN" default:"local-dev-service-token"`

	// ProvisionMaxAttempts bounds provisioning retries before "failed".
	ProvisionMaxAttempts int `envconfig:"PROVISION_MAX_ATTEMPTS" default:"5"`
	// ProvisionRetryBackoff is the wait before a job's first retry; it
	// doubles with every attempt, up to 10 minutes.
	ProvisionRetryBackoff time.Duration `envconfig:"PROVISION_RETRY_BACKOFF" default:"5s"`
	// JobTimeout cancels a background job attempt that runs longer.
	JobTimeout time.Duration `envconfig:"JOB_TIMEOUT" default:"2m"`
	// JobRescueAfter is how long a job may stay running before it is
	// presumed lost with a crashed process and run again (at least JobTimeout).
	JobRescueAfter time.Duration `envconfig:"JOB_RESCUE_AFTER" default:"5m"`
	// ProvisionStepDelay and ProvisionStepMarker are fault-injection knobs
	// for crash tests that run the binary: before every provisioning step
	// the process appends "<pid> <organization id> <step>" to the marker
	// file, then pauses for the delay, so that a test can kill it at a step
	// boundary it chose. Leave them unset.
	ProvisionStepDelay  time.Duration `envconfig:"PROVISION_STEP_DELAY" default:"0s"`
	ProvisionStepMarker string        `envconfig:"PROVISION_STEP_MARKER"`
	// ReconcileInterval is how often organizations left in provisioning or
	// deleting without a job get one; they must have been there that long.
	ReconcileInterval time.Duration `envconfig:"RECONCILE_INTERVAL" default:"1m"`
	// Workers is the number of jobs this process runs at once.
	Workers int `envconfig:"WORKERS" default:"4"`
	// TenantMigrateOnStart starts a migration run to the newest tenant
	// migration at start when some tenant is below it, so that a deploy
	// rolls the fleet forward.
	TenantMigrateOnStart bool `envconfig:"TENANT_MIGRATE_ON_START" default:"true"`
	// TenantMigrateWorkers is how many tenants this process migrates at
	// once, besides Workers; a run's concurrency per server bounds it too.
	TenantMigrateWorkers int `envconfig:"TENANT_MIGRATE_WORKERS" default:"8"`
	// TenantMigrateStepDelay is a fault-injection knob for crash tests that
	// run the binary: a pause inside every tenant migration step, before
	// its commit. Leave it at 0.
	TenantMigrateStepDelay time.Duration `envconfig:"TENANT_MIGRATE_STEP_DELAY" default:"0s"`
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
}

// LoadConfig reads Config from the environment and checks it.
func LoadConfig() (Config, error) {
	var cfg Config
	if err := config.Load(&cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// DefaultConfig is Config with every default and nothing from the
// environment: what tests start from.
func DefaultConfig() Config {
	var cfg Config
	if err := config.Defaults(&cfg); err != nil {
		panic(err)
	}
	return cfg
}

// Validate checks every field; the error names each bad one.
func (c Config) Validate() error {
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	if _, err := config.ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	check(c.HTTPAddr == "" || c.InternalAddr == "", "HTTP_ADDR and INTERNAL_ADDR are required")
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("PUBLIC_URL must be an absolute http(s) URL, got %q", c.PublicURL))
	} else if err := CheckPublicURL(c.Env, c.PublicURL); err != nil {
		errs = append(errs, err)
	}
	check(c.DatabaseURL == "", "DATABASE_URL is required")
	if err := provisioning.CheckAdminDSN(c.tenantAdminDSN()); err != nil {
		errs = append(errs, fmt.Errorf("TENANT_DB_ADMIN_URL (or DATABASE_URL): %w", err))
	}
	check(c.TenantDBPort < 0 || c.TenantDBPort > 65535, "TENANT_DB_PORT must be a port number")
	check(c.TenantDBMaxTenants < 1, "TENANT_DB_MAX_TENANTS must be at least 1")
	check(c.TenantConnectionLimit == 0 || c.TenantConnectionLimit < -1, "TENANT_CONNECTION_LIMIT must be -1 (none) or positive")
	check(c.TenantSpareDatabases < 0 || c.TenantSpareDatabases > 100, "TENANT_SPARE_DATABASES must be between 0 and 100")
	check(c.MoveGracePeriod < 0, "MOVE_GRACE_PERIOD must not be negative")
	check(c.MoveTimeout <= 0, "MOVE_TIMEOUT must be positive")
	if err := deployment.Validate(c.DeploymentID); err != nil {
		errs = append(errs, fmt.Errorf("DEPLOYMENT_ID: %w", err))
	}
	check(c.NATSURL == "", "NATS_URL is required")
	if err := c.checkNATSLogin(); err != nil {
		errs = append(errs, err)
	}
	if err := c.eventChannel().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("EVENTS_STREAM, EVENTS_SUBJECT_PREFIX: %w", err))
	}
	check(c.EventsMaxAge <= 0, "EVENTS_MAX_AGE must be positive")
	check(c.EventsReplicas < 1 || c.EventsReplicas > 5, "EVENTS_REPLICAS must be 1 to 5")
	check(c.JWTIssuer == "", "JWT_ISSUER is required")
	if _, err := auth.LoadVerifyKeys(c.JWTPreviousKeys.Reveal()); err != nil {
		errs = append(errs, err)
	}
	if _, err := secretbox.ParseKeys(c.CredentialsPreviousKeys.Reveal()); err != nil {
		errs = append(errs, err)
	}
	if err := c.Session.Validate(); err != nil {
		errs = append(errs, err)
	}
	check(c.OwnerSignupPolicy != "open" && c.OwnerSignupPolicy != "admin",
		"OWNER_SIGNUP_POLICY must be open or admin, got %q", c.OwnerSignupPolicy)
	check(c.OwnerMaxOrganizations < 0, "OWNER_MAX_ORGANIZATIONS must not be negative")
	check(c.InvitationTTL < time.Minute, "INVITATION_TTL must be at least 1m")
	if _, err := httpx.ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	check((c.BootstrapAdminEmail == "") != (c.BootstrapAdminPassword == ""),
		"set both BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD, or neither")
	check(c.ServiceToken == "", "SERVICE_TOKEN is required")
	check(c.ProvisionMaxAttempts < 1, "PROVISION_MAX_ATTEMPTS must be at least 1")
	check(c.ProvisionRetryBackoff <= 0, "PROVISION_RETRY_BACKOFF must be positive")
	check(c.JobTimeout <= 0 || c.JobRescueAfter < c.JobTimeout, "JOB_TIMEOUT must be positive and JOB_RESCUE_AFTER at least JOB_TIMEOUT")
	check(c.ProvisionStepDelay < 0, "PROVISION_STEP_DELAY must not be negative")
	check(c.ReconcileInterval <= 0, "RECONCILE_INTERVAL must be positive")
	check(c.Workers < 1, "WORKERS must be at least 1")
	check(c.TenantMigrateWorkers < 1, "TENANT_MIGRATE_WORKERS must be at least 1")
	check(c.TenantMigrateStepDelay < 0, "TENANT_MIGRATE_STEP_DELAY must not be negative")
	check(c.ShutdownTimeout <= 0, "SHUTDOWN_TIMEOUT must be positive")
	if c.Env == "production" {
		check(c.SMTPAddr == "", "ENV=production requires SMTP_ADDR: verification links must never go to the log")
		check(!c.SMTPRequireTLS, "ENV=production requires SMTP_REQUIRE_TLS=true")
		if err := config.RequireInProduction(c.Env, map[string]config.Secret{
			"JWT_SIGNING_KEY": c.JWTSigningKey,
			"CREDENTIALS_KEY": c.CredentialsKey,
		}, c.ServiceToken); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// tenantAdminDSN is the connection that creates tenant roles and databases.
func (c Config) tenantAdminDSN() string {
	if c.TenantDBAdminURL != "" {
		return c.TenantDBAdminURL.Reveal()
	}
	return c.DatabaseURL.Reveal()
}

func (c Config) eventChannel() events.Channel {
	return events.Channel{Stream: c.EventsStream, Prefix: c.EventsSubjectPrefix}
}
