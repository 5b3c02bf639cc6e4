package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/pgcluster"
)

// fallbackChildEnv makes the test binary act as a process that needs the
// throwaway cluster (see TestPostgresURLFallbackStopsWithProcess).
const fallbackChildEnv = "TESTENV_FALLBACK_CHILD"

type fallbackReport struct {
	DSN   string `json:"dsn"`
	Dir   string `json:"dir"`
	Error string `json:"error"`
}

func TestMain(m *testing.M) {
	if os.Getenv(fallbackChildEnv) == "1" {
		os.Exit(runFallbackChild())
	}
	os.Exit(m.Run())
}

func runFallbackChild() int {
	var rep fallbackReport
	dsn, err := resolvePostgres()
	if err == nil {
		rep.DSN, rep.Dir = dsn, fallback.Dir()
		err = execOn(context.Background(), dsn, "CREATE TABLE used (id int)")
	}
	if err != nil {
		rep.Error = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// recorder stands in for a test to observe the failures testenv reports.
type recorder struct {
	testing.TB
	failure string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failure = fmt.Sprintf(format, args...) }

func TestPostgresURLFallbackStopsWithProcess(t *testing.T) {
	unreachable := "postgres://postgres@127.0.0.1:" + strconv.Itoa(FreePort(t)) + "/postgres?sslmode=disable&connect_timeout=1"
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fallbackChildEnv+"=1", "TEST_DATABASE_URL="+unreachable)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var rep fallbackReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	if rep.Error != "" {
		t.Fatalf("child could not use the fallback cluster: %s", rep.Error)
	}
	if rep.DSN == unreachable || rep.Dir == "" {
		t.Fatalf("child did not fall back to a throwaway cluster: %+v", rep)
	}
	Eventually(t, 30*time.Second, func() bool {
		_, statErr := os.Stat(rep.Dir)
		return pgcluster.Reachable(context.Background(), rep.DSN) != nil && errors.Is(statErr, os.ErrNotExist)
	}, "throwaway cluster stopped and removed after its process exited")
}

func TestPostgresURLIsReachable(t *testing.T) {
	if err := pgcluster.Reachable(context.Background(), PostgresURL(t)); err != nil {
		t.Fatalf("PostgresURL unreachable: %v", err)
	}
}

func TestNewDatabase(t *testing.T) {
	ctx := context.Background()
	var names []string
	for i := range 2 {
		t.Run("database "+strconv.Itoa(i), func(t *testing.T) {
			dsn := NewDatabase(t)
			if !strings.Contains(dsn, "sslmode=disable") {
				t.Errorf("dsn %s lacks sslmode=disable", pgcluster.Redact(dsn))
			}
			// Left open on purpose: the drop must not wait for it.
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			var name string
			if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(name, "test_") {
				t.Errorf("database %q lacks the test_ prefix", name)
			}
			if _, err := conn.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
				t.Fatalf("database not writable: %v", err)
			}
			names = append(names, name)
		})
	}
	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("databases %v, want two distinct ones", names)
	}
	conn, err := pgx.Connect(ctx, PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var left int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = ANY($1)", names).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d of %v still exist after their tests ended", left, names)
	}
}

func TestNATSRestartKeepsJetStreamState(t *testing.T) {
	n := NATS(t)
	url := n.URL()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	publish := func() {
		t.Helper()
		nc, err := nats.Connect(n.URL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}, Storage: jetstream.FileStorage}); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if _, err := js.Publish(ctx, "keep.one", []byte("x")); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	countMsgs := func() uint64 {
		t.Helper()
		nc, err := nats.Connect(n.URL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		s, err := js.Stream(ctx, "KEEP")
		if err != nil {
			t.Fatalf("stream after restart: %v", err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	publish()
	n.Shutdown()
	if nc, err := nats.Connect(url, nats.Timeout(time.Second)); err == nil {
		nc.Close()
		t.Fatal("connected to a server that was shut down")
	}
	n.Restart()
	if n.URL() != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, n.URL())
	}
	if got := countMsgs(); got != 1 {
		t.Fatalf("messages after restart = %d, want 1", got)
	}
	n.Restart()
	publish()
	if got := countMsgs(); got != 2 {
		t.Fatalf("messages after a restart of a running server = %d, want 2", got)
	}
}

func TestSMTPKeepsMessages(t *testing.T) {
	s := SMTP(t)
	host, _, _ := net.SplitHostPort(s.Addr())
	tests := []struct {
		name string
		auth smtp.Auth
		to   []string
	}{
		{name: "without auth", to: []string{"a@example.com"}},
		{name: "with auth plain", auth: smtp.PlainAuth("", "user", "any", host), to: []string{"b@example.com", "c@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := "Subject: " + tt.name + "\r\n\r\nhello " + tt.name + "\r\n"
			if err := smtp.SendMail(s.Addr(), tt.auth, "sender@example.com", tt.to, []byte(body)); err != nil {
				t.Fatalf("SendMail: %v", err)
			}
			m := s.WaitForMail(t, 5*time.Second, func(m Mail) bool { return strings.Contains(m.Data, "hello "+tt.name) })
			if m.From != "sender@example.com" || strings.Join(m.To, ",") != strings.Join(tt.to, ",") {
				t.Fatalf("mail from %q to %v, want sender@example.com to %v", m.From, m.To, tt.to)
			}
			if !strings.Contains(m.Data, "Subject: "+tt.name) {
				t.Fatalf("headers lost: %q", m.Data)
			}
		})
	}
	if got := len(s.Messages()); got != len(tests) {
		t.Fatalf("Messages() holds %d, want %d", got, len(tests))
	}
}

func TestSMTPWaitForMailFailsWithoutMatch(t *testing.T) {
	s := SMTP(t)
	if err := smtp.SendMail(s.Addr(), nil, "x@example.com", []string{"y@example.com"}, []byte("Subject: other\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	r := &recorder{TB: t}
	s.WaitForMail(r, 200*time.Millisecond, func(m Mail) bool { return strings.Contains(m.Data, "never") })
	if !strings.Contains(r.failure, "no matching mail") {
		t.Fatalf("failure = %q, want a no-matching-mail failure", r.failure)
	}
}

func TestFreePortCanBeBound(t *testing.T) {
	port := FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("listen on free port %d: %v", port, err)
	}
	l.Close()
}

func TestEventually(t *testing.T) {
	tests := []struct {
		name     string
		trueFrom int
		wantFail bool
	}{
		{name: "true at once", trueFrom: 0},
		{name: "true after some polls", trueFrom: 3},
		{name: "never true", trueFrom: 1 << 30, wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{TB: t}
			calls := 0
			Eventually(r, 300*time.Millisecond, func() bool { calls++; return calls > tt.trueFrom }, "cond")
			if failed := r.failure != ""; failed != tt.wantFail {
				t.Fatalf("failed = %v (%q), want %v", failed, r.failure, tt.wantFail)
			}
		})
	}
}
