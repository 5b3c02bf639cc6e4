package app_test

import (
	"strings"
	"testing"

	"tenantbase/services/tenant-plane/app"
)

// TestConfigValidate breaks one field at a time: Validate names it.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := app.DefaultConfig().Validate(); err != nil {
		t.Fatalf("the defaults are invalid: %v", err)
	}
	cases := []struct {
		name   string
		change func(*app.Config)
		want   string
	}{
		{"log level", func(c *app.Config) { c.LogLevel = "loud" }, "LOG_LEVEL"},
		{"control plane url", func(c *app.Config) { c.ControlPlaneURL = "127.0.0.1:8082" }, "CONTROL_PLANE_URL"},
		{"cache size", func(c *app.Config) { c.NegativeCacheSize = 0 }, "TENANT_NEGATIVE_CACHE_SIZE"},
		{"pool budget", func(c *app.Config) { c.PoolBudget = 0 }, "POOL_BUDGET"},
		{"ssl mode", func(c *app.Config) { c.TenantDBSSLMode = "required" }, "TENANT_DB_SSLMODE"},
		{"token lifetime", func(c *app.Config) { c.AccessTokenTTL = 0 }, "ACCESS_TOKEN_TTL"},
		{"production with a generated key", func(c *app.Config) { c.Env = "production"; c.ServiceToken = "s3cret" }, "JWT_SIGNING_KEY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := app.DefaultConfig()
			tc.change(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
