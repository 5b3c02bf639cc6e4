// Package problem renders errors as RFC 9457 application/problem+json with a
// stable machine-readable code, from one mapping table per service.
package problem

import (
	"errors"
	"net/http"
	"strconv"

	"tenantbase/libs/apperr"
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

// New returns a problem with the given status, code and detail. The HTTP
// layer uses it for answers of its own (a bad header, a missing token);
// domain code returns sentinels and apperr errors instead.
func New(status int, code, detail string) *Problem {
	return &Problem{
		Type:   "https://tenantbase.dev/problems/" + code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	}
}

// WithRetryAfter returns a copy of p announcing when to retry, in seconds (at least 1).
func (p *Problem) WithRetryAfter(seconds int) *Problem {
	cp := *p
	cp.RetryAfter = max(seconds, 1)
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
// that are no sentinel, such as a driver's connection failures or typed
// errors, are matched with Match instead. Detail says what the client is
// told; empty means the error's own text (a sentinel's or a validation
// error's, never that of an error matched by Match alone).
type Rule struct {
	Err    error
	Match  func(error) bool
	Status int
	Code   string
	Detail string
	// RetryAfter, when set, gives the Retry-After seconds for the error.
	RetryAfter func(error) int
}

// RetryIn is a Rule.RetryAfter that always answers seconds.
func RetryIn(seconds int) func(error) int { return func(error) int { return seconds } }

// Table is a service's one mapping from domain errors to problems.
type Table []Rule

// Common are the rules of the errors every service shares: validation
// errors (422 validation_failed naming each field) and locked accounts
// (429 too_many_attempts with Retry-After). Services append their own.
var Common = Table{
	{Match: apperr.IsValidation, Status: http.StatusUnprocessableEntity, Code: "validation_failed"},
	{Match: apperr.IsLocked, Status: http.StatusTooManyRequests, Code: "too_many_attempts",
		Detail: "too many failed attempts for this account; try again later", RetryAfter: apperr.RetryAfterSeconds},
}

// Lookup finds the problem for err: a *Problem in the chain wins, then the
// first matching rule. ok is false for errors the table does not know.
func (t Table) Lookup(err error) (*Problem, bool) {
	var p *Problem
	if errors.As(err, &p) {
		return p, true
	}
	for _, r := range t {
		if (r.Err == nil || !errors.Is(err, r.Err)) && (r.Match == nil || !r.Match(err)) {
			continue
		}
		p := New(r.Status, r.Code, r.Detail)
		var v *apperr.ValidationError
		if errors.As(err, &v) {
			for _, f := range v.Fields {
				p.Errors = append(p.Errors, FieldError{Field: f.Field, Message: f.Reason})
			}
			if p.Detail == "" {
				p.Detail = v.Error()
			}
		}
		if p.Detail == "" && r.Err != nil {
			p.Detail = r.Err.Error()
		}
		if r.RetryAfter != nil {
			p = p.WithRetryAfter(r.RetryAfter(err))
		}
		return p, true
	}
	return nil, false
}
