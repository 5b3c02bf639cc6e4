// Package natsbus publishes tenant events to the deployment's JetStream
// stream (TENANT_EVENTS by default). A NATS server that is down, at start
// or later, delays publishing and never stops the control plane.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/services/control-plane/internal/outbox"
)

// DuplicateWindow is how long JetStream remembers message ids. A relay
// that lost a PubAck republishes within seconds, well inside it.
const DuplicateWindow = 2 * time.Minute

// StreamOptions are the operator's choices for the event stream.
type StreamOptions struct {
	// Channel names the stream and the subject prefix; zero means
	// events.DefaultChannel.
	Channel events.Channel
	// MaxAge is how long the stream keeps events.
	MaxAge time.Duration
	// Replicas is 1 on a single server, 3 on a JetStream cluster.
	Replicas int
	// MaxMsgSize bounds one event (0: 64 KiB). Events are well under 1 KiB;
	// the bound keeps a runaway one out of every subscriber's path.
	MaxMsgSize int32
}

// StreamConfig is the stream configuration the control plane keeps.
func StreamConfig(o StreamOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        o.Channel.Stream,
		Description: "Tenant lifecycle events published by the control plane",
		Subjects:    []string{o.Channel.All()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.MaxAge,
		Replicas:    max(o.Replicas, 1),
		Duplicates:  min(DuplicateWindow, o.MaxAge),
		MaxMsgSize:  o.MaxMsgSize,
	}
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Channel == (events.Channel{}) {
		o.Channel = events.DefaultChannel
	}
	if o.MaxMsgSize == 0 {
		o.MaxMsgSize = 64 << 10
	}
	return o
}

// Bus is a NATS connection that publishes to the event stream.
type Bus struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	channel events.Channel
	stream  jetstream.StreamConfig
	log     *slog.Logger

	// reconnected gets a token whenever the connection comes back.
	reconnected chan struct{}

	mu      sync.Mutex
	ensured bool
}

// Connect returns a Bus for url (one server or several, comma-separated)
// at once; the connection is made, and remade after losses, in the
// background. extra adds options such as the login (nats.UserInfo).
func Connect(url, name string, o StreamOptions, log *slog.Logger, extra ...nats.Option) (*Bus, error) {
	reconnected := make(chan struct{}, 1)
	opts := append([]nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// Publishing while disconnected fails at once instead of being
		// buffered: the outbox keeps the event and retries it.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err.Error())
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}),
		// A first connection made after a failed start is a reconnect to
		// the relay too: events waited for it.
		nats.ConnectHandler(func(*nats.Conn) {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}),
		// Permission violations answer no request: without this they would
		// only show up as timeouts.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Error("nats error", "error", err.Error()) }),
	}, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsbus: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbus: %w", err)
	}
	o = o.withDefaults()
	return &Bus{nc: nc, js: js, channel: o.Channel, stream: StreamConfig(o), log: log, reconnected: reconnected}, nil
}

// Reconnected signals each time the connection to NATS is (re)established,
// so that a relay waiting out a failure can publish at once.
func (b *Bus) Reconnected() <-chan struct{} { return b.reconnected }

// EnsureStream creates the stream or updates it to the configured settings.
func (b *Bus) EnsureStream(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.js.CreateOrUpdateStream(ctx, b.stream); err != nil {
		b.ensured = false
		return fmt.Errorf("natsbus: ensure stream %s: %w", b.stream.Name, err)
	}
	b.ensured = true
	return nil
}

// Publish sends one event of eventType on its subject with Nats-Msg-Id =
// msgID and waits for the PubAck. A PubAck flagged duplicate means
// JetStream already holds the event, which is success too.
func (b *Bus) Publish(ctx context.Context, eventType, msgID string, data []byte) error {
	subject := b.channel.Subject(eventType)
	if !b.nc.IsConnected() {
		return fmt.Errorf("natsbus: not connected (%s)", b.nc.Status())
	}
	b.mu.Lock()
	ensured := b.ensured
	b.mu.Unlock()
	if !ensured {
		if err := b.EnsureStream(ctx); err != nil {
			return err
		}
	}
	_, err := b.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}},
		jetstream.WithMsgID(msgID), jetstream.WithExpectStream(b.stream.Name))
	if err != nil {
		// The stream may have been removed or the server replaced: check it
		// again before the next try.
		b.mu.Lock()
		b.ensured = false
		b.mu.Unlock()
		// The server answered and would not store this message: the event
		// may be at fault. Anything else is the connection's.
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) || errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("natsbus: publish %s: %w: %w", subject, outbox.ErrRefused, err)
		}
		return fmt.Errorf("natsbus: publish %s: %w", subject, err)
	}
	return nil
}

// Close drains the connection, letting in-flight publishes finish.
func (b *Bus) Close() {
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
	}
}
