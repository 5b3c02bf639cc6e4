package testenv

import (
	"context"
	"testing"

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
	second.Close(context.Background())
	if peak := stop(); peak != 2 {
		t.Fatalf("peak = %d, want the 2 sessions open when sampling started", peak)
	}
	if n := s.Count(t, name); n != 1 {
		t.Fatalf("sessions after closing one = %d, want 1", n)
	}
}
