package natsbus_test

import (
	"context"
	"log/slog"
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

// TestBusNeedsOnlyPublisherPermissions logs the bus in as a user holding
// just the publisher permissions of its channel: it creates and updates
// the stream and publishes. A user allowed only to read cannot.
func TestBusNeedsOnlyPublisherPermissions(t *testing.T) {
	ch := events.Channel{Stream: "STAGING_TENANT_EVENTS", Prefix: "staging.tenant"}
	pub, follow := ch.PublisherPermissions(), ch.FollowerPermissions()
	srv := testenv.NATSWithUsers(t,
		natsembed.User{Name: "admin", Password: "admin-password"},
		natsembed.User{Name: "control-plane", Password: "cp-password", Publish: pub.Publish, Subscribe: pub.Subscribe},
		natsembed.User{Name: "tenant-plane", Password: "tp-password", Publish: follow.Publish, Subscribe: follow.Subscribe},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var logs testenv.LogBuffer
	connect := func(user, password string, maxAge time.Duration) *natsbus.Bus {
		t.Helper()
		bus, err := natsbus.Connect(srv.URL(), "test", natsbus.StreamOptions{Channel: ch, MaxAge: maxAge}, slog.New(slog.NewJSONHandler(&logs, nil)),
			nats.UserInfo(user, password))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bus.Close)
		return bus
	}
	bus := connect("control-plane", "cp-password", time.Hour)
	if err := bus.Publish(ctx, events.TenantCreated, "event-1", []byte(`{}`)); err != nil {
		t.Fatalf("publish creating the stream: %v", err)
	}
	if err := connect("control-plane", "cp-password", 2*time.Hour).EnsureStream(ctx); err != nil {
		t.Fatalf("update the stream: %v", err)
	}

	nc, err := nats.Connect(srv.URL(), nats.UserInfo("admin", "admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, ch.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if info := stream.CachedInfo(); info.State.Msgs != 1 || info.Config.MaxAge != 2*time.Hour {
		t.Fatalf("stream holds %d messages with max age %s, want 1 and 2h", info.State.Msgs, info.Config.MaxAge)
	}

	reader := connect("tenant-plane", "tp-password", time.Hour)
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if err := reader.Publish(short, events.TenantDeleted, "event-2", []byte(`{}`)); err == nil {
		t.Fatal("a reader published an event")
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), `Permissions Violation for Publish to \"$JS.API.STREAM.UPDATE.`+ch.Stream)
	}, "the permission violation logged")
}
