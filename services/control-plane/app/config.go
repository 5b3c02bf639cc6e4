package app

import (
	"context"
	"time"

	"tenantbase/libs/config"
	"tenantbase/libs/events"
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

	// DatabaseURL is the core database.
	DatabaseURL config.Secret `envconfig:"DATABASE_URL" default:"postgres://postgres@127.0.0.1:5432/tenantbase?sslmode=disable"`
	// TenantDBAdminURL is an admin connection (CREATEROLE, CREATEDB) to the
	// server that holds tenant databases; empty means the core database's server.
	TenantDBAdminURL config.Secret `envconfig:"TENANT_DB_ADMIN_URL"`
	// TenantDBHost/Port are the address the tenant plane uses to reach tenant
	// databases; empty means the host and port of TenantDBAdminURL.
	TenantDBHost string `envconfig:"TENANT_DB_HOST"`
	TenantDBPort int    `envconfig:"TENANT_DB_PORT"`
	// CredentialsKey encrypts tenant database passwords at rest (AES-256-GCM):
	// 32 bytes, base64. Empty outside production means a key generated once in KeysDir.
	CredentialsKey config.Secret `envconfig:"CREDENTIALS_KEY"`

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
	// EventsMaxAge bounds how long TENANT_EVENTS keeps messages.
	EventsMaxAge time.Duration `envconfig:"EVENTS_MAX_AGE" default:"720h"`
	// EventsReplicas is the stream's replica count (3 on a JetStream cluster).
	EventsReplicas int `envconfig:"EVENTS_REPLICAS" default:"1"`

	// JWTSigningKey is an Ed25519 private key (base64 of the 32-byte seed).
	// Empty outside production means a key generated once in KeysDir.
	JWTSigningKey config.Secret `envconfig:"JWT_SIGNING_KEY"`
	JWTIssuer     string        `envconfig:"JWT_ISSUER" default:"tenantbase-control-plane"`
	// KeysDir keeps keys generated for local runs (git-ignored).
	KeysDir         string        `envconfig:"KEYS_DIR" default:".local/keys"`
	AccessTokenTTL  time.Duration `envconfig:"ACCESS_TOKEN_TTL" default:"15m"`
	RefreshTokenTTL time.Duration `envconfig:"REFRESH_TOKEN_TTL" default:"720h"`
	BcryptCost      int           `envconfig:"BCRYPT_COST" default:"12"`
	// OwnerSignupPolicy is "open" (anyone may register as an owner) or
	// "admin" (only platform admins grant is_owner).
	OwnerSignupPolicy string `envconfig:"OWNER_SIGNUP_POLICY" default:"open"`
	// LoginMaxFailures failed logins in a row lock an account for LoginLockout.
	LoginMaxFailures int           `envconfig:"LOGIN_MAX_FAILURES" default:"5"`
	LoginLockout     time.Duration `envconfig:"LOGIN_LOCKOUT" default:"15m"`

	// SMTPAddr (host:port) sends verification mail; empty logs the link instead.
	SMTPAddr     string        `envconfig:"SMTP_ADDR"`
	SMTPFrom     string        `envconfig:"SMTP_FROM" default:"no-reply@tenantbase.local"`
	SMTPUsername string        `envconfig:"SMTP_USERNAME"`
	SMTPPassword config.Secret `envconfig:"SMTP_PASSWORD"`

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
	// ProvisionStepDelay is a fault-injection knob for crash tests: a pause
	// before every provisioning step. Leave it at 0.
	ProvisionStepDelay time.Duration `envconfig:"PROVISION_STEP_DELAY" default:"0s"`
	// beforeProvisionStep, set only by tests (export_test.go), runs before
	// every provisioning step; an error fails the step.
	beforeProvisionStep func(ctx context.Context, orgID int64, step string) error
	// Workers is the number of jobs this process runs at once.
	Workers int `envconfig:"WORKERS" default:"4"`
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
}

func (c Config) eventChannel() events.Channel {
	return events.Channel{Stream: c.EventsStream, Prefix: c.EventsSubjectPrefix}
}

// LoadConfig reads Config from the environment.
func LoadConfig() (Config, error) {
	var cfg Config
	err := config.Load(&cfg)
	return cfg, err
}
