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
	// TrustedProxies are the addresses (CIDR prefixes, comma-separated) of
	// the ingress: only from them are X-Real-IP and X-Forwarded-For taken
	// as the client's address (in the tenant's audit rows).
	TrustedProxies string `envconfig:"TRUSTED_PROXIES" default:"127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"`

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
	// CacheSize bounds the tenants kept (about 1 KB each); NegativeCacheSize
	// the unknown ids, kept apart so that probing random ids cannot push
	// real tenants out.
	CacheSize         int `envconfig:"TENANT_CACHE_SIZE" default:"100000"`
	NegativeCacheSize int `envconfig:"TENANT_NEGATIVE_CACHE_SIZE" default:"10000"`

	// Per-tenant pools under one budget of server connections.
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
	JWTSigningKey config.Secret `envconfig:"JWT_SIGNING_KEY"`
	// JWTPreviousKeys are signing keys JWT_SIGNING_KEY replaced
	// (comma-separated base64 seeds): tokens they signed stay valid until
	// they expire, and the JWKS publishes them meanwhile.
	JWTPreviousKeys config.Secret `envconfig:"JWT_PREVIOUS_KEYS"`
	JWTIssuer       string        `envconfig:"JWT_ISSUER" default:"tenantbase-tenant-plane"`
	KeysDir         string        `envconfig:"KEYS_DIR" default:".local/keys"`
	config.Session

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

var sslModes = map[string]bool{"disable": true, "allow": true, "prefer": true, "require": true, "verify-ca": true, "verify-full": true}

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
	if u, err := url.Parse(c.ControlPlaneURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("CONTROL_PLANE_URL must be an absolute http(s) URL, got %q", c.ControlPlaneURL))
	}
	check(c.ServiceToken == "", "SERVICE_TOKEN is required")
	if _, err := httpx.ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	check(c.NATSURL == "", "NATS_URL is required")
	check((c.NATSUser == "") != (c.NATSPassword == ""), "set both NATS_USER and NATS_PASSWORD, or neither")
	if err := c.eventChannel().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("EVENTS_STREAM, EVENTS_SUBJECT_PREFIX: %w", err))
	}
	check(c.CacheTTL <= 0 || c.NegativeCacheTTL <= 0 || c.LookupTimeout <= 0,
		"TENANT_CACHE_TTL, TENANT_NEGATIVE_CACHE_TTL and TENANT_LOOKUP_TIMEOUT must be positive")
	check(c.CacheSize < 1 || c.NegativeCacheSize < 1, "TENANT_CACHE_SIZE and TENANT_NEGATIVE_CACHE_SIZE must be at least 1")
	check(c.PoolBudget < 1 || c.PoolPerTenantMax < 1, "POOL_BUDGET and POOL_PER_TENANT_MAX must be at least 1")
	check(c.PoolAcquireWait <= 0 || c.PoolMaxConnIdle <= 0, "POOL_ACQUIRE_TIMEOUT and POOL_MAX_CONN_IDLE must be positive")
	check(!sslModes[c.TenantDBSSLMode], "TENANT_DB_SSLMODE must be a libpq sslmode, got %q", c.TenantDBSSLMode)
	check(c.JWTIssuer == "", "JWT_ISSUER is required")
	if _, err := auth.LoadVerifyKeys(c.JWTPreviousKeys.Reveal()); err != nil {
		errs = append(errs, err)
	}
	if err := c.Session.Validate(); err != nil {
		errs = append(errs, err)
	}
	check(c.ShutdownTimeout <= 0, "SHUTDOWN_TIMEOUT must be positive")
	if err := config.RequireInProduction(c.Env, map[string]config.Secret{"JWT_SIGNING_KEY": c.JWTSigningKey}, c.ServiceToken); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

func (c Config) eventChannel() events.Channel {
	return events.Channel{Stream: c.EventsStream, Prefix: c.EventsSubjectPrefix}
}
