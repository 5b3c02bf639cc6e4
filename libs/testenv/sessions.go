package testenv

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

// SessionCounter counts server sessions per database on the test server,
// through one connection of its own: not for concurrent use.
type SessionCounter struct {
	conn *pgx.Conn
}

// Sessions connects a SessionCounter to the test server (PostgresURL)
// until the test ends.
func Sessions(tb testing.TB) *SessionCounter {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), PostgresURL(tb))
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return &SessionCounter{conn: conn}
}

// Count returns how many client sessions are open on the databases: the
// ones max_connections counts, not autovacuum workers, which visit a
// database now and then.
func (s *SessionCounter) Count(tb testing.TB, databases ...string) int {
	tb.Helper()
	var n int
	if err := s.conn.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1) AND backend_type = 'client backend'`, databases).Scan(&n); err != nil {
		tb.Fatalf("testenv: count sessions: %v", err)
	}
	return n
}

// Peak counts the sessions on the databases now and then over and over in
// the background until stop is called, which returns the highest count
// seen. Count must not be called meanwhile.
func (s *SessionCounter) Peak(tb testing.TB, databases ...string) (stop func() int) {
	tb.Helper()
	var (
		peak    atomic.Int64
		done    = make(chan struct{})
		sampled = make(chan struct{})
	)
	peak.Store(int64(s.Count(tb, databases...)))
	go func() {
		defer close(sampled)
		for {
			select {
			case <-done:
				return
			default:
			}
			if n := int64(s.Count(tb, databases...)); n > peak.Load() {
				peak.Store(n)
			}
		}
	}()
	return func() int {
		close(done)
		<-sampled
		return int(peak.Load())
	}
}
