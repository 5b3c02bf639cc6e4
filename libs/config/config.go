// Package config loads a service's configuration from the environment with
// envconfig and keeps secrets out of logs.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

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

// DevServiceToken is the service credential's local default; production refuses it.
const DevServiceToken = "local-dev-service-token"

// RequireInProduction fails when env is "production" and a key that local
// runs generate on the fly is missing (each replica would make its own), or
// the service token is still the local default.
func RequireInProduction(env string, keys map[string]Secret, serviceToken Secret) error {
	if env != "production" {
		return nil
	}
	var missing []string
	for name, v := range keys {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("ENV=production requires %s", strings.Join(missing, ", "))
	}
	if serviceToken == "" || serviceToken == DevServiceToken {
		return errors.New("ENV=production requires a SERVICE_TOKEN other than the local default")
	}
	return nil
}
