package tenantapitest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
)

// DuplicateWindow is how long the stream remembers message ids, as the
// control plane configures it.
const DuplicateWindow = 2 * time.Minute

// StreamConfig is the stream of ch as the control plane keeps it on a
// single server (its natsbus.StreamConfig with the default settings): file
// storage, every subject of the channel, a duplicate window.
func StreamConfig(ch events.Channel) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        ch.Stream,
		Description: "Tenant lifecycle events published by the control plane",
		Subjects:    []string{ch.All()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      720 * time.Hour,
		Replicas:    1,
		Duplicates:  DuplicateWindow,
	}
}

// Publisher puts tenant events on a channel's stream the way the control
// plane's relay does: the JSON envelope as the body, on the subject of the
// event's type, with Nats-Msg-Id set to the event id, retried until
// JetStream acknowledges it.
type Publisher struct {
	Channel events.Channel

	nc *nats.Conn
	js jetstream.JetStream
}

// NewPublisher connects to the NATS server at url, keeps reconnecting
// after losses, and ensures the stream of ch exists. It is closed when the
// test ends.
func NewPublisher(tb testing.TB, url string, ch events.Channel) *Publisher {
	tb.Helper()
	nc, err := nats.Connect(url, nats.Name("tenantapitest"),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		tb.Fatalf("tenantapitest: connect to NATS: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("tenantapitest: %v", err)
	}
	p := &Publisher{Channel: ch, nc: nc, js: js}
	p.EnsureStream(tb)
	return p
}

// EnsureStream creates the channel's stream or updates it to StreamConfig,
// as the control plane does at start.
func (p *Publisher) EnsureStream(tb testing.TB) {
	tb.Helper()
	p.retry(tb, "ensure stream "+p.Channel.Stream, func(ctx context.Context) error {
		_, err := p.js.CreateOrUpdateStream(ctx, StreamConfig(p.Channel))
		return err
	})
}

// Publish sends ev and waits for JetStream's acknowledgement, retrying
// while NATS is unreachable (for up to 30 seconds). A retry that JetStream
// had stored already is dropped as a duplicate of the same message id.
func (p *Publisher) Publish(tb testing.TB, ev events.Envelope) {
	tb.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		tb.Fatalf("tenantapitest: encode event: %v", err)
	}
	subject := p.Channel.Subject(ev.Type)
	p.retry(tb, "publish "+ev.Type+" on "+subject, func(ctx context.Context) error {
		_, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}},
			jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(p.Channel.Stream))
		return err
	})
}

func (p *Publisher) retry(tb testing.TB, what string, try func(context.Context) error) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := try(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("tenantapitest: %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
