package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tenantbase/libs/pgcluster"
)

// Cluster starts a throwaway PostgreSQL cluster of the test's own, from
// the local server binaries, in a temporary directory on a free port: a
// second database server next to PostgresURL's. It is stopped and removed
// when the test ends, and by a watcher if the test process dies first.
// Like PostgresURL's, it trusts every local login.
func Cluster(tb testing.TB) *pgcluster.Cluster {
	tb.Helper()
	dir, err := os.MkdirTemp("", "tenantbase-test-cluster-")
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, dir, FreePort(tb))
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("testenv: start a PostgreSQL cluster: %v", err)
	}
	if err := c.StopOnExit(true); err != nil {
		c.Stop()
		os.RemoveAll(dir)
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("testenv: %v", err)
		}
		os.RemoveAll(dir)
	})
	return c
}

// PasswordCluster is Cluster checking passwords (SCRAM) of every role but
// the superuser postgres, which is still trusted: a server on which a
// wrong or outdated password is refused.
func PasswordCluster(tb testing.TB) *pgcluster.Cluster {
	tb.Helper()
	c := Cluster(tb)
	hba := "local all postgres trust\n" +
		"host all postgres 127.0.0.1/32 trust\n" +
		"host all all 127.0.0.1/32 scram-sha-256\n" +
		"host all all ::1/128 scram-sha-256\n"
	path := filepath.Join(c.Dir(), "pg_hba.conf")
	if err := os.WriteFile(path, []byte(hba), 0o600); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	Exec(tb, c.DSN("postgres"), `SELECT pg_reload_conf()`)
	// The server rereads the file a moment later: until then an unknown
	// role is told it does not exist rather than refused its password.
	probe := strings.Replace(c.DSN("postgres"), "postgres@", "testenv_nobody:wrong@", 1)
	Eventually(tb, 30*time.Second, func() bool {
		err := pgcluster.Reachable(context.Background(), probe)
		return err != nil && strings.Contains(err.Error(), "password authentication failed")
	}, "the cluster checks passwords")
	return c
}
