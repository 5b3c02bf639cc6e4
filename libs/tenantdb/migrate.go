package tenantdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/pgutil"
	"tenantbase/migrations"
)

// MinSchemaVersion is the lowest tenant schema version the code of this
// repository works with: the tenant plane answers 503 tenant_migrating for
// a tenant below it. It is raised only by a contract step, when the code
// stops working with an older schema, never simply because a newer file
// exists: a fleet that is rolling forward, and a tenant parked by a failed
// migration, keep being served (docs/migrations.md).
const MinSchemaVersion = 1

// LastLoginVersion is the schema version that added tenantuser.last_login_at;
// below it logins are not recorded (RecordLogin).
const LastLoginVersion = 2

// VersionTable is golang-migrate's table of the applied version; the
// migrate CLI reads and writes the same one.
const VersionTable = "schema_migrations"

// LockTimeout bounds how long a migration step waits for a lock on a table
// the tenant's requests are using: a step that cannot get it fails (and is
// retried later) instead of queueing every request of the tenant behind it.
const LockTimeout = 5 * time.Second

// Migrations is a set of tenant migration files in golang-migrate's layout
// (<version>_<name>.up.sql and .down.sql), each file one transaction
// (BEGIN; ... COMMIT;). Embedded returns the set this binary carries; tests
// build others with NewMigrations.
type Migrations struct {
	files    fs.FS
	dir      string
	versions []uint
	up, down map[uint]string
}

var embedded = func() Migrations {
	m, err := NewMigrations(migrations.Tenant, "tenant")
	if err != nil {
		panic(err)
	}
	return m
}()

// Embedded is the set of tenant migrations embedded in the binary.
func Embedded() Migrations { return embedded }

// NewMigrations reads the migration files in dir of files. Every version
// needs an up and a down file, and every file must be one transaction.
func NewMigrations(files fs.FS, dir string) (Migrations, error) {
	entries, err := fs.ReadDir(files, dir)
	if err != nil {
		return Migrations{}, fmt.Errorf("tenant migrations: %w", err)
	}
	m := Migrations{files: files, dir: dir, up: map[uint]string{}, down: map[uint]string{}}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		mig, err := source.DefaultParse(e.Name())
		if err != nil {
			return Migrations{}, fmt.Errorf("tenant migrations: %s is not named <version>_<name>.up|down.sql", e.Name())
		}
		if mig.Version == 0 {
			return Migrations{}, fmt.Errorf("tenant migrations: %s: versions start at 1", e.Name())
		}
		byDir := m.up
		if mig.Direction == source.Down {
			byDir = m.down
		}
		if other, ok := byDir[mig.Version]; ok {
			return Migrations{}, fmt.Errorf("tenant migrations: %s and %s have the same version", other, e.Name())
		}
		byDir[mig.Version] = e.Name()
		body, err := fs.ReadFile(files, path.Join(dir, e.Name()))
		if err != nil {
			return Migrations{}, fmt.Errorf("tenant migrations: %w", err)
		}
		if _, err := singleTransaction(string(body)); err != nil {
			return Migrations{}, fmt.Errorf("tenant migrations: %s: %w", e.Name(), err)
		}
	}
	for v, name := range m.up {
		if _, ok := m.down[v]; !ok {
			return Migrations{}, fmt.Errorf("tenant migrations: %s has no down file", name)
		}
		m.versions = append(m.versions, v)
	}
	for v, name := range m.down {
		if _, ok := m.up[v]; !ok {
			return Migrations{}, fmt.Errorf("tenant migrations: %s has no up file", name)
		}
	}
	if len(m.versions) == 0 {
		return Migrations{}, errors.New("tenant migrations: no files")
	}
	slices.Sort(m.versions)
	return m, nil
}

// Latest is the newest version of the set.
func (m Migrations) Latest() uint { return m.versions[len(m.versions)-1] }

// Has reports whether version is one of the set's versions.
func (m Migrations) Has(version uint) bool { return slices.Contains(m.versions, version) }

// File names the file that migrates up to version, or down from it.
func (m Migrations) File(version uint, up bool) string {
	if up {
		return m.up[version]
	}
	return m.down[version]
}

// Migrate applies the embedded tenant migrations to the database at dsn, as
// the role of the DSN (which then owns the tables), and returns the version.
func Migrate(dsn string) (uint, error) {
	res, err := Embedded().MigrateTo(context.Background(), dsn, Embedded().Latest(), MigrateOptions{})
	return res.To, err
}

// LatestVersion is the newest tenant migration this binary carries.
func LatestVersion() uint { return Embedded().Latest() }

// MigrateOptions tune MigrateTo.
type MigrateOptions struct {
	// BeforeCommit, when set, runs inside each step's transaction, after
	// the file and before the commit; an error rolls the step back. It
	// exists for fault injection (a crash in the middle of a step).
	BeforeCommit func(ctx context.Context, version uint) error
}

// Result says where MigrateTo found and left a database.
type Result struct {
	// From is the version before, To the version reached (equal to the
	// target on success, the last version applied on failure).
	From, To uint
	// Known is false when the version could not be read (the database was
	// not reached): From and To say nothing then.
	Known bool
}

// DirtyError is a database whose version golang-migrate marked dirty: a
// migration started outside MigrateTo (the migrate CLI, an older release)
// and did not finish. Whether its file took effect is unknown, so nothing
// is run and the version is never forced; a person has to look.
type DirtyError struct {
	Version uint
	File    string
}

func (e *DirtyError) Error() string {
	name := e.File
	if name == "" {
		name = "a file this binary does not carry"
	}
	return fmt.Sprintf("the tenant database is dirty at version %d (%s): a migration started outside this control plane did not finish; "+
		"nothing was run. Repair the schema by hand, then `migrate force` the version it matches", e.Version, name)
}

// StepError is a migration file that failed; its transaction was rolled
// back, so the database stays at the version before it.
type StepError struct {
	File string
	Err  error
}

func (e *StepError) Error() string { return e.File + ": " + Describe(e.Err) }

func (e *StepError) Unwrap() error { return e.Err }

// MigrateTo moves the database at dsn to target, as the DSN's role: up
// files when target is above the current version, down files (newest
// first) when below. It holds golang-migrate's advisory lock on the
// database meanwhile, so it never overlaps with another MigrateTo, Migrate
// or the migrate CLI on the same database.
//
// Each step runs its file and records its version in one transaction, so
// a crash or a failing file leaves the database clean at the version of
// the last finished step: no step can leave it dirty. A database found
// dirty (see DirtyError) is reported and left alone.
func (m Migrations) MigrateTo(ctx context.Context, dsn string, target uint, o MigrateOptions) (Result, error) {
	if target != 0 && !m.Has(target) {
		return Result{}, fmt.Errorf("tenant migrations: no version %d (the newest is %d)", target, m.Latest())
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Result{}, fmt.Errorf("connect to the tenant database: %s", Describe(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))

	unlock, err := lockVersion(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	current, dirty, err := version(ctx, conn)
	if err != nil {
		return Result{}, err
	}
	res := Result{From: current, To: current, Known: true}
	if dirty {
		return res, &DirtyError{Version: current, File: m.File(current, true)}
	}
	if current != 0 && !m.Has(current) {
		return res, fmt.Errorf("the tenant database is at version %d, which this binary does not carry (the newest it has is %d)",
			current, m.Latest())
	}
	for res.To != target {
		up := res.To < target
		step, next := res.To, m.previous(res.To)
		if up {
			step = m.next(res.To)
			next = step
		}
		if err := m.step(ctx, conn, step, next, up, o); err != nil {
			return res, err
		}
		res.To = next
	}
	return res, nil
}

// Version reads the version of the database at dsn and whether it is dirty.
func Version(ctx context.Context, dsn string) (version uint, dirty bool, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, false, fmt.Errorf("connect to the tenant database: %s", Describe(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return versionOf(ctx, conn)
}

func (m Migrations) next(v uint) uint {
	for _, x := range m.versions {
		if x > v {
			return x
		}
	}
	return v
}

func (m Migrations) previous(v uint) uint {
	prev := uint(0)
	for _, x := range m.versions {
		if x >= v {
			break
		}
		prev = x
	}
	return prev
}

// step runs the up file of version (or its down file) and records next as
// the version, in one transaction.
func (m Migrations) step(ctx context.Context, conn *pgx.Conn, version, next uint, up bool, o MigrateOptions) error {
	name := m.File(version, up)
	body, err := fs.ReadFile(m.files, path.Join(m.dir, name))
	if err != nil {
		return &StepError{File: name, Err: err}
	}
	inner, err := singleTransaction(string(body))
	if err != nil {
		return &StepError{File: name, Err: err}
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = "+strconv.FormatInt(LockTimeout.Milliseconds(), 10)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, inner); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "TRUNCATE "+VersionTable); err != nil {
			return err
		}
		if next > 0 {
			if _, err := tx.Exec(ctx, "INSERT INTO "+VersionTable+" (version, dirty) VALUES ($1, FALSE)", int64(next)); err != nil {
				return err
			}
		}
		if o.BeforeCommit != nil {
			return o.BeforeCommit(ctx, version)
		}
		return nil
	})
	if err != nil {
		return &StepError{File: name, Err: err}
	}
	return nil
}

// lockVersion takes golang-migrate's advisory lock of the database (the
// key it derives from the database, schema and version table names) and
// creates the version table when missing, as golang-migrate does.
func lockVersion(ctx context.Context, conn *pgx.Conn) (unlock func(), err error) {
	var db, schema string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_schema()`).Scan(&db, &schema); err != nil {
		return nil, fmt.Errorf("tenant migrations: %s", Describe(err))
	}
	id, err := database.GenerateAdvisoryLockId(db, schema, VersionTable)
	if err != nil {
		return nil, err
	}
	key, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("tenant migrations: lock key %q: %w", id, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return nil, fmt.Errorf("tenant migrations: lock: %s", Describe(err))
	}
	unlock = func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// Closing the connection releases the lock too.
		_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key)
	}
	var exists bool
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2)`,
		schema, VersionTable).Scan(&exists)
	if err == nil && !exists {
		_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+VersionTable+` (version bigint not null primary key, dirty boolean not null)`)
	}
	if err != nil {
		unlock()
		return nil, fmt.Errorf("tenant migrations: version table: %s", Describe(err))
	}
	return unlock, nil
}

func version(ctx context.Context, conn *pgx.Conn) (uint, bool, error) {
	v, dirty, err := versionOf(ctx, conn)
	if err != nil {
		return 0, false, fmt.Errorf("tenant migrations: read the version: %s", Describe(err))
	}
	return v, dirty, nil
}

// versionOf is 0 for a database that was never migrated.
func versionOf(ctx context.Context, conn *pgx.Conn) (uint, bool, error) {
	var v int64
	var dirty bool
	err := conn.QueryRow(ctx, `SELECT version, dirty FROM `+VersionTable+` LIMIT 1`).Scan(&v, &dirty)
	switch {
	case errors.Is(err, pgx.ErrNoRows), pgutil.Code(err) == pgerrcode.UndefinedTable:
		return 0, false, nil
	case err != nil:
		return 0, false, err
	case v < 0:
		return 0, dirty, nil
	}
	return uint(v), dirty, nil
}

var (
	leadingComments = regexp.MustCompile(`^(\s*--[^\n]*\n)*\s*`)
	// txControl finds a statement that would end or start a transaction
	// inside a file's own: BEGIN;, COMMIT;, ROLLBACK; or START TRANSACTION
	// at the start of a line (a PL/pgSQL block's BEGIN takes no semicolon).
	txControl = regexp.MustCompile(`(?im)^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION)\s*;`)
)

// singleTransaction returns the statements between a file's BEGIN; and its
// final COMMIT;, refusing a file that is not exactly one transaction: the
// step's own transaction runs them together with the version.
func singleTransaction(body string) (string, error) {
	s := strings.TrimSpace(leadingComments.ReplaceAllString(body, ""))
	const begin, commit = "BEGIN;", "COMMIT;"
	if len(s) < len(begin)+len(commit) || !strings.EqualFold(s[:len(begin)], begin) || !strings.EqualFold(s[len(s)-len(commit):], commit) {
		return "", errors.New("a tenant migration must be one transaction: BEGIN; first, COMMIT; last, nothing after it")
	}
	inner := s[len(begin) : len(s)-len(commit)]
	if txControl.MatchString(inner) {
		return "", errors.New("a tenant migration must be one transaction: it may not begin, commit or roll back another")
	}
	return inner, nil
}

// Describe is a one-line reason for a database error that names no
// credentials: the server's message and SQLSTATE (not its detail, which can
// quote row values), or the cause of a failed connection without the
// connection string.
func Describe(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Sprintf("%s: %s (SQLSTATE %s)", pgErr.Severity, pgErr.Message, pgErr.Code)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		if inner := connErr.Unwrap(); inner != nil {
			return Describe(inner)
		}
		return "cannot connect to the tenant database"
	}
	return err.Error()
}
