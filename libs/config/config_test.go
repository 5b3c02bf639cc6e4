package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

type sample struct {
	Addr     string `envconfig:"SAMPLE_ADDR" default:"127.0.0.1:1"`
	Password Secret `envconfig:"SAMPLE_PASSWORD"`
}

func TestSecretNeverPrints(t *testing.T) {
	t.Setenv("SAMPLE_PASSWORD", "hunter2-very-secret")
	var cfg sample
	if err := Load(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Password.Reveal() != "hunter2-very-secret" || cfg.Addr != "127.0.0.1:1" {
		t.Fatalf("loaded %+v", cfg)
	}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("config", "config", cfg, "pw", cfg.Password)
	js, _ := json.Marshal(cfg)
	for name, out := range map[string]string{
		"fmt":  fmt.Sprintf("%v %+v %s", cfg, cfg, cfg.Password),
		"json": string(js),
		"slog": logBuf.String(),
	} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("%s output leaks the secret: %s", name, out)
		}
	}
}

func TestRequireInProduction(t *testing.T) {
	keys := map[string]Secret{"JWT_SIGNING_KEY": "k", "CREDENTIALS_KEY": ""}
	cases := []struct {
		name    string
		env     string
		keys    map[string]Secret
		token   Secret
		wantErr string
	}{
		{"local allows generated keys", "local", keys, DevServiceToken, ""},
		{"production names the missing key", "production", keys, "s3cret", "CREDENTIALS_KEY"},
		{"production refuses the dev service token", "production", map[string]Secret{"JWT_SIGNING_KEY": "k"}, DevServiceToken, "SERVICE_TOKEN"},
		{"production with everything set", "production", map[string]Secret{"JWT_SIGNING_KEY": "k"}, "s3cret", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := RequireInProduction(tc.env, tc.keys, tc.token)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
			}
		})
	}
}
