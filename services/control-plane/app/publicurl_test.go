package app

import (
	"strings"
	"testing"
)

func TestConfigChecksPublicURLAndNATSLogin(t *testing.T) {
	production := func(c *Config) {
		c.Env = "production"
		c.JWTSigningKey, c.CredentialsKey, c.ServiceToken = "key", "key", "token"
	}
	cases := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"local defaults", func(*Config) {}, ""},
		{"placeholder outside production", func(c *Config) { c.PublicURL = "https://CHANGE-ME.invalid" }, ""},
		{"production with a real URL", func(c *Config) { production(c); c.PublicURL = "https://api.example.com" }, ""},
		{"production with the placeholder", func(c *Config) { production(c); c.PublicURL = "https://CHANGE-ME.invalid" }, "placeholder"},
		{"production with another .invalid host", func(c *Config) { production(c); c.PublicURL = "https://api.tenantbase.invalid./" }, "placeholder"},
		{"production with a relative URL", func(c *Config) { production(c); c.PublicURL = "api.example.com" }, "absolute"},
		{"NATS user and password", func(c *Config) { c.NATSUser, c.NATSPassword = "control-plane", "secret" }, ""},
		{"NATS user without password", func(c *Config) { c.NATSUser = "control-plane" }, "NATS_PASSWORD"},
		{"NATS password without user", func(c *Config) { c.NATSPassword = "secret" }, "NATS_USER"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig()
			if err != nil {
				t.Fatal(err)
			}
			cfg.Env, cfg.PublicURL, cfg.NATSUser, cfg.NATSPassword = "local", "http://127.0.0.1:8000", "", ""
			tc.change(&cfg)
			err = cfg.validate()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one mentioning %s", err, tc.wantErr)
			}
		})
	}
}
