package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"tenantbase/libs/events"
)

func (a *ctl) eventsCmd() *cobra.Command {
	cmd := group("events", "The tenant lifecycle events on NATS JetStream")
	cmd.AddCommand(a.eventsTail())
	return cmd
}

func (a *ctl) eventsTail() *cobra.Command {
	var types []string
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print each tenant event as it is published, until interrupted",
		Long: `Follow the deployment's event stream and print each event as it arrives:
as JSON, one CloudEvents envelope per line, or as one line of text.

The stream is read from NATS_URL (default nats://127.0.0.1:4222) through an
ordered consumer, which is ephemeral: nothing is left on the server. The
stream and subjects are EVENTS_STREAM (default TENANT_EVENTS) and
EVENTS_SUBJECT_PREFIX (default tenant), as the control plane is configured.
Where NATS requires a login, NATS_USER names a user with the follower
permissions of docs/events.md and NATS_PASSWORD its password.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			return a.tail(ctx, types, since)
		}),
	}
	cmd.Flags().StringSliceVar(&types, "type", nil, "only events of this type, e.g. tenant.created (repeatable; default all)")
	cmd.Flags().DurationVar(&since, "since", 0, "first print the events of this long ago, e.g. 1h (default: new events only)")
	return cmd
}

func (a *ctl) tail(ctx context.Context, types []string, since time.Duration) error {
	ch := events.Channel{Stream: envOr("EVENTS_STREAM", events.DefaultStream), Prefix: envOr("EVENTS_SUBJECT_PREFIX", events.DefaultPrefix)}
	if err := ch.Validate(); err != nil {
		return usage(err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{ch.All()}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if len(types) > 0 {
		cfg.FilterSubjects = nil
		for _, t := range types {
			if !strings.HasPrefix(t, "tenant.") || strings.ContainsAny(t, " *>") {
				return usage(fmt.Errorf("--type takes an event type such as tenant.created, not %q", t))
			}
			cfg.FilterSubjects = append(cfg.FilterSubjects, ch.Subject(t))
		}
	}
	if since < 0 {
		return usage(errors.New("--since must not be negative"))
	}
	if since > 0 {
		start := time.Now().Add(-since)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}

	natsURL := envOr("NATS_URL", nats.DefaultURL)
	opts := []nats.Option{nats.Name("tenantctl"), nats.MaxReconnects(-1)}
	if user := os.Getenv("NATS_USER"); user != "" {
		opts = append(opts, nats.UserInfo(user, os.Getenv("NATS_PASSWORD")))
	}
	nc, err := nats.Connect(natsURL, opts...)
	if err != nil {
		return fmt.Errorf("cannot reach NATS at %s: %w", natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := js.OrderedConsumer(cctx, ch.Stream, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot read the stream %s on %s: %w", ch.Stream, natsURL, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		msgs.Stop()
	}()
	fmt.Fprintf(a.stderr, "Following %s (%s) on %s.\n", ch.Stream, strings.Join(cfg.FilterSubjects, ", "), natsURL)
	for {
		msg, err := msgs.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			fmt.Fprintln(a.stderr, "tenantctl: receive:", err)
			continue
		}
		a.printEvent(msg.Data())
	}
}

// printEvent prints one event: as JSON, the envelope as published on one
// line; as text, its main fields.
func (a *ctl) printEvent(data []byte) {
	e, err := events.Decode(data)
	if err != nil {
		fmt.Fprintln(a.stderr, "tenantctl: skipping a message that is no tenant event:", err)
		return
	}
	if a.out.json {
		var buf bytes.Buffer
		if json.Compact(&buf, data) == nil {
			buf.WriteByte('\n')
			_, _ = a.stdout.Write(buf.Bytes())
		}
		return
	}
	line := fmt.Sprintf("%s %s tenant=%d name=%q owner=%d status=%s schema_version=%d",
		e.Time.Format(time.RFC3339), e.Type, e.Data.TenantID, e.Data.Name, e.Data.OwnerID, e.Data.Status, e.Data.SchemaVersion)
	if e.Data.Detail != "" {
		line += fmt.Sprintf(" detail=%q", e.Data.Detail)
	}
	fmt.Fprintln(a.stdout, clean(line))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
