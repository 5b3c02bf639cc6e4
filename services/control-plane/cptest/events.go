package cptest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
)

// Received is one event as a durable consumer got it.
type Received struct {
	Envelope events.Envelope
	// Raw is the JSON body as a generic map, to check fields by name.
	Raw map[string]any
	// Subject is the NATS subject and MsgID the Nats-Msg-Id header.
	Subject string
	MsgID   string
}

// EventLog reads an event stream through a durable consumer of its own,
// the way subscribers are meant to, and keeps what it received.
type EventLog struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	durable string
	stream  string
	filter  string

	mu       sync.Mutex
	received []Received
}

var durableSeq struct {
	sync.Mutex
	n int
}

// Subscribe returns an EventLog for the events of the default channel
// (TENANT_EVENTS) matching filter (e.g. "tenant.>" or "tenant.created") on
// the NATS server at url. The consumer is created on the first wait, so
// the stream may appear later.
func Subscribe(tb testing.TB, url, filter string) *EventLog {
	tb.Helper()
	return SubscribeStream(tb, url, events.DefaultStream, filter)
}

// SubscribeStream is Subscribe on another stream.
func SubscribeStream(tb testing.TB, url, stream, filter string) *EventLog {
	tb.Helper()
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		tb.Fatalf("cptest: connect to NATS: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("cptest: %v", err)
	}
	durableSeq.Lock()
	durableSeq.n++
	name := fmt.Sprintf("cptest-%d", durableSeq.n)
	durableSeq.Unlock()
	return &EventLog{nc: nc, js: js, durable: name, stream: stream, filter: filter}
}

// WaitFor receives until at least n events arrived in total, failing the
// test after timeout, and returns every event received so far.
func (l *EventLog) WaitFor(tb testing.TB, n int, timeout time.Duration) []Received {
	tb.Helper()
	return l.WaitUntil(tb, timeout, fmt.Sprintf("%d events", n), func(got []Received) bool { return len(got) >= n })
}

// WaitUntil receives until done holds for the events received so far,
// failing the test with what after timeout, and returns them.
func (l *EventLog) WaitUntil(tb testing.TB, timeout time.Duration, what string, done func([]Received) bool) []Received {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		if got := l.Received(); done(got) {
			return got
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cptest: no %s on %s within %s (%d events received; last error: %v)",
				what, l.filter, timeout, len(l.Received()), lastErr)
		}
		lastErr = l.fetch(500 * time.Millisecond)
		if lastErr != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Drain receives until the consumer has delivered, and had acknowledged,
// everything the stream holds for its filter, and returns every event
// received. Once the publisher is done (its outbox drained), nothing can
// arrive later, duplicates included: JetStream drops a republished event
// whose Nats-Msg-Id it holds, and an acknowledged one is not redelivered.
func (l *EventLog) Drain(tb testing.TB, timeout time.Duration) []Received {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cons, err := l.js.Consumer(ctx, l.stream, l.durable)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = cons.Info(ctx)
		}
		cancel()
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			return l.Received()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cptest: %s not drained within %s (last error: %v)", l.filter, timeout, err)
		}
		if err := l.fetch(200 * time.Millisecond); err != nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// OutboxDrained waits until the control plane of core has published every
// event it wrote.
func OutboxDrained(tb testing.TB, core string, timeout time.Duration) {
	tb.Helper()
	testenv.Eventually(tb, timeout, func() bool {
		var pending int
		testenv.QueryRow(tb, core, `SELECT count(*) FROM event_outbox WHERE published_at IS NULL`, nil, &pending)
		return pending == 0
	}, "outbox drained")
}

// Received returns the events received so far, in arrival order.
func (l *EventLog) Received() []Received {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Received(nil), l.received...)
}

func (l *EventLog) fetch(wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := l.js.CreateOrUpdateConsumer(ctx, l.stream, jetstream.ConsumerConfig{
		Durable:       l.durable,
		FilterSubject: l.filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return err
	}
	batch, err := cons.Fetch(100, jetstream.FetchMaxWait(max(wait, 100*time.Millisecond)))
	if err != nil {
		return err
	}
	for msg := range batch.Messages() {
		r := Received{Subject: msg.Subject(), MsgID: msg.Headers().Get(jetstream.MsgIDHeader)}
		env, err := events.Decode(msg.Data())
		if err != nil {
			return fmt.Errorf("cptest: undecodable event on %s: %w", msg.Subject(), err)
		}
		r.Envelope = env
		if err := json.Unmarshal(msg.Data(), &r.Raw); err != nil {
			return err
		}
		l.mu.Lock()
		l.received = append(l.received, r)
		l.mu.Unlock()
		if err := msg.Ack(); err != nil {
			return err
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return err
	}
	return nil
}

// OfTenant keeps the events about one tenant.
func OfTenant(all []Received, tenantID int64) []Received {
	var out []Received
	for _, r := range all {
		if r.Envelope.Data.TenantID == tenantID {
			out = append(out, r)
		}
	}
	return out
}
