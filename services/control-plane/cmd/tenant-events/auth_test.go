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
	"tenantbase/libs/natsembed"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/natsbus"
)

// TestLogsInWithSubscriberPermissions runs the subscriber as a user that
// may only use its own durable consumer, with the password from
// NATS_PASSWORD.
func TestLogsInWithSubscriberPermissions(t *testing.T) {
	perms := events.DefaultChannel.SubscriberPermissions("printer")
	srv := testenv.NATSWithUsers(t,
		natsembed.User{Name: "admin", Password: "admin-password"},
		natsembed.User{Name: "printer", Password: "printer-password", Publish: perms.Publish, Subscribe: perms.Subscribe},
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
	b, _ := json.Marshal(events.New(events.TenantCreated, "prod", events.TenantData{TenantID: 41, Name: "Acme", OwnerID: 7, Status: "ready", SchemaVersion: 1}))
	if _, err := js.Publish(ctx, events.TenantCreated, b); err != nil {
		t.Fatal(err)
	}

	t.Setenv("NATS_PASSWORD", "printer-password")
	var out, errs testenv.LogBuffer
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-nats", srv.URL(), "-user", "printer", "-durable", "printer", "-deployment", "prod"}, &out, &errs)
	}()
	testenv.Eventually(t, 10*time.Second, func() bool {
		if strings.Contains(errs.String(), "nats:") {
			t.Fatalf("nats error: %s", errs.String())
		}
		return strings.Contains(out.String(), `tenant=41 name="Acme"`)
	}, "the event printed")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v (stderr %s)", err, errs.String())
	}
	info, err := js.Consumer(context.Background(), events.DefaultStream, "printer")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		i, err := info.Info(context.Background())
		return err == nil && i.AckFloor.Stream == 1
	}, "the event acknowledged")
}
