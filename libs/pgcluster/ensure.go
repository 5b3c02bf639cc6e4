package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Reachable connects to dsn and pings it, giving up after a few seconds.
func Reachable(ctx context.Context, dsn string) error {
	return withConn(ctx, dsn, func(ctx context.Context, conn *pgx.Conn) error { return conn.Ping(ctx) })
}

// withConn runs f on a connection to dsn, all within a few seconds.
func withConn(ctx context.Context, dsn string, f func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return f(ctx, conn)
}

// TestConnections is how many connections a server must have free for the
// project's tests: `make test` held up to 75 at once on one server (control
// plane packages side by side), and a server that runs out fails whichever
// test asks next ("remaining connection slots are reserved").
const TestConnections = 150

// Roomy is Reachable, and then checks that a role other than a superuser
// can open need more connections on the server: max_connections less the
// superuser reserve and the sessions open now besides its own.
func Roomy(ctx context.Context, dsn string, need int) error {
	var limit, free int
	err := withConn(ctx, dsn, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT current_setting('max_connections')::int,
		current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
		  - (SELECT count(*) FROM pg_stat_activity
		     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::int`).Scan(&limit, &free)
	})
	if err != nil {
		return err
	}
	if free < need {
		return fmt.Errorf("%d connections free (max_connections %d), the tests need %d", free, limit, need)
	}
	return nil
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
// already running in dir (on the port its postmaster.pid records), else a
// cluster started there now, on port or, when something else holds port, on
// a free one. started is the cluster this call started (nil otherwise): the
// caller stops it.
func Ensure(ctx context.Context, dsn, dir string, port int) (dsnToUse string, started *Cluster, err error) {
	var reachErr error
	if dsn != "" {
		if reachErr = Reachable(ctx, dsn); reachErr == nil {
			return dsn, nil, nil
		}
	}
	if running, ok := runningPort(dir); ok {
		local := (&Cluster{port: running}).DSN("postgres")
		if Reachable(ctx, local) == nil {
			return local, nil, nil
		}
	}
	if !portFree(port) {
		if port, err = FreePort(); err != nil {
			return "", nil, err
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

// runningPort is the port of the server whose postmaster.pid is in dir: its
// fourth line.
func runningPort(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	return port, err == nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// FreePort is a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
