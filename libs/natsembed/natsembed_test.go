package natsembed_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/natsembed"
)

func TestStartServesJetStreamOnFileStorage(t *testing.T) {
	dir := t.TempDir()
	ns, err := natsembed.Start(natsembed.Options{Port: 0, StoreDir: dir})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("connect %s: %v", ns.ClientURL(), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CHECK", Subjects: []string{"check.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "check.one", []byte("x")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("stream state = %d msgs on %v, want 1 on file storage", info.State.Msgs, info.Config.Storage)
	}
}

func TestStartRequiresStoreDir(t *testing.T) {
	if _, err := natsembed.Start(natsembed.Options{}); err == nil {
		t.Fatal("Start without StoreDir succeeded")
	}
}
