// Package pgutil holds the Postgres helpers both services share: migrations
// from embedded files and translation of driver errors.
package pgutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// Code returns the SQLSTATE of err, or "" (compare it with the names of
// github.com/jackc/pgerrcode).
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// IsUnavailable reports whether err means the database could not be reached
// or dropped the connection: an outage to report as 503, not a bug.
func IsUnavailable(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	// Class 08 is connection exceptions; then shutdowns and a server that
	// is starting up.
	switch code := Code(err); {
	case pgerrcode.IsConnectionException(code), code == pgerrcode.AdminShutdown, code == pgerrcode.CrashShutdown,
		code == pgerrcode.CannotConnectNow:
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Migrate applies every up migration in dir of files to the database at dsn
// and returns the resulting version. golang-migrate holds a Postgres
// advisory lock meanwhile, so instances starting together apply them once.
func Migrate(dsn string, files fs.FS, dir string) (uint, error) {
	m, err := newMigrate(dsn, files, dir)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return 0, fmt.Errorf("migrate %s: %w", dir, err)
	}
	v, dirty, err := m.Version()
	if err != nil {
		return 0, fmt.Errorf("migrate %s: version: %w", dir, err)
	}
	if dirty {
		return 0, fmt.Errorf("migrate %s: database is dirty at version %d", dir, v)
	}
	return v, nil
}

// MigrateDown reverts every migration in dir; tests use it to prove the down files work.
func MigrateDown(dsn string, files fs.FS, dir string) error {
	m, err := newMigrate(dsn, files, dir)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Down(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate down %s: %w", dir, err)
	}
	return nil
}

// LatestVersion is the highest migration version in dir.
func LatestVersion(files fs.FS, dir string) (uint, error) {
	src, err := iofs.New(files, dir)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	v, err := src.First()
	if err != nil {
		return 0, err
	}
	for {
		next, err := src.Next(v)
		if err != nil {
			return v, nil
		}
		v = next
	}
}

func newMigrate(dsn string, files fs.FS, dir string) (*migrate.Migrate, error) {
	src, err := iofs.New(files, dir)
	if err != nil {
		return nil, fmt.Errorf("migrate %s: source: %w", dir, err)
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, migrateURL(dsn))
	if err != nil {
		return nil, fmt.Errorf("migrate %s: connect: %w", dir, err)
	}
	return m, nil
}

// migrateURL turns a postgres:// DSN into golang-migrate's pgx5:// form.
func migrateURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return strings.Replace(dsn, "postgres://", "pgx5://", 1)
	}
	u.Scheme = "pgx5"
	return u.String()
}
