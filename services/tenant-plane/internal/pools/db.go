package pools

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB runs each statement, or each transaction, on a connection leased for
// just that long, as *pgxpool.Pool does. A request therefore holds at most
// one tenant connection at a time and none while it hashes a password, so
// requests cannot deadlock on the budget by waiting for a second
// connection while holding a first.
type DB struct {
	m      *Manager
	target Target
}

// DB returns the handle for t's database.
func (m *Manager) DB(t Target) DB { return DB{m: m, target: t} }

// Exec runs sql on a leased connection.
func (d DB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	l, err := d.m.Acquire(ctx, d.target)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer l.Release()
	return l.Conn().Exec(ctx, sql, args...)
}

// QueryRow runs sql on a connection leased until the row is scanned.
func (d DB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	l, err := d.m.Acquire(ctx, d.target)
	if err != nil {
		return errRow{err}
	}
	return &leasedRow{row: l.Conn().QueryRow(ctx, sql, args...), lease: l}
}

// Query runs sql on a connection leased until the rows are read or closed.
func (d DB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	l, err := d.m.Acquire(ctx, d.target)
	if err != nil {
		return nil, err
	}
	rows, err := l.Conn().Query(ctx, sql, args...)
	if err != nil {
		l.Release()
		return nil, err
	}
	return &leasedRows{Rows: rows, lease: l}, nil
}

// Begin starts a transaction on a connection leased until it ends.
func (d DB) Begin(ctx context.Context) (pgx.Tx, error) {
	l, err := d.m.Acquire(ctx, d.target)
	if err != nil {
		return nil, err
	}
	tx, err := l.Conn().Begin(ctx)
	if err != nil {
		l.Release()
		return nil, err
	}
	return &leasedTx{Tx: tx, lease: l}, nil
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type leasedRow struct {
	row   pgx.Row
	lease *Lease
}

func (r *leasedRow) Scan(dest ...any) error {
	defer r.lease.Release()
	return r.row.Scan(dest...)
}

type leasedRows struct {
	pgx.Rows
	lease *Lease
	once  sync.Once
}

func (r *leasedRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.release()
	return false
}

func (r *leasedRows) Close() {
	r.Rows.Close()
	r.release()
}

func (r *leasedRows) release() { r.once.Do(r.lease.Release) }

type leasedTx struct {
	pgx.Tx
	lease *Lease
}

func (t *leasedTx) Commit(ctx context.Context) error {
	err := t.Tx.Commit(ctx)
	t.lease.Release()
	return err
}

func (t *leasedTx) Rollback(ctx context.Context) error {
	err := t.Tx.Rollback(ctx)
	t.lease.Release()
	return err
}
