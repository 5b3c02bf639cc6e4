package tenantapitest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/problem"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/tenantapi/tenantapitest"
	"tenantbase/libs/testenv"
)

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, url, token string) (answer, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, header: res.Header, body: body}, err
}

func lookup(t *testing.T, d *tenantapitest.Directory, path, token string) answer {
	t.Helper()
	a, err := get(t, d.URL+path, token)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func expectProblem(t *testing.T, a answer, status int, code string) {
	t.Helper()
	var p problem.Problem
	if a.status != status || !strings.HasPrefix(a.header.Get("Content-Type"), problem.ContentType) ||
		json.Unmarshal(a.body, &p) != nil || p.Status != status || p.Code != code || p.Title == "" || p.Type == "" {
		t.Fatalf("status %d, Content-Type %q, body %s; want a %d problem %q", a.status, a.header.Get("Content-Type"), a.body, status, code)
	}
}

func TestDirectoryAnswersAsTheContractSays(t *testing.T) {
	t.Parallel()
	d := tenantapitest.NewDirectory(t)
	db := &tenantapi.Database{Host: "127.0.0.1", Port: 5432, Name: "tenant_7", User: "tenant_7", Password: "secret-7"}
	d.Put(tenantapi.Tenant{ID: 7, Status: tenantapi.StatusReady, SchemaVersion: 3, Database: db})
	d.Put(tenantapi.Tenant{ID: 8, Status: tenantapi.StatusSuspended, SchemaVersion: 3, Database: db})

	t.Run("the service token is required", func(t *testing.T) {
		for _, token := range []string{"", "not-the-token", tenantapitest.ServiceToken + "x"} {
			a := lookup(t, d, tenantapi.Path(7), token)
			expectProblem(t, a, http.StatusUnauthorized, "unauthorized")
			if a.header.Get("WWW-Authenticate") == "" || strings.Contains(string(a.body), "tenant_") {
				t.Fatalf("401 without WWW-Authenticate or telling about the tenant: %v %s", a.header, a.body)
			}
		}
		// Refused before the tenant is looked at: an unknown one is 401 too.
		expectProblem(t, lookup(t, d, tenantapi.Path(99), ""), http.StatusUnauthorized, "unauthorized")
	})

	t.Run("unknown tenants are 404 tenant_not_found", func(t *testing.T) {
		for _, path := range []string{tenantapi.Path(99), tenantapi.PathPrefix + "abc", tenantapi.Path(0), tenantapi.Path(-7)} {
			expectProblem(t, lookup(t, d, path, d.Token), http.StatusNotFound, tenantapi.CodeNotFound)
		}
	})

	t.Run("other paths are 404 without tenant_not_found", func(t *testing.T) {
		for _, path := range []string{"/internal/tenant/7", "/internal/tenants/7/x", "/"} {
			expectProblem(t, lookup(t, d, path, d.Token), http.StatusNotFound, "not_found")
		}
	})

	t.Run("a ready tenant with its database, never cached", func(t *testing.T) {
		a := lookup(t, d, tenantapi.Path(7), d.Token)
		var got tenantapi.Tenant
		if a.status != http.StatusOK || json.Unmarshal(a.body, &got) != nil {
			t.Fatalf("status %d, body %s", a.status, a.body)
		}
		if a.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
			t.Fatalf("headers %v", a.header)
		}
		if err := got.Validate(7); err != nil || got.Deployment != d.Deployment || got.SchemaVersion != 3 ||
			got.Database == nil || *got.Database != *db {
			t.Fatalf("tenant %+v (%v), want ready in %s with %+v", got, err, d.Deployment, *db)
		}
	})

	t.Run("no database unless ready", func(t *testing.T) {
		var raw map[string]any
		if a := lookup(t, d, tenantapi.Path(8), d.Token); a.status != http.StatusOK || json.Unmarshal(a.body, &raw) != nil {
			t.Fatalf("status %d, body %s", a.status, a.body)
		}
		if _, ok := raw["database"]; ok || raw["status"] != "suspended" {
			t.Fatalf("suspended tenant answered %v", raw)
		}
		d.SetStatus(8, tenantapi.StatusReady)
		var back tenantapi.Tenant
		json.Unmarshal(lookup(t, d, tenantapi.Path(8), d.Token).body, &back)
		if back.Database == nil || back.Database.Password.Reveal() != "secret-7" {
			t.Fatalf("resumed tenant answered %+v, want its database back", back)
		}
	})

	t.Run("removed tenants are unknown", func(t *testing.T) {
		d.Remove(8)
		expectProblem(t, lookup(t, d, tenantapi.Path(8), d.Token), http.StatusNotFound, tenantapi.CodeNotFound)
	})

	t.Run("lookups are counted per tenant", func(t *testing.T) {
		before7, before99 := d.Lookups(7), d.Lookups(99)
		lookup(t, d, tenantapi.Path(7), d.Token)
		lookup(t, d, tenantapi.Path(7), "")
		lookup(t, d, tenantapi.Path(99), d.Token)
		if d.Lookups(7) != before7+2 || d.Lookups(99) != before99+1 {
			t.Fatalf("lookups 7: %d -> %d, 99: %d -> %d", before7, d.Lookups(7), before99, d.Lookups(99))
		}
	})

	t.Run("down and back", func(t *testing.T) {
		d.Down()
		before := d.Lookups(7)
		if a, err := get(t, d.URL+tenantapi.Path(7), d.Token); err == nil {
			t.Fatalf("a directory that is down answered %d", a.status)
		}
		d.Up()
		if a := lookup(t, d, tenantapi.Path(7), d.Token); a.status != http.StatusOK {
			t.Fatalf("back up, answered %d %s", a.status, a.body)
		}
		if got := d.Lookups(7); got != before+1 {
			t.Fatalf("lookups %d -> %d, want one more: none reached it while down", before, got)
		}
	})

	t.Run("invalid tenants are refused", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("Put accepted a ready tenant without a database")
			}
		}()
		d.Put(tenantapi.Tenant{ID: 9, Status: tenantapi.StatusReady})
	})
}

func TestPublisherPublishesAsTheControlPlane(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	ch := events.Channel{Stream: "TEST_EVENTS", Prefix: "test.tenant"}
	p := tenantapitest.NewPublisher(t, srv.URL(), ch)
	d := tenantapitest.NewDirectory(t)
	d.Put(tenantapi.Tenant{ID: 5, Status: tenantapi.StatusSuspended})
	ev := d.Event(events.TenantSuspended, 5)
	p.Publish(t, ev)
	p.Publish(t, ev) // a retry of the same event
	p.Publish(t, d.Event(events.TenantDeleted, 5))

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, ch.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	if cfg.Storage != jetstream.FileStorage || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "test.tenant.>" ||
		cfg.Duplicates != tenantapitest.DuplicateWindow {
		t.Fatalf("stream config %+v", cfg)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("%d messages, want 2: the same event id twice is one message", info.State.Msgs)
	}
	msg, err := stream.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "test.tenant.suspended" || msg.Header.Get(jetstream.MsgIDHeader) != ev.ID || got.ID != ev.ID ||
		got.Deployment != d.Deployment || got.Subject != "5" || got.Data.TenantID != 5 || got.Data.Status != "suspended" {
		t.Fatalf("stored %s %v %+v, want event %s about tenant 5 of %s", msg.Subject, msg.Header, got, ev.ID, d.Deployment)
	}
}
