// Package config loads a service's configuration from the environment with
// envconfig and keeps secrets out of logs.
package config

import (
	"encoding/json"
	"log/slog"

	"github.com/kelseyhightower/envconfig"
)

// Secret is a string that never prints: fmt, slog and JSON all show a mask.
type Secret string

const mask = "********"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return mask
}

// Reveal returns the secret value; call it only where the value is used.
func (s Secret) Reveal() string { return string(s) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON keeps the secret out of any JSON dump of a config struct.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Load fills cfg (a pointer to a struct with envconfig tags) from the
// environment. Names are used as written in the tags, without a prefix.
func Load(cfg any) error {
	return envconfig.Process("", cfg)
}
