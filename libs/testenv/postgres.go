// Package testenv gives tests real servers: a fresh Postgres database, an
// embedded NATS server with JetStream, and an SMTP server that keeps mail.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/pgcluster"
)

const defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	postgresOnce sync.Once
	postgresDSN  string
	postgresErr  error
	// fallback is the cluster this process started; kept here so that the
	// exit guard it holds lives as long as the process.
	fallback *pgcluster.Cluster
)

// PostgresURL returns a server DSN for tests: TEST_DATABASE_URL, else
// DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres when it
// has pgcluster.TestConnections connections free (a variable set is
// trusted: `make test` sets it while its other packages hold connections).
//
// When that server is unreachable or short of connections, the first call starts one throwaway
// cluster for the whole test process from the local PostgreSQL binaries, in
// a temporary directory on a free port. No test owns it, so it is not
// stopped by a test cleanup: a watcher process stops it and removes its
// directory when the test process exits. `make test` exports DATABASE_URL
// (see libs/cmd/ensurepg), so packages do not each pay for an initdb.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	postgresOnce.Do(func() { postgresDSN, postgresErr = resolvePostgres() })
	if postgresErr != nil {
		tb.Fatalf("testenv: no PostgreSQL for tests: %v", postgresErr)
	}
	return postgresDSN
}

func resolvePostgres() (string, error) {
	dsn := os.Getenv("TEST_DATABASE_URL")
	if dsn == "" {
		dsn = os.Getenv("DATABASE_URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var reachErr error
	if dsn == "" {
		dsn = defaultPostgresURL
		reachErr = pgcluster.Roomy(ctx, dsn, pgcluster.TestConnections)
	} else {
		reachErr = pgcluster.Reachable(ctx, dsn)
	}
	if reachErr == nil {
		return dsn, nil
	}
	dir, err := os.MkdirTemp("", "tenantbase-test-pg-")
	if err != nil {
		return "", err
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return "", err
	}
	c, err := pgcluster.Start(ctx, dir, port)
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%s is not usable (%s) and no throwaway cluster could be started: %w",
			pgcluster.Redact(dsn), strings.Join(strings.Fields(reachErr.Error()), " "), err)
	}
	if err := c.StopOnExit(true); err != nil {
		c.Stop()
		os.RemoveAll(dir)
		return "", err
	}
	fallback = c
	return c.DSN("postgres"), nil
}

// NewDatabase creates an empty database with a random name starting with
// "test_" and returns its DSN. The database is dropped when the test ends,
// even if connections to it are still open.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	server := PostgresURL(tb)
	name := "test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := execOn(ctx, server, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("testenv: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := execOn(ctx, server, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	dsn, err := pgcluster.WithDatabase(server, name)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return withSSLDisabled(dsn)
}

// Exec runs sql on dsn over a connection of its own, failing the test on
// an error.
func Exec(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	withConn(tb, dsn, sql, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	})
}

// QueryRow runs sql on dsn over a connection of its own and scans its one
// row into dest, failing the test on an error.
func QueryRow(tb testing.TB, dsn, sql string, args []any, dest ...any) {
	tb.Helper()
	withConn(tb, dsn, sql, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, sql, args...).Scan(dest...)
	})
}

// withConn runs fn, which runs sql, over a connection of its own.
func withConn(tb testing.TB, dsn, sql string, fn func(context.Context, *pgx.Conn) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("testenv: connect: %v", err)
	}
	defer conn.Close(context.Background())
	if err := fn(ctx, conn); err != nil {
		tb.Fatalf("testenv: %s: %v", sql, err)
	}
}

// OnDatabase is dsn naming database name instead, on the same server.
func OnDatabase(tb testing.TB, dsn, name string) string {
	tb.Helper()
	out, err := pgcluster.WithDatabase(dsn, name)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return out
}

// OnDatabaseDSN is OnDatabase for a DSN known to be well-formed (one
// PostgresURL returned), with SSL off unless the DSN says otherwise.
func OnDatabaseDSN(dsn, name string) string {
	out, err := pgcluster.WithDatabase(dsn, name)
	if err != nil {
		panic("testenv: " + err.Error())
	}
	return withSSLDisabled(out)
}

// PostgresPort is the TCP port of PostgresURL's server: 5432 for the
// machine's server, another for a throwaway cluster.
func PostgresPort(tb testing.TB) int {
	tb.Helper()
	cfg, err := pgconn.ParseConfig(PostgresURL(tb))
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return int(cfg.Port)
}

// WithPassword is the URL dsn with password for its user (the throwaway
// clusters trust local logins, so any password works, and tests can look
// for it in what must never show it).
func WithPassword(tb testing.TB, dsn, password string) string {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

func execOn(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withSSLDisabled adds sslmode=disable unless the DSN chooses a mode itself.
func withSSLDisabled(dsn string) string {
	if strings.Contains(dsn, "sslmode=") {
		return dsn
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " sslmode=disable"
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := pgcluster.FreePort()
	if err != nil {
		tb.Fatalf("testenv: free port: %v", err)
	}
	return port
}

// Eventually polls cond until it holds, failing the test with msg when it
// still does not after timeout.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, msg string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not true within %s", msg, timeout)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
