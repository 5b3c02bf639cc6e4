package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Reachable connects to dsn and pings it, giving up after a few seconds.
func Reachable(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

func waitReachable(ctx context.Context, dsn string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := Reachable(ctx, dsn)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ensure finds a server to use: dsn when it is reachable, else the cluster
// already running in dir on port, else a cluster started there now. started
// is the cluster this call started (nil otherwise): the caller stops it.
func Ensure(ctx context.Context, dsn, dir string, port int) (dsnToUse string, started *Cluster, err error) {
	var reachErr error
	if dsn != "" {
		if reachErr = Reachable(ctx, dsn); reachErr == nil {
			return dsn, nil, nil
		}
	}
	local := (&Cluster{port: port}).DSN("postgres")
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err == nil {
		if Reachable(ctx, local) == nil {
			return local, nil, nil
		}
	}
	c, err := Start(ctx, dir, port)
	if err != nil {
		if dsn != "" {
			return "", nil, fmt.Errorf("%s is unreachable (%v), and no local cluster could be started: %w", Redact(dsn), oneLine(reachErr), err)
		}
		return "", nil, err
	}
	return c.DSN("postgres"), c, nil
}

// LocalDir is the project-local folder for throwaway clusters and other
// run data: .local in the nearest directory above the working directory
// that holds go.work, so it is the same from any subdirectory.
func LocalDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, ".local"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory: run from the repository")
		}
		dir = parent
	}
}

// EnsureDatabase creates database name on the server at serverDSN unless it
// exists already.
func EnsureDatabase(ctx context.Context, serverDSN, name string) error {
	conn, err := pgx.Connect(ctx, serverDSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("looking up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" {
		// Someone else created it between the lookup and now.
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

// WithDatabase returns dsn pointed at database db. It accepts URLs
// (postgres://...) and keyword/value strings.
func WithDatabase(dsn, db string) (string, error) {
	if !isURL(dsn) {
		return dsn + " dbname=" + quoteKeyword(db), nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("parsing database URL: %w", err)
	}
	u.Path = "/" + db
	u.RawPath = ""
	return u.String(), nil
}

// DatabaseName is the database a URL dsn names ("" when it names none).
func DatabaseName(dsn string) (string, error) {
	if !isURL(dsn) {
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return "", err
		}
		return cfg.Database, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("parsing database URL: %w", err)
	}
	return strings.TrimPrefix(u.Path, "/"), nil
}

// Redact hides the password of a URL dsn for messages and logs.
func Redact(dsn string) string {
	if !isURL(dsn) {
		return "(connection string)"
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable database URL)"
	}
	return u.Redacted()
}

func isURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

func quoteKeyword(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}
