package organizations_test

import (
	"errors"
	"strings"
	"testing"

	"tenantbase/libs/apperr"
	"tenantbase/services/control-plane/internal/organizations"
)

func TestNormalizeName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", "Acme", "Acme", true},
		{"trimmed", "  Acme Corp \t", "Acme Corp", true},
		{"100 multibyte characters", strings.Repeat("é", 100), strings.Repeat("é", 100), true},
		{"empty", "", "", false},
		{"only spaces", "   ", "", false},
		{"101 characters", strings.Repeat("a", 101), "", false},
		{"control character", "Ac\x07me", "", false},
		{"invalid UTF-8", "Ac\xffme", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := organizations.NormalizeName(tc.in)
			if tc.ok {
				if err != nil || got != tc.want {
					t.Fatalf("NormalizeName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				return
			}
			var v *apperr.ValidationError
			if !errors.As(err, &v) || v.Fields[0].Field != "name" {
				t.Fatalf("NormalizeName(%q) = %q, %v; want a validation error on name", tc.in, got, err)
			}
		})
	}
}
