package app

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/pgutil"
	"tenantbase/services/tenant-plane/internal/pools"
	"tenantbase/services/tenant-plane/internal/tenants"
)

// tenantDB is one request's handle on the tenant's database (pools.DB),
// which follows a password rotation the plane has not applied yet: when a
// new connection is refused for its password, the tenant is looked up
// again and the statement runs on the new details; so does a statement
// whose connection attempt was cut short because the pool was replaced
// meanwhile (another request brought the new details first). Nothing has
// run when a connection cannot be opened, so the retry repeats nothing.
// The control plane changes the role's password a moment before the new
// one is committed, so a lookup may still answer the old one: it is asked
// again a few times, briefly.
type tenantDB struct {
	a      *api
	id     int64
	target pools.Target
}

// connectRetries bounds the retries of one statement; with the waits
// between them they span about a second.
const connectRetries = 6

func (a *api) tenantDB(t tenants.Tenant) *tenantDB {
	return &tenantDB{a: a, id: t.ID, target: targetOf(t)}
}

func targetOf(t tenants.Tenant) pools.Target {
	d := t.Database
	return pools.Target{TenantID: t.ID, Host: d.Host, Port: d.Port, Database: d.Name, User: d.User, Password: d.Password.Reveal()}
}

func (d *tenantDB) db() pools.DB { return d.a.pools.DB(d.target) }

// again reports whether a statement that failed with err is to be run
// again, after looking the tenant up anew.
func (d *tenantDB) again(ctx context.Context, err error, attempt int) bool {
	if attempt >= connectRetries || ctx.Err() != nil || !errors.Is(err, pools.ErrUnavailable) {
		return false
	}
	refused := pgutil.Code(err) == pgerrcode.InvalidPassword
	if !refused && !errors.Is(err, context.Canceled) {
		return false
	}
	if attempt > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
	if refused {
		d.a.resolver.Expire(d.id)
	}
	t, err := d.a.resolver.Resolve(ctx, d.id)
	if err != nil || !t.Status.Serving() {
		return false
	}
	d.target = targetOf(t)
	return true
}

// Exec implements accounts.DB.
func (d *tenantDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	for attempt := 0; ; attempt++ {
		tag, err := d.db().Exec(ctx, sql, args...)
		if !d.again(ctx, err, attempt) {
			return tag, err
		}
	}
}

// Query implements accounts.DB.
func (d *tenantDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	for attempt := 0; ; attempt++ {
		rows, err := d.db().Query(ctx, sql, args...)
		if !d.again(ctx, err, attempt) {
			return rows, err
		}
	}
}

// QueryRow implements accounts.DB; the statement runs when the row is scanned.
func (d *tenantDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &tenantRow{d: d, ctx: ctx, sql: sql, args: args}
}

// Begin implements accounts.DB.
func (d *tenantDB) Begin(ctx context.Context) (pgx.Tx, error) {
	for attempt := 0; ; attempt++ {
		tx, err := d.db().Begin(ctx)
		if !d.again(ctx, err, attempt) {
			return tx, err
		}
	}
}

type tenantRow struct {
	d    *tenantDB
	ctx  context.Context
	sql  string
	args []any
}

func (r *tenantRow) Scan(dest ...any) error {
	for attempt := 0; ; attempt++ {
		err := r.d.db().QueryRow(r.ctx, r.sql, r.args...).Scan(dest...)
		if !r.d.again(r.ctx, err, attempt) {
			return err
		}
	}
}
