// Command tenant-events is a minimal subscriber of the tenant lifecycle
// events: it attaches a durable JetStream consumer to the event stream
// (TENANT_EVENTS unless EVENTS_STREAM says otherwise) and prints each event
// of the chosen type (tenant.created by default) as one line, skipping
// redeliveries of an event it has already printed and, with -deployment,
// events of other deployments.
//
//	go run ./services/control-plane/cmd/tenant-events -nats nats://127.0.0.1:4222
//
// Where NATS requires a login, -user (or NATS_USER) names a user holding
// the subscriber permissions of its durable (docs/events.md) and
// NATS_PASSWORD its password.
//
// Being durable, the consumer resumes after a restart where it left off;
// docs/events.md describes the contract it relies on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/service"
)

func main() {
	ctx, stop := service.SignalContext()
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tenant-events:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tenant-events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL (several: comma-separated)")
	user := fs.String("user", os.Getenv("NATS_USER"), "NATS user (its password in NATS_PASSWORD); empty: no login")
	durable := fs.String("durable", "tenant-events-printer", "durable consumer name")
	subject := fs.String("subject", events.TenantCreated, "event type to print (tenant.> for all)")
	stream := fs.String("stream", envOr("EVENTS_STREAM", events.DefaultStream), "JetStream stream of the deployment's events")
	prefix := fs.String("prefix", envOr("EVENTS_SUBJECT_PREFIX", events.DefaultPrefix), "subject prefix of the deployment's events")
	deployment := fs.String("deployment", os.Getenv("DEPLOYMENT_ID"), "print only events of this deployment (empty: all)")
	ackWait := fs.Duration("ack-wait", 30*time.Second, "redeliver an event not acknowledged within this time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	channel := events.Channel{Stream: *stream, Prefix: *prefix}
	if err := channel.Validate(); err != nil {
		return err
	}
	filter := channel.All()
	if *subject != "tenant.>" {
		filter = channel.Subject(*subject)
	}

	opts := []nats.Option{nats.Name("tenant-events"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		// A permission violation answers no request; say so instead of
		// only timing out.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { fmt.Fprintln(stderr, "nats:", err) })}
	if *user != "" {
		// The password stays out of the flags, which other users of the
		// machine can read.
		opts = append(opts, nats.UserInfo(*user, os.Getenv("NATS_PASSWORD")))
	}
	nc, err := nats.Connect(*natsURL, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := attach(ctx, js, channel.Stream, *durable, filter, *ackWait, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "consumer %s on %s (%s) attached\n", *durable, channel.Stream, filter)

	// JetStream drops republished duplicates within its window; a message
	// redelivered because its ack was lost still arrives twice, so the
	// event id decides.
	seen := newSeen(10_000)
	msgs, err := cons.Messages()
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		msgs.Stop()
	}()
	for {
		msg, err := msgs.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			fmt.Fprintln(stderr, "receive:", err)
			continue
		}
		e, err := events.Decode(msg.Data())
		if err != nil {
			// Not an event this program understands: leave it to others.
			fmt.Fprintln(stderr, "skip:", err)
			_ = msg.Term()
			continue
		}
		if (*deployment == "" || e.FromDeployment(*deployment)) && seen.add(e.ID) {
			fmt.Fprintf(stdout, "%s %s tenant=%d name=%q owner=%d status=%s schema_version=%d id=%s\n",
				e.Time.Format(time.RFC3339), e.Type, e.Data.TenantID, e.Data.Name, e.Data.OwnerID,
				e.Data.Status, e.Data.SchemaVersion, e.ID)
		}
		if err := msg.Ack(); err != nil {
			fmt.Fprintln(stderr, "ack:", err)
		}
	}
}

// attach creates or updates the durable consumer, waiting for the stream
// when the control plane has not created it yet.
func attach(ctx context.Context, js jetstream.JetStream, stream, durable, subject string, ackWait time.Duration, stderr io.Writer) (jetstream.Consumer, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := js.CreateOrUpdateConsumer(cctx, stream, jetstream.ConsumerConfig{
			Durable:       durable,
			FilterSubject: subject,
			AckPolicy:     jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckWait:       ackWait,
		})
		cancel()
		if err == nil {
			return cons, nil
		}
		fmt.Fprintf(stderr, "waiting for stream %s: %v\n", stream, err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// seenIDs remembers the most recent event ids, up to a bound.
type seenIDs struct {
	ids   map[string]struct{}
	order []string
	limit int
}

func newSeen(limit int) *seenIDs {
	return &seenIDs{ids: make(map[string]struct{}, limit), limit: limit}
}

// add records id and reports whether it was new.
func (s *seenIDs) add(id string) bool {
	if _, ok := s.ids[id]; ok {
		return false
	}
	if len(s.order) == s.limit {
		delete(s.ids, s.order[0])
		s.order = s.order[1:]
	}
	s.ids[id] = struct{}{}
	s.order = append(s.order, id)
	return true
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
