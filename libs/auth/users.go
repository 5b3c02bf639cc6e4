package auth

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/page"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/problem"
)

// Querier runs a query on a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// UserList is the admins' list of a plane's users table: users whose
// email contains a filter, in id order, a page at a time.
type UserList[T any] struct {
	Table   string
	Columns string
	Scan    func(pgx.Row) (T, error)
	ID      func(T) int64
}

// Page checks the filter and the page request and reads that page.
func (l UserList[T]) Page(ctx context.Context, q Querier, emailContains string, r page.Request) (page.Page[T], error) {
	r, err := r.Normalize()
	if err != nil {
		return page.Page[T]{}, err
	}
	filter, err := EmailFilter(emailContains)
	if err != nil {
		return page.Page[T]{}, err
	}
	// strpos, not LIKE: wildcards in the filter are plain characters.
	rows, err := q.Query(ctx, `SELECT `+l.Columns+` FROM `+pgx.Identifier{l.Table}.Sanitize()+`
		WHERE id > $1 AND ($2 = '' OR strpos(email, $2) > 0)
		ORDER BY id LIMIT $3`, r.Cursor, filter, r.Limit+1)
	if err != nil {
		return page.Page[T]{}, fmt.Errorf("list users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return l.Scan(row) })
	if err != nil {
		return page.Page[T]{}, fmt.Errorf("list users: %w", err)
	}
	return page.Of(users, r.Limit, l.ID), nil
}

// InsertUserError translates the error of an INSERT into a users table:
// a unique violation (the email) is taken, and a check violation is a 422
// on the email.
func InsertUserError(err, taken error) error {
	switch pgutil.Code(err) {
	case pgutil.UniqueViolation:
		return taken
	case pgutil.CheckViolation:
		// The database's lower() can disagree with Go's on rare letters;
		// such an address is refused rather than stored in two spellings.
		return problem.Invalid("email", "must be a valid email address")
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

// EmailFilter checks the ?email= substring filter of a user list and
// returns it trimmed and lower-cased, as addresses are stored.
func EmailFilter(raw string) (string, error) {
	if len(raw) > 255 || !utf8.ValidString(raw) || strings.ContainsRune(raw, 0) {
		return "", problem.Invalid("email", "must be at most 255 bytes of UTF-8 text")
	}
	return strings.ToLower(strings.TrimSpace(raw)), nil
}

// GuardLastAdmin locks the rows of table's admins (those matching the SQL
// condition admin, a constant of the caller) in id order, so that
// concurrent changes queue instead of deadlocking, and fails with last
// when id is the only one: two admins demoting each other at once cannot
// both succeed.
func GuardLastAdmin(ctx context.Context, tx pgx.Tx, table, admin string, id int64, last error) error {
	rows, err := tx.Query(ctx, `SELECT id FROM `+pgx.Identifier{table}.Sanitize()+` WHERE `+admin+` ORDER BY id FOR UPDATE`)
	if err != nil {
		return fmt.Errorf("lock admins: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("lock admins: %w", err)
	}
	if len(ids) == 1 && ids[0] == id {
		return last
	}
	return nil
}
