// Package problem renders errors as RFC 9457 application/problem+json with a
// stable machine-readable code, from one mapping table per service.
package problem

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// ContentType is the media type of every error body.
const ContentType = "application/problem+json"

// Problem is an RFC 9457 problem detail with a stable code.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Code   string       `json:"code"`
	Errors []FieldError `json:"errors,omitempty"`
	// RetryAfter, when set, is sent as the Retry-After header (seconds).
	RetryAfter int `json:"-"`
}

// FieldError names one invalid input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (p *Problem) Error() string {
	if p.Detail != "" {
		return p.Code + ": " + p.Detail
	}
	return p.Code
}

// New returns a problem with the given status, code and detail.
func New(status int, code, detail string) *Problem {
	return &Problem{
		Type:   "https://tenantbase.dev/problems/" + code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	}
}

// Invalid is a 422 naming the field that failed validation.
func Invalid(field, message string) *Problem {
	p := New(http.StatusUnprocessableEntity, "validation_failed", fmt.Sprintf("%s: %s", field, message))
	p.Errors = []FieldError{{Field: field, Message: message}}
	return p
}

// WithRetryAfter returns a copy of p announcing when to retry, in seconds (at least 1).
func (p *Problem) WithRetryAfter(seconds int) *Problem {
	cp := *p
	if seconds < 1 {
		seconds = 1
	}
	cp.RetryAfter = seconds
	return &cp
}

// RetryAfterHeader is the value for the Retry-After header, or "".
func (p *Problem) RetryAfterHeader() string {
	if p.RetryAfter <= 0 {
		return ""
	}
	return strconv.Itoa(p.RetryAfter)
}

// Rule maps a domain error (matched with errors.Is) to a problem. Errors
// that are no sentinel, such as a driver's connection failures, are matched
// with Match instead; Detail then says what the client is told.
type Rule struct {
	Err    error
	Match  func(error) bool
	Status int
	Code   string
	Detail string
}

// Table is a service's one mapping from domain errors to problems.
type Table []Rule

// Lookup finds the problem for err: a *Problem in the chain wins, then the
// first matching rule. ok is false for errors the table does not know.
func (t Table) Lookup(err error) (*Problem, bool) {
	var p *Problem
	if errors.As(err, &p) {
		return p, true
	}
	for _, r := range t {
		if (r.Err != nil && errors.Is(err, r.Err)) || (r.Match != nil && r.Match(err)) {
			detail := r.Detail
			if detail == "" && r.Err != nil {
				detail = r.Err.Error()
			}
			return New(r.Status, r.Code, detail), true
		}
	}
	return nil, false
}

// Join merges the validation problems among errs into one 422 that names
// every failing field; the first error that is no validation problem is
// returned as it is instead.
func Join(errs ...error) error {
	var joined *Problem
	for _, err := range errs {
		if err == nil {
			continue
		}
		var p *Problem
		if !errors.As(err, &p) || p.Status != http.StatusUnprocessableEntity {
			return err
		}
		if joined == nil {
			cp := *p
			joined = &cp
			continue
		}
		joined.Errors = append(append([]FieldError(nil), joined.Errors...), p.Errors...)
		joined.Detail += "; " + p.Detail
	}
	if joined == nil {
		return nil
	}
	return joined
}
