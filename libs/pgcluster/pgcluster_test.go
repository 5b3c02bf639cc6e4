package pgcluster_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/pgcluster"
	"tenantbase/libs/testenv"
)

func stopOnCleanup(t *testing.T, c *pgcluster.Cluster) {
	t.Helper()
	t.Cleanup(func() {
		// Tests stop the cluster themselves; this only catches failures half-way.
		if pgcluster.Reachable(context.Background(), c.DSN("postgres")) == nil {
			c.Stop()
		}
	})
}

func TestStartServesUntilStop(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	c, err := pgcluster.Start(ctx, dir, testenv.FreePort(t))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopOnCleanup(t, c)

	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		t.Fatalf("no cluster initialised in %s: %v", dir, err)
	}
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY, body text)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO notes VALUES (1, 'kept')"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	conn.Close(ctx)

	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := pgcluster.Reachable(ctx, c.DSN("postgres")); err == nil {
		t.Fatal("cluster still accepts connections after Stop")
	}

	// A second Start on the same directory reuses the data instead of running initdb.
	c2, err := pgcluster.Start(ctx, dir, c.Port())
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	stopOnCleanup(t, c2)
	conn, err = pgx.Connect(ctx, c2.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	var body string
	if err := conn.QueryRow(ctx, "SELECT body FROM notes WHERE id = 1").Scan(&body); err != nil || body != "kept" {
		t.Fatalf("row after restart = %q, %v; want kept", body, err)
	}
	conn.Close(ctx)
	if err := c2.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// TestStartWithSettings also checks Roomy on the small server it starts.
func TestStartWithSettings(t *testing.T) {
	ctx := context.Background()
	c, err := pgcluster.StartWith(ctx, filepath.Join(t.TempDir(), "data"), testenv.FreePort(t),
		map[string]string{"max_connections": "7", "max_wal_senders": "0"})
	if err != nil {
		t.Fatalf("StartWith: %v", err)
	}
	stopOnCleanup(t, c)
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	for name, want := range map[string]string{"max_connections": "7", "max_wal_senders": "0", "fsync": "off"} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}

	// 7 connections, 3 of them kept for superusers: 4 for everyone else,
	// and this test holds one.
	err = pgcluster.Roomy(ctx, c.DSN("postgres"), 4)
	if err == nil || !strings.Contains(err.Error(), "3 connections free (max_connections 7), the tests need 4") {
		t.Fatalf("Roomy(4) with one session open = %v; want 3 free of 7 named", err)
	}
	if err := pgcluster.Roomy(ctx, c.DSN("postgres"), 3); err != nil {
		t.Fatalf("Roomy(3) with one session open: %v", err)
	}
	conn.Close(ctx)
	if err := pgcluster.Roomy(ctx, c.DSN("postgres"), 4); err != nil {
		t.Fatalf("Roomy(4) on an idle server: %v", err)
	}
	unreachable := "postgres://postgres@127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) + "/postgres?sslmode=disable&connect_timeout=1"
	if err := pgcluster.Roomy(ctx, unreachable, 1); err == nil {
		t.Fatal("Roomy on an unreachable server succeeded")
	}
}

func TestEnsure(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	port := testenv.FreePort(t)
	unreachable := "postgres://postgres@127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) + "/postgres?sslmode=disable&connect_timeout=1"

	dsn, started, err := pgcluster.Ensure(ctx, unreachable, dir, port)
	if err != nil {
		t.Fatalf("Ensure with an unreachable server: %v", err)
	}
	if started == nil {
		t.Fatal("Ensure with an unreachable server started no cluster")
	}
	stopOnCleanup(t, started)
	if want := started.DSN("postgres"); dsn != want {
		t.Fatalf("dsn = %q, want the started cluster's %q", dsn, want)
	}
	if err := pgcluster.Reachable(ctx, dsn); err != nil {
		t.Fatalf("started cluster unreachable: %v", err)
	}

	tests := []struct {
		name        string
		dsn         string
		port        int
		wantDSN     string
		wantStarted bool
	}{
		{name: "reachable dsn is used as is", dsn: dsn + "&application_name=x", wantDSN: dsn + "&application_name=x"},
		{name: "running cluster in dir is reused", dsn: unreachable, wantDSN: dsn},
		{name: "no dsn reuses the running cluster", dsn: "", wantDSN: dsn},
		{name: "the running cluster is found on the port it records", dsn: "", port: testenv.FreePort(t), wantDSN: dsn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			asked := port
			if tt.port != 0 {
				asked = tt.port
			}
			got, c, err := pgcluster.Ensure(ctx, tt.dsn, dir, asked)
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if got != tt.wantDSN {
				t.Errorf("dsn = %q, want %q", got, tt.wantDSN)
			}
			if (c != nil) != tt.wantStarted {
				t.Errorf("started a cluster = %v, want %v", c != nil, tt.wantStarted)
			}
		})
	}

	if err := started.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

func TestEnsureStartsOnAnotherPortWhenItsOwnIsTaken(t *testing.T) {
	ctx := context.Background()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.Addr().(*net.TCPAddr).Port

	dsn, started, err := pgcluster.Ensure(ctx, "", filepath.Join(t.TempDir(), "data"), taken)
	if err != nil {
		t.Fatalf("Ensure with its port taken: %v", err)
	}
	if started == nil {
		t.Fatal("Ensure started no cluster")
	}
	stopOnCleanup(t, started)
	if started.Port() == taken || !strings.Contains(dsn, ":"+strconv.Itoa(started.Port())+"/") {
		t.Fatalf("cluster on port %d (dsn %s); want a free port other than the taken %d", started.Port(), dsn, taken)
	}
	if err := pgcluster.Reachable(ctx, dsn); err != nil {
		t.Fatalf("started cluster unreachable: %v", err)
	}
	if err := started.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

func TestEnsureDatabase(t *testing.T) {
	ctx := context.Background()
	server := testenv.PostgresURL(t)
	name := "test_ensuredb_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("connect %s: %v", pgcluster.Redact(server), err)
	}
	defer conn.Close(ctx)
	t.Cleanup(func() {
		// conn is closed by now: the drop needs its own connection.
		c, err := pgx.Connect(context.Background(), server)
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})

	for _, round := range []string{"creates a missing database", "accepts an existing database"} {
		t.Run(round, func(t *testing.T) {
			if err := pgcluster.EnsureDatabase(ctx, server, name); err != nil {
				t.Fatalf("EnsureDatabase: %v", err)
			}
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil || n != 1 {
				t.Fatalf("databases named %s: %d, %v; want 1", name, n, err)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct {
		name, dsn, db, want string
	}{
		{"url keeps query", "postgres://u:p@h:5432/postgres?sslmode=disable", "tenantbase", "postgres://u:p@h:5432/tenantbase?sslmode=disable"},
		{"url without path", "postgresql://h", "x", "postgresql://h/x"},
		{"keyword form", "host=h user=u", "o'k", `host=h user=u dbname='o\'k'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pgcluster.WithDatabase(tt.dsn, tt.db)
			if err != nil || got != tt.want {
				t.Fatalf("WithDatabase = %q, %v; want %q", got, err, tt.want)
			}
			if name, err := pgcluster.DatabaseName(got); err != nil || name != tt.db {
				t.Fatalf("DatabaseName(%q) = %q, %v; want %q", got, name, err, tt.db)
			}
		})
	}
}

func TestRedactHidesPassword(t *testing.T) {
	got := pgcluster.Redact("postgres://app:s3cret@db:5432/core")
	if strings.Contains(got, "s3cret") {
		t.Fatalf("Redact leaked the password: %s", got)
	}
}

func TestStartReportsServerFailureInOneLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port

	_, err = pgcluster.Start(context.Background(), filepath.Join(t.TempDir(), "data"), port)
	if err == nil {
		t.Fatal("Start on a port in use succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "server.log") || !strings.Contains(msg, "could not") {
		t.Fatalf("error is not one line naming the server's reason and log: %q", msg)
	}
}

func TestLocalDir(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "services", "x")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	bare := t.TempDir()
	cases := []struct {
		name, wd, want string
		fails          bool
	}{
		{name: "at the root", wd: root, want: filepath.Join(root, ".local")},
		{name: "below the root", wd: sub, want: filepath.Join(root, ".local")},
		{name: "outside any repository", wd: bare, fails: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(tc.wd)
			got, err := pgcluster.LocalDir()
			if (err != nil) != tc.fails || got != tc.want {
				t.Fatalf("LocalDir() = %q, %v; want %q (fails %v)", got, err, tc.want, tc.fails)
			}
		})
	}
}
