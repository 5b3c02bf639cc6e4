package app

import (
	"time"

	"tenantbase/libs/config"
	"tenantbase/libs/events"
)

// Config is the tenant plane's whole configuration, read from the
// environment. Defaults work for a local run against 127.0.0.1.
type Config struct {
	Env      string `envconfig:"ENV" default:"local"`
	Version  string `envconfig:"VERSION" default:"dev"`
	LogLevel string `envconfig:"LOG_LEVEL" default:"info"`

	// HTTPAddr serves the public API (routed by the ingress when X-TENANT is set).
	HTTPAddr string `envconfig:"HTTP_ADDR" default:"127.0.0.1:8083"`
	// InternalAddr serves /metrics and the JWKS; the ingress never routes to it.
	InternalAddr string `envconfig:"INTERNAL_ADDR" default:"127.0.0.1:8084"`

	// ControlPlaneURL is the control plane's internal listener.
	ControlPlaneURL string        `envconfig:"CONTROL_PLANE_URL" default:"http://127.0.0.1:8082"`
	ServiceToken    config.Secret `envconfig:"SERVICE_TOKEN" default:"local-dev-service-token"`
	// NATSURL is one NATS server or several, comma-separated.
	NATSURL string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	// NATSUser and NATSPassword log in to NATS; empty means no login. The
	// user needs only the follower permissions of docs/events.md.
	NATSUser     string        `envconfig:"NATS_USER"`
	NATSPassword config.Secret `envconfig:"NATS_PASSWORD"`
	// EventsStream and EventsSubjectPrefix must match the control plane's.
	EventsStream        string `envconfig:"EVENTS_STREAM" default:"TENANT_EVENTS"`
	EventsSubjectPrefix string `envconfig:"EVENTS_SUBJECT_PREFIX" default:"tenant"`

	// Tenant lookup cache.
	CacheTTL         time.Duration `envconfig:"TENANT_CACHE_TTL" default:"5m"`
	NegativeCacheTTL time.Duration `envconfig:"TENANT_NEGATIVE_CACHE_TTL" default:"5s"`
	LookupTimeout    time.Duration `envconfig:"TENANT_LOOKUP_TIMEOUT" default:"3s"`

	// Per-tenant pools under one global budget of server connections.
	PoolBudget       int           `envconfig:"POOL_BUDGET" default:"40"`
	PoolPerTenantMax int           `envconfig:"POOL_PER_TENANT_MAX" default:"5"`
	PoolAcquireWait  time.Duration `envconfig:"POOL_ACQUIRE_TIMEOUT" default:"2s"`
	// PoolMaxConnIdle closes a tenant connection idle that long, and a pool
	// left without connections that long is dropped.
	PoolMaxConnIdle time.Duration `envconfig:"POOL_MAX_CONN_IDLE" default:"5m"`
	// TenantDBSSLMode is the sslmode of tenant database connections; use
	// require or verify-full where the databases are on another host.
	TenantDBSSLMode string `envconfig:"TENANT_DB_SSLMODE" default:"disable"`

	// JWTSigningKey is this plane's own Ed25519 key (base64 of the 32-byte
	// seed), shared by its replicas. Empty outside production means a key
	// generated once in KeysDir.
	JWTSigningKey    config.Secret `envconfig:"JWT_SIGNING_KEY"`
	JWTIssuer        string        `envconfig:"JWT_ISSUER" default:"tenantbase-tenant-plane"`
	KeysDir          string        `envconfig:"KEYS_DIR" default:".local/keys"`
	AccessTokenTTL   time.Duration `envconfig:"ACCESS_TOKEN_TTL" default:"15m"`
	RefreshTokenTTL  time.Duration `envconfig:"REFRESH_TOKEN_TTL" default:"720h"`
	BcryptCost       int           `envconfig:"BCRYPT_COST" default:"12"`
	LoginMaxFailures int           `envconfig:"LOGIN_MAX_FAILURES" default:"5"`
	LoginLockout     time.Duration `envconfig:"LOGIN_LOCKOUT" default:"15m"`

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
