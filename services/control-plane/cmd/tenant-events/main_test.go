package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/natsbus"
)

// TestPrintsEachTenantCreatedOnce runs the subscriber twice with the same
// durable name: it prints tenant.created events of its deployment only, a
// redelivered event once, and after a restart only what it has not
// acknowledged yet.
func TestPrintsEachTenantCreatedOnce(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, natsbus.StreamConfig(natsbus.StreamOptions{Channel: events.DefaultChannel, MaxAge: time.Hour})); err != nil {
		t.Fatal(err)
	}
	publish := func(e events.Envelope) {
		t.Helper()
		b, _ := json.Marshal(e)
		if _, err := js.Publish(ctx, e.Type, b); err != nil {
			t.Fatal(err)
		}
	}
	first := events.New(events.TenantCreated, "prod", events.TenantData{TenantID: 41, Name: "Acme", OwnerID: 7, Status: "ready", SchemaVersion: 1})
	publish(first)
	publish(events.New(events.TenantDeleted, "prod", events.TenantData{TenantID: 40, Name: "Old", OwnerID: 7, Status: "deleted"}))
	// The same event stored twice, as a lost ack would deliver it again.
	publish(first)
	// Another deployment's event on the same stream is not this subscriber's.
	publish(events.New(events.TenantCreated, "staging", events.TenantData{TenantID: 41, Name: "Other", OwnerID: 1, Status: "ready"}))
	publish(events.New(events.TenantCreated, "prod", events.TenantData{TenantID: 42, Name: "Globex", OwnerID: 8, Status: "ready", SchemaVersion: 1}))

	runFor := func(wantLines int) []string {
		t.Helper()
		var out, errs testenv.LogBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		// A pull request of the stopped first run can still take a message
		// on the server; it comes back after the ack wait, kept short here.
		go func() {
			done <- run(ctx, []string{"-nats", srv.URL(), "-durable", "printer", "-ack-wait", "1s", "-deployment", "prod"}, &out, &errs)
		}()
		testenv.Eventually(t, 10*time.Second, func() bool {
			return strings.Count(out.String(), "\n") >= wantLines
		}, "printed lines")
		// Anything printed beyond the expected lines would show up here.
		time.Sleep(300 * time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v (stderr %s)", err, errs.String())
		}
		return out.Lines()
	}

	lines := runFor(2)
	if len(lines) != 2 || !strings.Contains(lines[0], `tenant=41 name="Acme"`) || !strings.Contains(lines[1], "tenant=42") {
		t.Fatalf("first run printed %q, want tenants 41 (of prod) and 42 once each", lines)
	}
	for _, l := range lines {
		if !strings.Contains(l, " tenant.created ") {
			t.Fatalf("printed a line that is not tenant.created: %q", l)
		}
	}

	publish(events.New(events.TenantCreated, "prod", events.TenantData{TenantID: 43, Name: "Initech", OwnerID: 9, Status: "ready", SchemaVersion: 1}))
	lines = runFor(1)
	if len(lines) != 1 || !strings.Contains(lines[0], "tenant=43") {
		t.Fatalf("second run printed %q, want only tenant 43", lines)
	}
}
