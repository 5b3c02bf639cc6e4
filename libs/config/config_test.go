package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
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

type withSession struct {
	Name string `envconfig:"SAMPLE_NAME" default:"plane"`
	Port int    `envconfig:"SAMPLE_PORT" default:"8080"`
	On   bool   `envconfig:"SAMPLE_ON" default:"true"`
	Key  Secret `envconfig:"SAMPLE_KEY"`
	Session
}

func TestDefaultsIgnoreTheEnvironment(t *testing.T) {
	t.Setenv("SAMPLE_NAME", "from-env")
	t.Setenv("BCRYPT_COST", "4")
	t.Setenv("SAMPLE_KEY", "k")
	var fromEnv withSession
	if err := Load(&fromEnv); err != nil {
		t.Fatal(err)
	}
	if fromEnv.Name != "from-env" || fromEnv.BcryptCost != 4 || fromEnv.Key != "k" || fromEnv.LoginLockout != 15*time.Minute {
		t.Fatalf("Load with an embedded Session: %+v", fromEnv)
	}
	cfg := fromEnv
	if err := Defaults(&cfg); err != nil {
		t.Fatal(err)
	}
	want := withSession{Name: "plane", Port: 8080, On: true, Session: Session{
		AccessTokenTTL: 15 * time.Minute, RefreshTokenTTL: 720 * time.Hour, BcryptCost: 12, BcryptQueueWait: 2 * time.Second,
		LoginMaxFailures: 5, LoginLockout: 15 * time.Minute,
	}}
	if cfg != want {
		t.Fatalf("Defaults = %+v, want %+v", cfg, want)
	}
}

func TestSessionValidate(t *testing.T) {
	var ok Session
	if err := Defaults(&ok); err != nil {
		t.Fatal(err)
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for name, mutate := range map[string]func(*Session){
		"ACCESS_TOKEN_TTL":   func(s *Session) { s.AccessTokenTTL = 0 },
		"BCRYPT_COST":        func(s *Session) { s.BcryptCost = 3 },
		"LOGIN_MAX_FAILURES": func(s *Session) { s.LoginMaxFailures = 0 },
		"LOGIN_LOCKOUT":      func(s *Session) { s.LoginLockout = -time.Second },
	} {
		s := ok
		mutate(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s broken: Validate = %v", name, err)
		}
	}
	if _, err := ParseLogLevel("verbose"); err == nil {
		t.Error("LOG_LEVEL=verbose accepted")
	}
	if l, err := ParseLogLevel("warn"); err != nil || l != slog.LevelWarn {
		t.Errorf("ParseLogLevel(warn) = %v, %v", l, err)
	}
}
