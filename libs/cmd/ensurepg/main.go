// Command ensurepg prints the DSN of a PostgreSQL server for the tests:
// DATABASE_URL when it is reachable with pgcluster.TestConnections
// connections free, else the server on 127.0.0.1:5432 on the same terms,
// else a throwaway cluster in <repo>/.local/pg-test (port 55432, or a free
// one when that is taken), started from the local binaries and left running
// for later runs. A server passed over is named on standard error with the
// reason.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tenantbase/libs/pgcluster"
)

const (
	defaultServer = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	clusterPort   = 55432
)

func main() {
	dsn, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ensurepg: "+strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
	fmt.Println(dsn)
}

func run() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var tried []string
	for _, dsn := range []string{os.Getenv("DATABASE_URL"), defaultServer} {
		if dsn == "" {
			continue
		}
		err := pgcluster.Roomy(ctx, dsn, pgcluster.TestConnections)
		if err == nil {
			return dsn, nil
		}
		tried = append(tried, pgcluster.Redact(dsn))
		fmt.Fprintf(os.Stderr, "ensurepg: not using %s: %s\n", pgcluster.Redact(dsn), strings.Join(strings.Fields(err.Error()), " "))
	}

	local, err := pgcluster.LocalDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(local, "pg-test")
	dsn, _, err := pgcluster.Ensure(ctx, "", dir, clusterPort)
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL with room for the tests (tried %s) and none could be started in %s: %w",
			strings.Join(tried, ", "), dir, err)
	}
	fmt.Fprintf(os.Stderr, "ensurepg: using the throwaway cluster in %s (%s)\n", dir, pgcluster.Redact(dsn))
	return dsn, nil
}
