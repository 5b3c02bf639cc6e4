package tenants

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tenantbase/libs/tenantapi"
)

func TestParseID(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1", 1, true},
		{"42", 42, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false},
		{"99999999999999999999", 0, false},
		{"", 0, false},
		{"0", 0, false},
		{"007", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1 ", 0, false},
		{"1.0", 0, false},
		{"1e3", 0, false},
		{"0x1", 0, false},
		{"1 OR 1=1", 0, false},
		{"1;DROP DATABASE tenant_1", 0, false},
		{"١٢", 0, false},    // Arabic-Indic digits
		{"１２", 0, false},    // fullwidth digits
		{"1\x00", 0, false}, // NUL
		{strings.Repeat("1", 10*1024), 0, false},
	}
	for _, tc := range cases {
		name := tc.in
		if len(name) > 24 {
			name = name[:24] + "..."
		}
		t.Run(name, func(t *testing.T) {
			got, ok := ParseID(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("ParseID(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestUsable(t *testing.T) {
	cases := []struct {
		status tenantapi.Status
		want   error
	}{
		{tenantapi.StatusReady, nil},
		{tenantapi.StatusProvisioning, ErrNotReady},
		{tenantapi.StatusFailed, ErrFailed},
		{tenantapi.StatusSuspended, ErrSuspended},
		{tenantapi.StatusDeleting, ErrNotFound},
		{tenantapi.StatusDeleted, ErrNotFound},
		{"archived", ErrUnavailable},
	}
	for _, tc := range cases {
		t.Run(string(tc.status), func(t *testing.T) {
			err := Usable(Tenant{ID: 1, Status: tc.status})
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("Usable() = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestClientAnswers(t *testing.T) {
	const token = "service-token-for-test"
	cases := []struct {
		name    string
		status  int
		body    string
		wantErr error
		// anyErr: some error that is neither ErrNotFound nor nil.
		anyErr bool
	}{
		{name: "ready", status: 200,
			body: `{"id":7,"status":"ready","schema_version":1,"database":{"host":"127.0.0.1","port":5432,"name":"tenant_7","user":"tenant_7","password":"x"}}`},
		{name: "provisioning without database", status: 200, body: `{"id":7,"status":"provisioning","schema_version":0}`},
		{name: "unknown tenant", status: 404, body: `{"status":404,"code":"tenant_not_found"}`, wantErr: ErrNotFound},
		{name: "404 of another kind", status: 404, body: `{"status":404,"code":"not_found"}`, anyErr: true},
		{name: "service token refused", status: 401, body: `{"code":"unauthorized"}`, anyErr: true},
		{name: "server error", status: 500, body: `{}`, anyErr: true},
		{name: "malformed body", status: 200, body: `{"id":`, anyErr: true},
		{name: "ready without database", status: 200, body: `{"id":7,"status":"ready"}`, anyErr: true},
		{name: "another tenant's answer", status: 200, body: `{"id":8,"status":"provisioning"}`, anyErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/internal/tenants/7" || r.Header.Get("Authorization") != "Bearer "+token {
					http.Error(w, "bad request from client", http.StatusTeapot)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c := NewClient(srv.URL+"/", token, &http.Client{Timeout: 5 * time.Second})
			tn, err := c.Tenant(context.Background(), 7)
			switch {
			case tc.anyErr:
				if err == nil || errors.Is(err, ErrNotFound) {
					t.Fatalf("err = %v, want a lookup error", err)
				}
			case !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			case err == nil && tn.ID != 7:
				t.Fatalf("tenant = %+v", tn)
			}
		})
	}
}
