package outbox_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/control-plane/internal/natsbus"
	"tenantbase/services/control-plane/internal/outbox"
)

// countingBus is the real bus, counting what goes through it.
type countingBus struct {
	*natsbus.Bus
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingBus) Publish(ctx context.Context, subject, msgID string, data []byte) error {
	err := c.Bus.Publish(ctx, subject, msgID, data)
	if err == nil {
		c.mu.Lock()
		c.calls[msgID]++
		c.mu.Unlock()
	}
	return err
}

func (c *countingBus) published() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.calls {
		out[k] = v
	}
	return out
}

func setup(t *testing.T) (string, *pgxpool.Pool, *testenv.NATSServer, *countingBus) {
	t.Helper()
	core := cptest.CoreDatabase(t)
	pool, err := pgxpool.New(context.Background(), core)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	srv := testenv.NATS(t)
	bus, err := natsbus.Connect(srv.URL(), "outbox-test", natsbus.StreamOptions{MaxAge: time.Hour}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	return core, pool, srv, &countingBus{Bus: bus, calls: map[string]int{}}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func add(t *testing.T, pool *pgxpool.Pool, tenantID int64) events.Envelope {
	t.Helper()
	e := events.New(events.TenantCreated, "test", events.TenantData{TenantID: tenantID, Name: "T", OwnerID: 1, Status: "ready", SchemaVersion: 1})
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error { return outbox.Add(context.Background(), tx, e) })
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// streamTenants reads every message of the stream in stream order.
func streamTenants(t *testing.T, url string, want int) []int64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.DefaultStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for len(out) < want {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), want, err)
		}
		e, err := events.Decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Data.TenantID)
	}
	return out
}

// TestTwoRelaysPublishEachEventOnceInOrder runs two relays (two control
// planes) on one outbox while events keep being written.
func TestTwoRelaysPublishEachEventOnceInOrder(t *testing.T) {
	t.Parallel()
	const n = 200
	core, pool, srv, bus := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		r := &outbox.Relay{Pool: pool, DSN: core, Publisher: bus, Log: quiet(), BatchSize: 7, PollInterval: 50 * time.Millisecond}
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	var written []events.Envelope
	for i := range n {
		written = append(written, add(t, pool, int64(i+1)))
	}
	relay := &outbox.Relay{Pool: pool}
	testenv.Eventually(t, time.Minute, func() bool {
		p, err := relay.Pending(context.Background())
		return err == nil && p == 0
	}, "outbox drained")
	cancel()
	wg.Wait()

	calls := bus.published()
	for _, e := range written {
		if calls[e.ID] != 1 {
			t.Errorf("event of tenant %d published %d times", e.Data.TenantID, calls[e.ID])
		}
	}
	got := streamTenants(t, srv.URL(), n)
	for i, id := range got {
		if id != int64(i+1) {
			t.Fatalf("stream position %d holds tenant %d, want %d: events out of order", i+1, id, i+1)
		}
	}
}

func TestRolledBackEventIsNeverPublished(t *testing.T) {
	t.Parallel()
	core, pool, srv, bus := setup(t)
	ctx := context.Background()
	rolledBack := events.New(events.TenantCreated, "test", events.TenantData{TenantID: 1})
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Add(ctx, tx, rolledBack); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	add(t, pool, 2)
	r := &outbox.Relay{Pool: pool, DSN: core, Publisher: bus, Log: quiet()}
	if n, err := r.Flush(ctx, 10); err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want the one committed event", n, err)
	}
	if got := streamTenants(t, srv.URL(), 1); got[0] != 2 {
		t.Fatalf("stream holds tenant %d, want 2", got[0])
	}
	if bus.published()[rolledBack.ID] != 0 {
		t.Fatal("a rolled-back event was published")
	}
}

// TestBusDownKeepsEvents flushes while NATS is down: nothing is marked
// published, and everything goes out once NATS is back.
func TestBusDownKeepsEvents(t *testing.T) {
	t.Parallel()
	core, pool, srv, bus := setup(t)
	ctx := context.Background()
	for i := range 3 {
		add(t, pool, int64(i+1))
	}
	// Failures of every event are the bus's, not an event's: nothing is
	// set aside however often they fail.
	r := &outbox.Relay{Pool: pool, DSN: core, Publisher: bus, Log: quiet(), DeadAfter: 1}
	srv.Shutdown()
	for range 3 {
		if n, err := r.Flush(ctx, 10); err == nil || n != 0 {
			t.Fatalf("Flush with NATS down = %d, %v; want 0 and an error", n, err)
		}
	}
	if p, _ := r.Pending(ctx); p != 3 {
		t.Fatalf("%d pending after a failed flush, want 3", p)
	}
	srv.Restart()
	testenv.Eventually(t, 30*time.Second, func() bool {
		n, err := r.Flush(ctx, 10)
		return err == nil && n == 3
	}, "flush after NATS is back")
	if got := streamTenants(t, srv.URL(), 3); len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("stream holds %v, want [1 2 3]", got)
	}
	var dead int
	testenv.QueryRow(t, core, `SELECT count(*) FROM event_outbox WHERE dead_at IS NOT NULL`, nil, &dead)
	if dead != 0 {
		t.Fatalf("%d events set aside after a bus outage, want 0", dead)
	}
}

// expiringOnce is the real bus whose first publish of one event runs out
// of time, as a publish does while NATS is coming back.
type expiringOnce struct {
	*countingBus
	msgID string
	done  bool
}

func (e *expiringOnce) Publish(ctx context.Context, subject, msgID string, data []byte) error {
	if msgID == e.msgID && !e.done {
		e.done = true
		expired, cancel := context.WithTimeout(ctx, 0)
		defer cancel()
		return e.countingBus.Publish(expired, subject, msgID, data)
	}
	return e.countingBus.Publish(ctx, subject, msgID, data)
}

// TestABusComingBackKeepsOrder fails an event that already failed often,
// with an error that is the bus's (a timeout), while the events behind it
// would go through: none of them goes first, and nothing is set aside.
func TestABusComingBackKeepsOrder(t *testing.T) {
	t.Parallel()
	core, pool, srv, bus := setup(t)
	ctx := context.Background()
	first := add(t, pool, 1)
	add(t, pool, 2)
	add(t, pool, 3)
	testenv.Exec(t, core, `UPDATE event_outbox SET attempts = 5`)
	r := &outbox.Relay{Pool: pool, DSN: core, Publisher: &expiringOnce{countingBus: bus, msgID: first.ID}, Log: quiet(), DeadAfter: 1}
	if n, err := r.Flush(ctx, 10); err == nil || n != 0 {
		t.Fatalf("Flush with the first event timing out = %d, %v; want 0 and an error", n, err)
	}
	if n, err := r.Flush(ctx, 10); err != nil || n != 3 {
		t.Fatalf("second Flush = %d, %v; want all three", n, err)
	}
	if got := streamTenants(t, srv.URL(), 3); got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("stream holds %v, want [1 2 3]", got)
	}
	var dead int
	testenv.QueryRow(t, core, `SELECT count(*) FROM event_outbox WHERE dead_at IS NOT NULL`, nil, &dead)
	if dead != 0 {
		t.Fatalf("%d events set aside after a timeout, want 0", dead)
	}
}

// TestAnEventTheBusRefusesIsSetAside writes an event too large for the
// stream between small ones: after DeadAfter failures, while the next
// event goes through, it is set aside with its error and counted, and the
// events behind it are published in order.
func TestAnEventTheBusRefusesIsSetAside(t *testing.T) {
	t.Parallel()
	core, pool, srv, _ := setup(t)
	ctx := context.Background()
	bus, err := natsbus.Connect(srv.URL(), "outbox-test", natsbus.StreamOptions{Channel: events.Channel{Stream: "SMALL", Prefix: "small"},
		MaxAge: time.Hour, MaxMsgSize: 1024}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	add(t, pool, 1)
	huge := events.New(events.TenantProvisioningFailed, "test", events.TenantData{TenantID: 2, Detail: strings.Repeat("x", 4096)})
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Add(ctx, tx, huge) }); err != nil {
		t.Fatal(err)
	}
	add(t, pool, 3)
	add(t, pool, 4)
	reg := prometheus.NewRegistry()
	r := &outbox.Relay{Pool: pool, DSN: core, Publisher: bus, Log: quiet(), DeadAfter: 3}
	r.Metrics = outbox.NewMetrics(reg, func() (float64, error) { n, err := r.Pending(ctx); return float64(n), err })

	for attempt := 1; attempt < 3; attempt++ {
		if _, err := r.Flush(ctx, 10); err == nil {
			t.Fatalf("flush %d published the oversized event", attempt)
		}
	}
	if n, err := r.Flush(ctx, 10); err != nil || n != 2 {
		t.Fatalf("third flush = %d, %v; want the two events behind the refused one", n, err)
	}
	var attempts int
	var lastError string
	var deadAt *time.Time
	testenv.QueryRow(t, core, `SELECT attempts, coalesce(last_error, ''), dead_at FROM event_outbox WHERE event_id = $1`,
		[]any{huge.ID}, &attempts, &lastError, &deadAt)
	if deadAt == nil || attempts != 3 || !strings.Contains(lastError, "maximum") {
		t.Fatalf("refused event: attempts %d, error %q, set aside %v; want 3 attempts, the size error, set aside", attempts, lastError, deadAt != nil)
	}
	if p, _ := r.Pending(ctx); p != 0 {
		t.Fatalf("%d events pending, want 0", p)
	}
	if got := testutil.ToFloat64(r.Metrics.Dead()); got != 1 {
		t.Fatalf("event_outbox_dead_total = %v, want 1", got)
	}
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, "SMALL")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream holds %v messages (%v), want the three small events", info.State.Msgs, err)
	}
}
