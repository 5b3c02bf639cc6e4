package testenv

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"tenantbase/libs/problem"
)

// JSONRequest builds a request with body: nil sends none, a []byte goes as
// it is, anything else is encoded as JSON; a body is labelled
// application/json either way.
func JSONRequest(tb testing.TB, method, url string, body any) *http.Request {
	tb.Helper()
	var payload io.Reader = http.NoBody
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			tb.Fatalf("testenv: encode request body: %v", err)
		}
		payload = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, payload)
	if err != nil {
		tb.Fatalf("testenv: build request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// Send sends req with client and reads the answer to the end. check, when
// not nil, sees the exchange first (openapitest.Validator.Check fits).
func Send(tb testing.TB, client *http.Client, req *http.Request, check func(testing.TB, *http.Request, *http.Response)) *Response {
	tb.Helper()
	// The path goes into messages as it was sent: net/http neither decodes
	// nor cleans it.
	path := req.URL.RequestURI()
	res, err := client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, path, err)
	}
	defer res.Body.Close()
	if check != nil {
		check(tb, req, res)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", req.Method, path, err)
	}
	return &Response{Method: req.Method, Path: path, Status: res.StatusCode, Header: res.Header, Body: body}
}

// Response is an answer read to the end; Method and Path name the request
// in failure messages.
type Response struct {
	Method, Path string
	Status       int
	Header       http.Header
	Body         []byte
}

// Expect fails the test unless the status is want.
func (r *Response) Expect(tb testing.TB, want int) *Response {
	tb.Helper()
	if r.Status != want {
		tb.Fatalf("%s %s: status %d, want %d; body %s", r.Method, r.Path, r.Status, want, r.Body)
	}
	return r
}

// Decode unmarshals the body into v, failing the test when it cannot.
func (r *Response) Decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("%s %s: decode %d answer %q: %v", r.Method, r.Path, r.Status, r.Body, err)
	}
}

// Problem decodes a problem+json body, failing the test for any other
// answer or a problem without its type, title, code or the answer's status.
func (r *Response) Problem(tb testing.TB) problem.Problem {
	tb.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, problem.ContentType) {
		tb.Fatalf("%s %s: status %d with Content-Type %q, want %s; body %s", r.Method, r.Path, r.Status, ct, problem.ContentType, r.Body)
	}
	var p problem.Problem
	r.Decode(tb, &p)
	if p.Status != r.Status || p.Code == "" || p.Title == "" || p.Type == "" {
		tb.Fatalf("%s %s: malformed problem for status %d: %s", r.Method, r.Path, r.Status, r.Body)
	}
	return p
}

// ExpectProblem fails the test unless the answer is a problem with status
// and code.
func (r *Response) ExpectProblem(tb testing.TB, status int, code string) *Response {
	tb.Helper()
	r.Expect(tb, status)
	if got := r.Problem(tb).Code; got != code {
		tb.Fatalf("%s %s: problem code %q, want %q; body %s", r.Method, r.Path, got, code, r.Body)
	}
	return r
}
