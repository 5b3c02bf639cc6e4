package config

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"time"
)

// Session is the account configuration both planes share: token lifetimes,
// password hashing and login throttling. Each service's Config embeds it.
type Session struct {
	AccessTokenTTL  time.Duration `envconfig:"ACCESS_TOKEN_TTL" default:"15m"`
	RefreshTokenTTL time.Duration `envconfig:"REFRESH_TOKEN_TTL" default:"720h"`
	// BcryptCost is the cost of new password hashes (4 to 31; below 12 only
	// for tests).
	BcryptCost int `envconfig:"BCRYPT_COST" default:"12"`
	// BcryptConcurrency hashes run at once (0: one per core); a login that
	// waited BcryptQueueWait for its turn is refused with 503 and
	// Retry-After, so a burst beyond what the cores hash is shed instead of
	// slowing every login down.
	BcryptConcurrency int           `envconfig:"BCRYPT_CONCURRENCY" default:"0"`
	BcryptQueueWait   time.Duration `envconfig:"BCRYPT_QUEUE_WAIT" default:"2s"`
	// LoginMaxFailures attempts in a row without the right password lock an
	// account for LoginLockout.
	LoginMaxFailures int           `envconfig:"LOGIN_MAX_FAILURES" default:"5"`
	LoginLockout     time.Duration `envconfig:"LOGIN_LOCKOUT" default:"15m"`
}

// Validate checks every field of s.
func (s Session) Validate() error {
	var errs []error
	if s.AccessTokenTTL <= 0 || s.RefreshTokenTTL <= 0 {
		errs = append(errs, errors.New("ACCESS_TOKEN_TTL and REFRESH_TOKEN_TTL must be positive"))
	}
	if s.BcryptCost < 4 || s.BcryptCost > 31 {
		errs = append(errs, fmt.Errorf("BCRYPT_COST must be 4 to 31, got %d", s.BcryptCost))
	}
	if s.BcryptConcurrency < 0 || s.BcryptQueueWait <= 0 {
		errs = append(errs, errors.New("BCRYPT_CONCURRENCY must not be negative and BCRYPT_QUEUE_WAIT must be positive"))
	}
	if s.LoginMaxFailures < 1 || s.LoginLockout <= 0 {
		errs = append(errs, errors.New("LOGIN_MAX_FAILURES must be at least 1 and LOGIN_LOCKOUT positive"))
	}
	return errors.Join(errs...)
}

// ParseLogLevel reads LOG_LEVEL: debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// Defaults sets every field of cfg (a pointer to a struct with envconfig
// tags, embedded structs included) to its default tag, ignoring the
// environment: tests build their configuration from it, so that what a
// developer exported does not change what they test. Fields without a
// default are zeroed.
func Defaults(cfg any) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("config: Defaults needs a pointer to a struct")
	}
	return setDefaults(v.Elem())
}

func setDefaults(v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Anonymous && fv.Kind() == reflect.Struct {
			if err := setDefaults(fv); err != nil {
				return err
			}
			continue
		}
		fv.Set(reflect.Zero(f.Type))
		def, ok := f.Tag.Lookup("default")
		if !ok {
			continue
		}
		if err := setValue(fv, def); err != nil {
			return fmt.Errorf("config: default of %s: %w", f.Name, err)
		}
	}
	return nil
}

var durationType = reflect.TypeFor[time.Duration]()

func setValue(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int, v.Kind() == reflect.Int64, v.Kind() == reflect.Int32:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		v.SetInt(n)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}
