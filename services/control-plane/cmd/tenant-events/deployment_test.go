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

// TestPrintsEveryDeploymentWithoutFilter: without -deployment the events
// of every deployment on the stream are printed, as the flag says.
func TestPrintsEveryDeploymentWithoutFilter(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, natsbus.StreamConfig(natsbus.StreamOptions{MaxAge: time.Hour})); err != nil {
		t.Fatal(err)
	}
	for _, dep := range []string{"prod", "staging"} {
		b, _ := json.Marshal(events.New(events.TenantCreated, dep, events.TenantData{TenantID: 1, Name: dep, OwnerID: 1, Status: "ready"}))
		if _, err := js.Publish(ctx, events.TenantCreated, b); err != nil {
			t.Fatal(err)
		}
	}
	var out, errs testenv.LogBuffer
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-nats", srv.URL(), "-durable", "all"}, &out, &errs) }()
	testenv.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(out.String(), `name="prod"`) && strings.Contains(out.String(), `name="staging"`)
	}, "the events of both deployments printed")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v (stderr %s)", err, errs.String())
	}
}
