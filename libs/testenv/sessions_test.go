package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestSessionCounter(t *testing.T) {
	dsn := NewDatabase(t)
	connect := func() *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	first, second := connect(), connect()
	name := first.Config().Database

	s := Sessions(t)
	if n := s.Count(t, name); n != 2 {
		t.Fatalf("sessions on %s = %d, want 2", name, n)
	}
	if n := s.Count(t, name+"_other"); n != 0 {
		t.Fatalf("sessions on a database nobody uses = %d, want 0", n)
	}
	stop := s.Peak(t, name)
	pid := second.PgConn().PID()
	second.Close(context.Background())
	if peak := stop(); peak != 2 {
		t.Fatalf("peak = %d, want the 2 sessions open when sampling started", peak)
	}
	// A backend leaves pg_stat_activity a moment after its client hung up.
	// The counter's own connection is on another database, so asking
	// adds no session here.
	Eventually(t, 10*time.Second, func() bool {
		var gone bool
		err := s.conn.QueryRow(context.Background(), `SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&gone)
		return err == nil && gone
	}, "the closed session's backend exits")
	if n := s.Count(t, name); n != 1 {
		t.Fatalf("sessions after closing one = %d, want 1", n)
	}
}
