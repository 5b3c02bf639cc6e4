package openapitest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"tenantbase/libs/openapitest"
)

const spec = `
openapi: 3.0.3
info: {title: items, version: "1"}
servers:
  - url: https://api.example.com
paths:
  /items/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
      security:
        - bearer: []
      responses:
        "200":
          description: the item
          content:
            application/json:
              schema:
                type: object
                required: [id, name]
                properties:
                  id: {type: integer}
                  name: {type: string}
        "404":
          description: unknown item
          content:
            application/problem+json:
              schema: {$ref: "#/components/schemas/Problem"}
components:
  securitySchemes:
    bearer: {type: http, scheme: bearer}
  schemas:
    Problem:
      type: object
      required: [type, title, status, code]
      properties:
        type: {type: string}
        title: {type: string}
        status: {type: integer}
        detail: {type: string}
        code: {type: string}
`

// recorder stands in for a test to observe the failures Check reports.
type recorder struct {
	testing.TB
	errors []string
	fatal  string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

func respond(status int, contentType, body string) *http.Response {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", contentType)
	rec.WriteHeader(status)
	io.WriteString(rec, body)
	return rec.Result()
}

func TestValidate(t *testing.T) {
	v := openapitest.New(t, []byte(spec))
	const problem = "application/problem+json"
	tests := []struct {
		name    string
		method  string
		path    string
		res     *http.Response
		wantErr string
	}{
		{name: "conforming item", method: "GET", path: "/items/7", res: respond(200, "application/json", `{"id":7,"name":"x"}`)},
		{name: "conforming problem", method: "GET", path: "/items/8", res: respond(404, problem, `{"type":"t","title":"Not Found","status":404,"code":"item_not_found"}`)},
		{name: "missing required field", method: "GET", path: "/items/7", res: respond(200, "application/json", `{"id":7}`), wantErr: `property "name" is missing`},
		{name: "wrong field type", method: "GET", path: "/items/7", res: respond(200, "application/json", `{"id":"7","name":"x"}`), wantErr: `"/id": value must be an integer`},
		{name: "problem without code", method: "GET", path: "/items/8", res: respond(404, problem, `{"type":"t","title":"Not Found","status":404}`), wantErr: `property "code" is missing`},
		{name: "problem sent as plain json", method: "GET", path: "/items/8", res: respond(404, "application/json", `{"type":"t","title":"x","status":404,"code":"c"}`), wantErr: "Content-Type"},
		{name: "undocumented status", method: "GET", path: "/items/7", res: respond(500, "application/json", `{}`), wantErr: "status is not supported"},
		{name: "undocumented route", method: "GET", path: "/nothing", res: respond(200, "application/json", `{}`), wantErr: "route not documented"},
		{name: "undocumented method", method: "DELETE", path: "/items/7", res: respond(204, "application/json", ``), wantErr: "route not documented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			err := v.Validate(req, tt.res)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate accepted a response that breaks the document (want %q)", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckWithRealServer(t *testing.T) {
	v := openapitest.New(t, []byte(spec))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/items/1" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":1,"name":"one"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, `{}`)
	}))
	defer srv.Close()

	tests := []struct {
		name     string
		path     string
		wantFail bool
	}{
		{name: "documented answer passes", path: "/items/1"},
		{name: "undocumented status fails the test", path: "/items/2", wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			r := &recorder{TB: t}
			v.Check(r, res.Request, res)
			if failed := len(r.errors) > 0; failed != tt.wantFail {
				t.Fatalf("Check failed = %v (%v), want %v", failed, r.errors, tt.wantFail)
			}
			body, _ := io.ReadAll(res.Body)
			if len(body) == 0 {
				t.Fatal("Check consumed the response body")
			}
		})
	}
}

func TestNewRejectsInvalidDocument(t *testing.T) {
	tests := []struct {
		name string
		doc  string
	}{
		{name: "not a document", doc: "{"},
		{name: "response without description", doc: `{"openapi":"3.0.3","info":{"title":"x","version":"1"},"paths":{"/a":{"get":{"responses":{"200":{}}}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			openapitest.New(r, []byte(tt.doc))
			if r.fatal == "" {
				t.Fatal("New accepted an invalid document")
			}
		})
	}
}
