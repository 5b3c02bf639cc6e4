package auth_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
)

// fields lists the fields a validation problem names; nil for no error.
func fields(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var v *apperr.ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("error %v, want a validation error", err)
	}
	var names []string
	for _, f := range v.Fields {
		names = append(names, f.Field)
	}
	return names
}

func TestInputValidation(t *testing.T) {
	const good = "long-enough-password"
	cases := []struct {
		name  string
		check func() error
		want  []string
	}{
		{"signup accepted", func() error { _, err := auth.ValidateSignup("A@Example.com", good); return err }, nil},
		{"signup names both fields", func() error { _, err := auth.ValidateSignup("nope", "short"); return err }, []string{"email", "password"}},
		{"login accepts a short password", func() error { _, err := auth.ValidateLogin("a@example.com", "x"); return err }, nil},
		{"login accepts 72 bytes", func() error { _, err := auth.ValidateLogin("a@example.com", strings.Repeat("a", 72)); return err }, nil},
		{"login refuses 73 bytes", func() error { _, err := auth.ValidateLogin("a@example.com", strings.Repeat("a", 73)); return err }, []string{"password"}},
		{"login names both fields", func() error { _, err := auth.ValidateLogin("", ""); return err }, []string{"email", "password"}},
		{"password change accepted", func() error { return auth.ValidatePasswordChange("old", good) }, nil},
		{"password change names both fields", func() error { return auth.ValidatePasswordChange("", "short") }, []string{"current_password", "new_password"}},
		{"password change without the current one", func() error { return auth.ValidatePasswordChange("", good) }, []string{"current_password"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := fields(t, tc.check()); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("fields %v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidateSignupNormalizesTheEmail(t *testing.T) {
	email, err := auth.ValidateSignup("  A@Example.COM ", "long-enough-password")
	if err != nil || email != "a@example.com" {
		t.Fatalf("ValidateSignup = %q, %v; want a@example.com", email, err)
	}
}

func TestEmailFilter(t *testing.T) {
	cases := []struct {
		name, raw, want string
		ok              bool
	}{
		{name: "empty keeps everyone", raw: "", want: "", ok: true},
		{name: "trimmed and lower-cased", raw: " Example.ORG ", want: "example.org", ok: true},
		{name: "255 bytes", raw: strings.Repeat("a", 255), want: strings.Repeat("a", 255), ok: true},
		{name: "256 bytes", raw: strings.Repeat("a", 256)},
		{name: "invalid UTF-8", raw: "\xff"},
		{name: "NUL", raw: "a\x00b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := auth.EmailFilter(tc.raw)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("EmailFilter(%q) = %q, %v", tc.raw, got, err)
			}
			if err != nil && !reflect.DeepEqual(fields(t, err), []string{"email"}) {
				t.Fatalf("error %v does not name email", err)
			}
		})
	}
}
