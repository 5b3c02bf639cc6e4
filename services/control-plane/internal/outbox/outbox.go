// Package outbox is the transactional outbox of tenant events: Add writes an
// event in the caller's transaction, and a Relay publishes written events
// in order, marking each published only after the bus acknowledged it.
package outbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"tenantbase/libs/events"
)

// channel is the Postgres NOTIFY channel that wakes relays when an event is
// committed; relays also poll, so a lost notification only delays.
const channel = "event_outbox"

// Add writes e to the outbox within tx; it is relayed once tx commits.
func Add(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("outbox: encode %s: %w", e.Type, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO event_outbox (event_id, subject, payload) VALUES ($1, $2, $3)`,
		e.ID, e.Type, string(payload)); err != nil {
		return fmt.Errorf("outbox: add %s: %w", e.Type, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, channel); err != nil {
		return fmt.Errorf("outbox: notify: %w", err)
	}
	return nil
}

// Publisher delivers one event of eventType and returns once the bus has
// stored it. msgID is the event id, used by the bus to drop duplicates.
// An error wraps ErrRefused when the bus received the event and answered
// that it will not store it; any other error (the bus is down, slow or
// unreachable) is the bus's, never the event's.
type Publisher interface {
	Publish(ctx context.Context, eventType, msgID string, data []byte) error
}

// ErrRefused marks a Publisher error in which the bus answered and refused
// the event (too large for the stream, say). Only refused events are ever
// set aside: an event that failed because the bus was down keeps its place.
var ErrRefused = errors.New("the bus refused the event")

// Relay moves committed events from the outbox to a Publisher.
type Relay struct {
	Pool *pgxpool.Pool
	// DSN opens the connection that listens for new events.
	DSN       string
	Publisher Publisher
	Log       *slog.Logger
	// BatchSize bounds the events published per transaction (default 100).
	BatchSize int
	// PollInterval is the longest wait between two looks at the outbox (default 1s).
	PollInterval time.Duration
	// Retention is how long published rows are kept (default 7 days).
	Retention time.Duration
	// Wake, when set, ends a wait at once: the bus is back, so the relay
	// need not sit out its backoff.
	Wake <-chan struct{}
	// DeadAfter is how many refused publishes of one event (default 10) set
	// it aside, once a later event went through: the bus refuses this one,
	// and it must not hold up every event behind it.
	DeadAfter int
	// Metrics, when set, counts events set aside.
	Metrics *Metrics
}

// Metrics are the relay's Prometheus metrics.
type Metrics struct {
	dead prometheus.Counter
}

// Dead is the counter of events set aside.
func (m *Metrics) Dead() prometheus.Counter { return m.dead }

// NewMetrics registers the relay's metrics in reg; pending reports the
// events still waiting, read when scraped.
func NewMetrics(reg prometheus.Registerer, pending func() (float64, error)) *Metrics {
	m := &Metrics{dead: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "event_outbox_dead_total",
		Help: "Events set aside because the bus kept refusing them while later events went through; alert on any increase (docs/events.md says how to replay them).",
	})}
	reg.MustRegister(m.dead, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "event_outbox_pending",
		Help: "Events written but not yet published (not counting those set aside).",
	}, func() float64 {
		n, err := pending()
		if err != nil {
			return -1
		}
		return n
	}))
	return m
}

// lockKey serialises relays sharing a core database, so that events go out
// in outbox order and none is sent by two relays at once.
const lockKey = "tenantbase.event_outbox.relay"

// Run relays until ctx is cancelled. Publishing failures (the bus is down)
// are retried with backoff and never lose or reorder events.
func (r *Relay) Run(ctx context.Context) error {
	batch := cmp.Or(r.BatchSize, 100)
	poll := cmp.Or(r.PollInterval, time.Second)
	retention := cmp.Or(r.Retention, 7*24*time.Hour)

	wake := make(chan struct{}, 1)
	listenDone := make(chan struct{})
	go func() {
		defer close(listenDone)
		r.listen(ctx, wake)
	}()
	defer func() { <-listenDone }()

	const minBackoff, maxBackoff = 200 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	nextCleanup := time.Now()
	for {
		wait := poll
		n, err := r.Flush(ctx, batch)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.Log.Warn("event relay: publishing delayed", "error", err.Error(), "retry_in", backoff.String())
			wait = backoff
			backoff = min(backoff*2, maxBackoff)
		case n == batch:
			backoff = minBackoff
			continue
		default:
			backoff = minBackoff
		}
		if time.Now().After(nextCleanup) {
			if err := r.cleanup(ctx, retention); err != nil && ctx.Err() == nil {
				r.Log.Warn("event relay: outbox cleanup", "error", err.Error())
			}
			nextCleanup = time.Now().Add(time.Hour)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-wake:
			// A failing bus is not retried faster because events keep coming.
			if err != nil {
				select {
				case <-timer.C:
				case <-r.Wake:
				case <-ctx.Done():
				}
			}
		case <-r.Wake:
			backoff = minBackoff
		case <-timer.C:
		}
		timer.Stop()
	}
}

// Flush publishes up to limit unpublished events, oldest first, and marks
// those the bus acknowledged. It returns how many were published; an error
// means the rest of the batch is left for a later try.
func (r *Relay) Flush(ctx context.Context, limit int) (int, error) {
	tx, err := r.Pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var locked bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))`, lockKey).Scan(&locked); err != nil {
		return 0, err
	}
	if !locked {
		// Another relay is draining the outbox right now.
		return 0, nil
	}
	// The subject column holds the event type; the Publisher maps it to
	// the subject of its deployment's channel.
	rows, err := tx.Query(ctx, `SELECT id, event_id::text, subject, payload::text, attempts FROM event_outbox
		WHERE published_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return 0, err
	}
	type row struct {
		id        int64
		eventID   string
		eventType string
		payload   string
		attempts  int
	}
	pending, err := pgx.CollectRows(rows, func(rw pgx.CollectableRow) (row, error) {
		var x row
		err := rw.Scan(&x.id, &x.eventID, &x.eventType, &x.payload, &x.attempts)
		return x, err
	})
	if err != nil {
		return 0, err
	}
	publish := func(p row) error {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return r.Publisher.Publish(pctx, p.eventType, p.eventID, []byte(p.payload))
	}
	var published []int64
	var pubErr error
	for i := 0; i < len(pending); i++ {
		p := pending[i]
		err := publish(p)
		if err == nil {
			published = append(published, p.id)
			continue
		}
		if _, uerr := tx.Exec(ctx, `UPDATE event_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1`,
			p.id, err.Error()); uerr != nil {
			return 0, errors.Join(err, uerr)
		}
		// Later events wait for this one, so subscribers see them in
		// order, unless the bus refused it often enough and the next one
		// goes through: then the bus refuses this event only, and it is set
		// aside. A failure that is not a refusal (the bus is down or just
		// coming back) never lets a later event go first.
		if errors.Is(err, ErrRefused) && p.attempts+1 >= cmp.Or(r.DeadAfter, 10) &&
			i+1 < len(pending) && publish(pending[i+1]) == nil {
			if _, uerr := tx.Exec(ctx, `UPDATE event_outbox SET dead_at = now() WHERE id = $1`, p.id); uerr != nil {
				return 0, uerr
			}
			r.Log.Error("event relay: an event the bus keeps refusing was set aside", "event_id", p.eventID,
				"type", p.eventType, "attempts", p.attempts+1, "error", err.Error())
			if r.Metrics != nil {
				r.Metrics.dead.Inc()
			}
			published = append(published, pending[i+1].id)
			i++
			continue
		}
		pubErr = fmt.Errorf("publish %s %s: %w", p.eventType, p.eventID, err)
		break
	}
	if len(published) > 0 || pubErr != nil {
		if _, err := tx.Exec(ctx, `UPDATE event_outbox SET published_at = now() WHERE id = ANY($1)`, published); err != nil {
			return 0, errors.Join(pubErr, err)
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, errors.Join(pubErr, err)
		}
	}
	return len(published), pubErr
}

// Pending counts events not yet published, not counting those set aside.
func (r *Relay) Pending(ctx context.Context) (int, error) {
	var n int
	err := r.Pool.QueryRow(ctx, `SELECT count(*) FROM event_outbox WHERE published_at IS NULL AND dead_at IS NULL`).Scan(&n)
	return n, err
}

func (r *Relay) cleanup(ctx context.Context, retention time.Duration) error {
	_, err := r.Pool.Exec(ctx, `DELETE FROM event_outbox WHERE published_at < now() - $1::interval`, retention)
	return err
}

// listen turns NOTIFYs on the outbox channel into wake-ups, reconnecting
// after errors until ctx is cancelled.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		r.Log.Debug("event relay: listen connection lost; polling meanwhile", "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, wake chan<- struct{}) error {
	conn, err := pgx.Connect(ctx, r.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}
