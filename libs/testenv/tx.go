package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/pgcluster"
)

var shared sync.Map // key -> *sharedDB

type sharedDB struct {
	once sync.Once
	dsn  string
	err  error
}

// SharedDatabase returns the DSN of a database on the test server migrated
// by migrate, shared by every test of the process that asks for key and
// kept between runs: it is named after key and a digest of the migration
// files, so a change of the files makes a new one (older ones of key are
// dropped then). Tests must leave it as they found it: use it through
// TestTx, or as the template of MigratedDatabase. Creating and migrating a
// database per test costs far more.
func SharedDatabase(tb testing.TB, key string, files fs.FS, migrate func(dsn string) error) string {
	tb.Helper()
	v, _ := shared.LoadOrStore(key, &sharedDB{})
	s := v.(*sharedDB)
	s.once.Do(func() { s.dsn, s.err = openShared(PostgresURL(tb), key, files, migrate) })
	if s.err != nil {
		tb.Fatalf("testenv: shared database %s: %v", key, s.err)
	}
	return s.dsn
}

func openShared(server, key string, files fs.FS, migrate func(string) error) (string, error) {
	digest, err := digestFiles(files)
	if err != nil {
		return "", err
	}
	name := "test_shared_" + key + "_" + digest
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	// Test processes of several packages may start at once.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext('tenantbase.testenv.shared'))`); err != nil {
		return "", err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND datname <> $2`,
		"test_shared_"+key+"_", name)
	if err != nil {
		return "", err
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	for _, old := range stale {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{old}.Sanitize()+" WITH (FORCE)"); err != nil {
			return "", err
		}
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return "", err
		}
	}
	dsn := OnDatabaseDSN(server, name)
	// Migrations are idempotent: a database left half-done by a killed run is finished.
	if err := migrate(dsn); err != nil {
		return "", fmt.Errorf("migrate: %w", err)
	}
	return dsn, nil
}

// digestFiles is a short digest of every file in files.
func digestFiles(files fs.FS) (string, error) {
	var names []string
	err := fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, path)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := fs.ReadFile(files, n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// MigratedDatabase is a fresh database cloned from the SharedDatabase of
// key, dropped when the test ends: a test that needs real connections
// (concurrency, statements that fail and abort a transaction) gets the
// schema for the price of a file copy.
func MigratedDatabase(tb testing.TB, key string, files fs.FS, migrate func(dsn string) error) string {
	tb.Helper()
	// A template must have no connections: TestTx users of key use another.
	template := SharedDatabase(tb, key+"_template", files, migrate)
	templateName, err := pgcluster.DatabaseName(template)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	server := PostgresURL(tb)
	name := "test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := execOn(ctx, server, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{templateName}.Sanitize()); err != nil {
		tb.Fatalf("testenv: create database %s from %s: %v", name, templateName, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := execOn(ctx, server, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	return OnDatabaseDSN(server, name)
}

// TestTx returns a transaction on dsn that is rolled back when the test
// ends, so whatever the test wrote disappears. Code under test that begins
// a transaction of its own on it gets a savepoint. One transaction is one
// connection: not for concurrent use.
func TestTx(tb testing.TB, dsn string) pgx.Tx {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("testenv: connect: %v", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Close(ctx)
		tb.Fatalf("testenv: begin: %v", err)
	}
	tb.Cleanup(func() {
		_ = tx.Rollback(ctx)
		conn.Close(ctx)
	})
	return tx
}
