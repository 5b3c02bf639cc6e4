package tenants

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
)

// Follow delivers every tenant event published from since on to handle,
// until ctx is cancelled. It retries until the stream can be read: NATS
// may be down, or the control plane may not have created the stream yet;
// the cache TTL bounds staleness meanwhile.
//
// Each replica needs every event, so Follow reads through an ordered
// consumer: ephemeral, in memory, without acks, and nothing to clean up
// when replicas come and go. It starts at since (the replica's start)
// rather than at "new" messages, so events published while NATS or the
// stream was still unreachable are not skipped; after each reconnect the
// library resumes right after the last stream sequence it delivered.
// Invalidating twice is harmless, so handle needs no de-duplication.
func Follow(ctx context.Context, js jetstream.JetStream, ch events.Channel, since time.Time, log *slog.Logger, handle func(id int64, ev events.Envelope)) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{ch.All()},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	}
	deliver := func(msg jetstream.Msg) {
		ev, err := events.Decode(msg.Data())
		if err != nil {
			log.Warn("ignoring a malformed tenant event", "subject", msg.Subject(), "error", err.Error())
			return
		}
		id, ok := ParseID(ev.Subject)
		if !ok {
			log.Warn("ignoring a tenant event without a tenant id", "type", ev.Type, "id", ev.ID)
			return
		}
		log.Debug("tenant event", "type", ev.Type, "tenant_id", id, "event_id", ev.ID)
		handle(id, ev)
	}
	wait := 500 * time.Millisecond
	for {
		cc, err := consume(ctx, js, ch.Stream, cfg, deliver, log)
		if err == nil {
			log.Info("following tenant events", "stream", ch.Stream, "subjects", ch.All())
			<-ctx.Done()
			cc.Stop()
			return
		}
		log.Warn("tenant events unavailable; retrying", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func consume(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig, deliver jetstream.MessageHandler, log *slog.Logger) (jetstream.ConsumeContext, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(cctx, stream, cfg)
	if err != nil {
		return nil, err
	}
	return cons.Consume(deliver, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Warn("tenant events interrupted; the consumer resumes by itself", "error", err.Error())
	}))
}
