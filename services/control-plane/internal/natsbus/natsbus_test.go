package natsbus_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/natsbus"
)

func TestBus(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bus, err := natsbus.Connect(srv.URL(), "test", natsbus.StreamOptions{Channel: events.DefaultChannel, MaxAge: time.Hour, Replicas: 1}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()

	// Publishing creates the stream when nobody did yet.
	for range 2 {
		if err := bus.Publish(ctx, events.TenantCreated, "event-1", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.Publish(ctx, events.TenantDeleted, "event-2", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, events.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	if info.State.Msgs != 2 {
		t.Fatalf("%d messages, want 2: the same id twice is one message", info.State.Msgs)
	}
	if cfg.Storage != jetstream.FileStorage || cfg.MaxAge != time.Hour || cfg.Duplicates != natsbus.DuplicateWindow ||
		len(cfg.Subjects) != 1 || cfg.Subjects[0] != events.DefaultChannel.All() {
		t.Fatalf("stream config %+v", cfg)
	}

	// A restart with another retention updates the stream in place.
	other, err := natsbus.Connect(srv.URL(), "test", natsbus.StreamOptions{Channel: events.DefaultChannel, MaxAge: 48 * time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.EnsureStream(ctx); err != nil {
		t.Fatal(err)
	}
	info, err = stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 48*time.Hour || info.State.Msgs != 2 {
		t.Fatalf("after update: max age %s, %d messages; want 48h and the messages kept", info.Config.MaxAge, info.State.Msgs)
	}

	// A second deployment on the same server, with a channel of its own,
	// never reaches the first one's stream.
	staging, err := natsbus.Connect(srv.URL(), "test", natsbus.StreamOptions{
		Channel: events.Channel{Stream: "STAGING_TENANT_EVENTS", Prefix: "staging.tenant"}, MaxAge: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer staging.Close()
	if err := staging.Publish(ctx, events.TenantDeleted, "staging-1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	stagingStream, err := js.Stream(ctx, "STAGING_TENANT_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stagingStream.GetLastMsgForSubject(ctx, "staging.tenant.deleted")
	if err != nil {
		t.Fatalf("staging event not on its own subject: %v", err)
	}
	if info, _ = stream.Info(ctx); info.State.Msgs != 2 || msg.Subject != "staging.tenant.deleted" {
		t.Fatalf("default stream holds %d messages after the staging publish, want 2", info.State.Msgs)
	}

	srv.Shutdown()
	if err := bus.Publish(ctx, events.TenantCreated, "event-3", []byte(`{}`)); err == nil {
		t.Fatal("publishing with NATS down succeeded")
	}
}
