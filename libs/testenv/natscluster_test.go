package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSClusterFailsOverStreamLeader replicates a stream on three
// servers, moves its leadership to the server the publisher is connected
// to, shuts that server down, and keeps publishing through the other two:
// the new leader holds everything acknowledged before.
func TestNATSClusterFailsOverStreamLeader(t *testing.T) {
	formed := time.Now()
	c := NATSCluster(t, 3)
	t.Logf("cluster formed in %s", time.Since(formed))
	if n := strings.Count(c.URL(), ","); n != 2 {
		t.Fatalf("URL %q does not list three servers", c.URL())
	}
	nc, err := nats.Connect(c.URL(), nats.Name("publisher"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REPL", Subjects: []string{"repl.>"}, Storage: jetstream.FileStorage, Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	publish := func(n int) {
		t.Helper()
		for range n {
			if _, err := js.Publish(ctx, "repl.x", []byte("x"), jetstream.WithRetryAttempts(20)); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	publish(5)

	mine := c.ServerOf("publisher")
	if mine == nil {
		t.Fatal("no server has the publisher's connection")
	}
	c.MoveStreamLeader(t, "REPL", mine, 10*time.Second)
	old := c.ShutdownStreamLeader(t, "REPL", 10*time.Second)
	if old != mine {
		t.Fatalf("shut down %s, but %s led the stream", old.Name(), mine.Name())
	}
	if old.Running() || strings.Contains(c.RunningURL(), old.URL()) {
		t.Fatalf("%s still runs after its shutdown", old.Name())
	}
	start := time.Now()
	leader := c.WaitStreamLeader(t, "REPL", 20*time.Second)
	t.Logf("%s led the stream; %s took over after %s", old.Name(), leader.Name(), time.Since(start))
	if leader == old {
		t.Fatal("the stopped server is still the leader")
	}
	publish(5)
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 10 || info.Cluster == nil || info.Cluster.Leader != leader.Name() {
		t.Fatalf("after failover: %d messages led by %+v, want 10 led by %s", info.State.Msgs, info.Cluster, leader.Name())
	}
}
