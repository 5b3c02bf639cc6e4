// Package apperr holds the errors domain code returns for the caller's
// mistakes, without knowing how they are shown: each service's error table
// (libs/problem) turns them into HTTP answers.
package apperr

import (
	"errors"
	"math"
	"strings"
	"time"
)

// FieldError says what is wrong with one input field.
type FieldError struct {
	Field  string
	Reason string
}

// ValidationError is input that failed validation, naming every failing
// field. Nothing was changed.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Reason
	}
	return strings.Join(parts, "; ")
}

// Invalid is a validation error of one field.
func Invalid(field, reason string) *ValidationError {
	return &ValidationError{Fields: []FieldError{{Field: field, Reason: reason}}}
}

// IsValidation reports whether err is (or wraps) a *ValidationError.
func IsValidation(err error) bool {
	var v *ValidationError
	return errors.As(err, &v)
}

// Join merges the validation errors among errs into one naming every
// failing field; the first error that is no validation error is returned
// as it is instead, and nil when every err is nil.
func Join(errs ...error) error {
	var joined *ValidationError
	for _, err := range errs {
		if err == nil {
			continue
		}
		var v *ValidationError
		if !errors.As(err, &v) {
			return err
		}
		if joined == nil {
			joined = &ValidationError{}
		}
		joined.Fields = append(joined.Fields, v.Fields...)
	}
	if joined == nil {
		return nil
	}
	return joined
}

// LockedError refuses an attempt on an account that is locked after too
// many failed ones, for RetryAfter.
type LockedError struct {
	RetryAfter time.Duration
}

func (e *LockedError) Error() string {
	return "too many failed attempts for this account; try again in " + e.RetryAfter.Round(time.Second).String()
}

// RetryAfterSeconds is how many whole seconds to wait after err, a
// *LockedError (at least 1); 0 for any other error.
func RetryAfterSeconds(err error) int {
	var l *LockedError
	if !errors.As(err, &l) {
		return 0
	}
	return max(1, int(math.Ceil(l.RetryAfter.Seconds())))
}

// IsLocked reports whether err is (or wraps) a *LockedError.
func IsLocked(err error) bool {
	var l *LockedError
	return errors.As(err, &l)
}
