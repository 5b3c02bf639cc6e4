package app_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// TestEventsSurviveStreamLeaderFailover runs the control plane against a
// three-server JetStream cluster with EVENTS_REPLICAS=3 and shuts down the
// leader of TENANT_EVENTS while a burst of organizations is being
// provisioned and announced. The leader is made to be the server the
// control plane publishes through, so its connection and any PubAck in
// flight go down with it. Every tenant.created reaches a durable consumer
// on the two remaining servers, and none is stored twice.
func TestEventsSurviveStreamLeaderFailover(t *testing.T) {
	const (
		orgs = 50
		// killAt is how many events the stream holds when its leader goes:
		// early enough that most of the burst is published afterwards.
		killAt = 10
	)
	cluster := testenv.NATSCluster(t, 3)
	cp := cptest.Start(t, cptest.Options{NATSURL: cluster.URL(), Configure: func(c *app.Config) { c.EventsReplicas = 3 }})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)

	nc, err := nats.Connect(cluster.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// msgs is the stream's message count, or -1 while it cannot be read.
	msgs := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, events.DefaultStream)
		if err != nil {
			return -1
		}
		info, err := s.Info(ctx)
		if err != nil {
			return -1
		}
		return int(info.State.Msgs)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return msgs() == 0 }, "the control plane created the stream")
	var publisher *testenv.NATSServer
	testenv.Eventually(t, 10*time.Second, func() bool { publisher = cluster.ServerOf("control-plane"); return publisher != nil },
		"the control plane connected")
	cluster.MoveStreamLeader(t, events.DefaultStream, publisher, 10*time.Second)

	ids := map[int64]bool{}
	for i := range orgs {
		ids[cp.CreateOrganization(t, owner.AccessToken, fmt.Sprintf("Burst %d", i)).ID] = true
	}

	var before int
	testenv.Eventually(t, time.Minute, func() bool { before = msgs(); return before >= killAt }, fmt.Sprintf("%d events published", killAt))
	old := cluster.ShutdownStreamLeader(t, events.DefaultStream, 5*time.Second)
	killed := time.Now()
	if old != publisher {
		t.Fatalf("shut down %s, but the control plane publishes through %s", old.Name(), publisher.Name())
	}
	if before >= orgs {
		t.Fatalf("all %d events were published before the leader went down: nothing was in flight", before)
	}
	leader := cluster.WaitStreamLeader(t, events.DefaultStream, 20*time.Second)
	failover := time.Since(killed)
	after := -1
	testenv.Eventually(t, 20*time.Second, func() bool { after = msgs(); return after >= 0 }, "the stream readable again")
	testenv.Eventually(t, 20*time.Second, func() bool { return msgs() > after }, "publishing resumed")
	t.Logf("%s led %s with %d of %d events stored; %s took over after %s with %d; publishing resumed %s after the shutdown",
		old.Name(), events.DefaultStream, before, orgs, leader.Name(), failover, after, time.Since(killed))

	log := cptest.Subscribe(t, cluster.RunningURL(), events.TenantCreated)
	log.WaitUntil(t, time.Minute, "every tenant.created", func(got []cptest.Received) bool {
		seen := map[int64]bool{}
		for _, r := range got {
			if ids[r.Envelope.Data.TenantID] {
				seen[r.Envelope.Data.TenantID] = true
			}
		}
		return len(seen) == orgs
	})
	perTenant := map[int64]int{}
	perID := map[string]int{}
	cptest.OutboxDrained(t, cp.DatabaseURL, 30*time.Second)
	for _, r := range log.Drain(t, 30*time.Second) {
		perID[r.Envelope.ID]++
		perTenant[r.Envelope.Data.TenantID]++
	}
	for id := range ids {
		if perTenant[id] != 1 {
			t.Errorf("tenant %d: %d tenant.created events, want 1", id, perTenant[id])
		}
	}
	for id, n := range perID {
		if n != 1 {
			t.Errorf("event %s received %d times", id, n)
		}
	}
	if n := msgs(); n != orgs {
		t.Errorf("the stream holds %d events, want %d: one per organization", n, orgs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == old.Name() {
		t.Errorf("stream replicas %d, cluster %+v: want 3 replicas led by a running server", info.Config.Replicas, info.Cluster)
	}
	var pending int
	testenv.QueryRow(t, cp.DatabaseURL, `SELECT count(*) FROM event_outbox WHERE published_at IS NULL`, nil, &pending)
	if pending != 0 {
		t.Errorf("%d events still wait in the outbox", pending)
	}
	// A publish whose PubAck went down with the server waits out its
	// timeout and is sent again; JetStream drops the copy by its Nats-Msg-Id.
	t.Logf("the relay retried %d times", strings.Count(cp.Logs(), "event relay: publishing delayed"))
}
