// Command ensurepg prints the DSN of a PostgreSQL server for the tests:
// DATABASE_URL when it is reachable, else the server on 127.0.0.1:5432, else
// a throwaway cluster in <repo>/.local/pg-test on port 55432, started from
// the local binaries and left running for later runs.
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
		if err := pgcluster.Reachable(ctx, dsn); err == nil {
			return dsn, nil
		}
		tried = append(tried, pgcluster.Redact(dsn))
	}

	local, err := pgcluster.LocalDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(local, "pg-test")
	dsn, _, err := pgcluster.Ensure(ctx, "", dir, clusterPort)
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL reachable (tried %s) and none could be started in %s: %w",
			strings.Join(tried, ", "), dir, err)
	}
	return dsn, nil
}
