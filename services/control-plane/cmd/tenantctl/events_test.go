package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/natsembed"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/control-plane/internal/natsbus"
)

// TestEventsTail follows the events of a control plane as they are
// published: JSON lines of the envelopes of one type, or text lines of
// every type, until interrupted.
func TestEventsTail(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner password 1")
	c := newCLI(t, "", "NATS_URL="+cp.NATS.URL())
	created := c.start(t, "events", "tail", "--type", "tenant.created", "-o", "json")
	all := c.start(t, "events", "tail", "-o", "table")
	created.waitFor(t, created.stderr, "Following TENANT_EVENTS (tenant.created)")
	all.waitFor(t, all.stderr, "Following TENANT_EVENTS (tenant.>)")

	acme := cp.CreateReadyOrganization(t, owner, "Acme")
	created.waitFor(t, created.stdout, "\n")
	var e events.Envelope
	decode(t, created.stdout.Lines()[0], &e)
	if e.Type != events.TenantCreated || e.Data.TenantID != acme.ID || e.Data.Name != "Acme" || e.Deployment != cp.Deployment || e.Data.Status != "ready" {
		t.Fatalf("events tail printed %+v, want tenant.created of Acme", e)
	}

	cp.Do(t, http.MethodPost, "/admin/organizations/"+itoa(acme.ID)+"/suspend", cp.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	all.waitFor(t, all.stdout, " tenant.suspended tenant="+itoa(acme.ID)+` name="Acme" owner=`+itoa(owner.ID)+" status=suspended")
	if !strings.Contains(all.stdout.String(), " tenant.created tenant="+itoa(acme.ID)+" ") {
		t.Fatalf("events tail without --type missed tenant.created:\n%s", all.stdout)
	}

	// The stream delivers in order: the suspension came before this
	// creation, so the filtered tail would have printed it by now.
	globex := cp.CreateReadyOrganization(t, owner, "Globex")
	created.waitFor(t, created.stdout, `"name":"Globex"`)
	lines := created.stdout.Lines()
	if len(lines) != 2 || !strings.Contains(lines[1], `"type":"tenant.created"`) || !strings.Contains(lines[1], `"tenant_id":`+itoa(globex.ID)) {
		t.Fatalf("events tail --type tenant.created printed:\n%s", created.stdout)
	}

	for _, p := range []*proc{created, all} {
		if code := p.interrupt(t); code != 0 {
			t.Fatalf("events tail ended with %d on SIGINT, want 0\nstderr:\n%s", code, p.stderr)
		}
	}
}

// TestEventsTailLogsIn: with NATS_USER and NATS_PASSWORD tenantctl logs in
// as a user holding only the follower permissions; --since replays what
// was published before it started.
func TestEventsTailLogsIn(t *testing.T) {
	t.Parallel()
	perms := events.DefaultChannel.FollowerPermissions()
	srv := testenv.NATSWithUsers(t,
		natsembed.User{Name: "admin", Password: "admin-password"},
		natsembed.User{Name: "follower", Password: "follower-password", Publish: perms.Publish, Subscribe: perms.Subscribe},
	)
	nc, err := nats.Connect(srv.URL(), nats.UserInfo("admin", "admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, natsbus.StreamConfig(natsbus.StreamOptions{MaxAge: time.Hour})); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(events.New(events.TenantProvisioningFailed, "prod",
		events.TenantData{TenantID: 41, Name: "Acme", OwnerID: 7, Status: "failed", Detail: "disk full"}))
	if _, err := js.Publish(ctx, events.DefaultChannel.Subject(events.TenantProvisioningFailed), b); err != nil {
		t.Fatal(err)
	}

	wrong := newCLI(t, "", "NATS_URL="+srv.URL(), "NATS_USER=follower", "NATS_PASSWORD=not-it")
	if r := wrong.expect(t, 1, "events", "tail"); !strings.Contains(r.stderr, "cannot reach NATS") {
		t.Fatalf("a wrong NATS password: %s", r)
	}

	c := newCLI(t, "", "NATS_URL="+srv.URL(), "NATS_USER=follower", "NATS_PASSWORD=follower-password")
	p := c.start(t, "events", "tail", "--since", "1h", "-o", "table")
	p.waitFor(t, p.stdout, ` tenant.provisioning_failed tenant=41 name="Acme" owner=7 status=failed schema_version=0 detail="disk full"`)
	if code := p.interrupt(t); code != 0 {
		t.Fatalf("events tail ended with %d, want 0\nstderr:\n%s", code, p.stderr)
	}
}
