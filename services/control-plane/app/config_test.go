package app_test

import (
	"strings"
	"testing"

	"tenantbase/libs/config"
	"tenantbase/services/control-plane/app"
)

// TestConfigValidate breaks one field at a time: Validate names it.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := app.DefaultConfig().Validate(); err != nil {
		t.Fatalf("the defaults are invalid: %v", err)
	}
	production := func(c *app.Config) {
		c.Env = "production"
		c.JWTSigningKey, c.CredentialsKey, c.ServiceToken = "k", "k", "s3cret"
		c.SMTPAddr = "mail.example.com:587"
	}
	cases := []struct {
		name   string
		change func(*app.Config)
		want   string
	}{
		{"log level", func(c *app.Config) { c.LogLevel = "verbose" }, "LOG_LEVEL"},
		{"public url", func(c *app.Config) { c.PublicURL = "tenantbase.example" }, "PUBLIC_URL"},
		{"deployment id", func(c *app.Config) { c.DeploymentID = "Prod" }, "DEPLOYMENT_ID"},
		{"event prefix", func(c *app.Config) { c.EventsSubjectPrefix = "tenant.>" }, "EVENTS_SUBJECT_PREFIX"},
		{"bcrypt cost", func(c *app.Config) { c.BcryptCost = 40 }, "BCRYPT_COST"},
		{"signup policy", func(c *app.Config) { c.OwnerSignupPolicy = "closed" }, "OWNER_SIGNUP_POLICY"},
		{"job timeouts", func(c *app.Config) { c.JobRescueAfter = c.JobTimeout / 2 }, "JOB_RESCUE_AFTER"},
		{"workers", func(c *app.Config) { c.Workers = 0 }, "WORKERS"},
		{"production without mail server", func(c *app.Config) { production(c); c.SMTPAddr = "" }, "SMTP_ADDR"},
		{"production mail in clear", func(c *app.Config) { production(c); c.SMTPRequireTLS = false }, "SMTP_REQUIRE_TLS"},
		{"production with generated keys", func(c *app.Config) { production(c); c.CredentialsKey = "" }, "CREDENTIALS_KEY"},
		{"production with the dev service token", func(c *app.Config) { production(c); c.ServiceToken = config.DevServiceToken }, "SERVICE_TOKEN"},
		{"production with the placeholder URL", func(c *app.Config) { production(c); c.PublicURL = "https://CHANGE-ME.invalid" }, "placeholder"},
		{"production with another .invalid host", func(c *app.Config) { production(c); c.PublicURL = "https://api.tenantbase.invalid./" }, "placeholder"},
		{"NATS user without password", func(c *app.Config) { c.NATSUser = "control-plane" }, "NATS_PASSWORD"},
		{"NATS password without user", func(c *app.Config) { c.NATSPassword = "secret" }, "NATS_USER"},
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
	cfg := app.DefaultConfig()
	production(&cfg)
	cfg.PublicURL = "https://api.example.com"
	cfg.NATSUser, cfg.NATSPassword = "control-plane", "secret"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a complete production config: %v", err)
	}
	cfg = app.DefaultConfig()
	cfg.PublicURL = "https://CHANGE-ME.invalid"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the placeholder outside production: %v", err)
	}
}
