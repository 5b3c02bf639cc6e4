package auth

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"

	"tenantbase/libs/apperr"
	"tenantbase/libs/pgutil"
)

// InsertUserError translates the error of an INSERT into a plane's users
// table: a unique violation (the email) is taken, and a check violation
// is a validation error on the email.
func InsertUserError(err, taken error) error {
	switch pgutil.Code(err) {
	case pgerrcode.UniqueViolation:
		return taken
	case pgerrcode.CheckViolation:
		// The database's lower() can disagree with Go's on rare letters;
		// such an address is refused rather than stored in two spellings.
		return apperr.Invalid("email", "must be a valid email address")
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

// EmailFilter checks the ?email= substring filter of a user list and
// returns it trimmed and lower-cased, as addresses are stored.
func EmailFilter(raw string) (string, error) {
	if len(raw) > 255 || !utf8.ValidString(raw) || strings.ContainsRune(raw, 0) {
		return "", apperr.Invalid("email", "must be at most 255 bytes of UTF-8 text")
	}
	return strings.ToLower(strings.TrimSpace(raw)), nil
}
