// Package openapitest checks HTTP responses against a service's OpenAPI 3
// document, so tests fail when the implementation and the contract drift.
package openapitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// Validator matches requests to the operations of one document and checks
// the responses against them.
type Validator struct {
	router routers.Router
}

// New loads and validates spec (YAML or JSON), failing the test when the
// document itself is invalid.
func New(tb testing.TB, spec []byte) *Validator {
	tb.Helper()
	v, err := Load(spec)
	if err != nil {
		tb.Fatalf("openapitest: %v", err)
	}
	return v
}

// Load is New for callers without a test: it returns what is wrong.
func Load(spec []byte) (*Validator, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		return nil, fmt.Errorf("loading OpenAPI document: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("invalid OpenAPI document: %w", err)
	}
	// Tests reach the service on whatever address it was bound to, so routes
	// match on the path alone rather than on the documented server URLs.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("building router: %w", err)
	}
	return &Validator{router: router}, nil
}

// Check fails the test unless res is a documented answer to req: the route
// and status are in the document and the body matches the schema for its
// content type (problem+json included). For an httptest.ResponseRecorder pass
// rec.Result(). res.Body stays readable afterwards.
func (v *Validator) Check(tb testing.TB, req *http.Request, res *http.Response) {
	tb.Helper()
	if err := v.Validate(req, res); err != nil {
		tb.Errorf("openapitest: %s %s answered %d: %v", req.Method, req.URL.Path, res.StatusCode, err)
	}
}

// Validate is Check returning the mismatch instead of failing a test.
// Security requirements are not checked: tests exercise them on purpose.
func (v *Validator) Validate(req *http.Request, res *http.Response) error {
	if req == nil {
		return errors.New("no request")
	}
	route, pathParams, err := v.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("route not documented: %w", err)
	}
	var body []byte
	if res.Body != nil {
		body, err = io.ReadAll(res.Body)
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("reading response body: %w", err)
		}
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: pathParams,
			Route:      route,
			Options:    opts,
		},
		Status:  res.StatusCode,
		Header:  res.Header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: opts,
	}
	return openapi3filter.ValidateResponse(context.Background(), input)
}
