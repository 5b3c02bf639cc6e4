// Package tenantdb owns the schema of every tenant database: its
// migrations and every statement on its users table. The tenant plane's
// accounts and the control plane's provisioning (the owner synced in as
// the first admin) both go through it; refresh tokens, a table of the same
// shape in the core database, belong to libs/auth.
package tenantdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/auth"
	"tenantbase/libs/page"
	"tenantbase/libs/pgutil"
)

// Querier runs statements on a tenant database: a pool, a connection, a
// transaction or the tenant plane's leased handle.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Roles of tenant users.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Errors of the users table.
var (
	ErrEmailTaken   = errors.New("a user with this email address already exists in this tenant")
	ErrUserNotFound = errors.New("no such user in this tenant")
)

// User is a tenant user's row, the password hash aside.
type User struct {
	ID           int64
	Email        string
	Role         string
	IsActive     bool
	DisplayName  *string
	Bio          *string
	AvatarURL    *string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	TokenVersion int
}

const userColumns = `id, email, role, is_active, display_name, bio, avatar_url, created_at, updated_at, token_version`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.Role, &u.IsActive, &u.DisplayName, &u.Bio, &u.AvatarURL,
		&u.CreatedAt, &u.UpdatedAt, &u.TokenVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, ErrUserNotFound
	}
	return u, err
}

// wrap adds what failed to an error other than ErrUserNotFound.
func wrap(what string, u User, err error) (User, error) {
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return User{}, fmt.Errorf("%s: %w", what, err)
	}
	return u, err
}

// InsertUser adds an active user; an email already there is ErrEmailTaken.
func InsertUser(ctx context.Context, q Querier, email, hash, role string) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `INSERT INTO tenantuser (email, password_hash, role)
		VALUES ($1, $2, $3) RETURNING `+userColumns, email, hash, role))
	if err := auth.InsertUserError(err, ErrEmailTaken); err != nil {
		return User{}, err
	}
	return u, nil
}

// UserByID returns user id, or ErrUserNotFound.
func UserByID(ctx context.Context, q Querier, id int64) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `SELECT `+userColumns+` FROM tenantuser WHERE id = $1`, id))
	return wrap("load user", u, err)
}

// SetPassword stores a new hash, clears the login throttle and bumps the
// token version, which ends every access token issued before.
func SetPassword(ctx context.Context, q Querier, id int64, hash string) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `UPDATE tenantuser
		SET password_hash = $2, token_version = token_version + 1, failed_logins = 0, locked_until = NULL, updated_at = now()
		WHERE id = $1 RETURNING `+userColumns, id, hash))
	return wrap("set password", u, err)
}

// ProfileChange sets the profile fields whose Set flag is true (nil clears).
type ProfileChange struct {
	SetDisplayName, SetBio, SetAvatarURL bool
	DisplayName, Bio, AvatarURL          *string
}

// UpdateProfile applies c to user id.
func UpdateProfile(ctx context.Context, q Querier, id int64, c ProfileChange) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `UPDATE tenantuser SET
		display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
		bio          = CASE WHEN $4 THEN $5 ELSE bio END,
		avatar_url   = CASE WHEN $6 THEN $7 ELSE avatar_url END,
		updated_at   = now()
		WHERE id = $1 RETURNING `+userColumns,
		id, c.SetDisplayName, c.DisplayName, c.SetBio, c.Bio, c.SetAvatarURL, c.AvatarURL))
	return wrap("update profile", u, err)
}

// FlagsChange sets is_active and role where not nil.
type FlagsChange struct {
	IsActive *bool
	Role     *string
}

// UpdateFlags applies c to user id; deactivating bumps the token version,
// which ends the user's access tokens.
func UpdateFlags(ctx context.Context, q Querier, id int64, c FlagsChange) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `UPDATE tenantuser SET
		token_version = token_version + CASE WHEN is_active AND NOT COALESCE($2, is_active) THEN 1 ELSE 0 END,
		is_active     = COALESCE($2, is_active),
		role          = COALESCE($3, role),
		updated_at    = now()
		WHERE id = $1 RETURNING `+userColumns, id, c.IsActive, c.Role))
	return wrap("update user", u, err)
}

// ListUsers returns one page of users in id order whose email contains
// emailContains (already normalised; "" for all).
func ListUsers(ctx context.Context, q Querier, emailContains string, r page.Request) (page.Page[User], error) {
	// strpos, not LIKE: wildcards in the filter are plain characters.
	rows, err := q.Query(ctx, `SELECT `+userColumns+` FROM tenantuser
		WHERE id > $1 AND ($2 = '' OR strpos(email, $2) > 0)
		ORDER BY id LIMIT $3`, r.Cursor, emailContains, r.Limit+1)
	if err != nil {
		return page.Page[User]{}, fmt.Errorf("list users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (User, error) { return scanUser(row) })
	if err != nil {
		return page.Page[User]{}, fmt.Errorf("list users: %w", err)
	}
	return page.Of(users, r.Limit, func(u User) int64 { return u.ID }), nil
}

// LockActiveAdmins locks the rows of the active admins in id order and
// returns their ids, so that changes that could leave the tenant without
// one queue instead of racing (or deadlocking).
func LockActiveAdmins(ctx context.Context, tx pgx.Tx) ([]int64, error) {
	rows, err := tx.Query(ctx, `SELECT id FROM tenantuser WHERE role = 'admin' AND is_active ORDER BY id FOR UPDATE`)
	if err != nil {
		return nil, fmt.Errorf("lock admins: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("lock admins: %w", err)
	}
	return ids, nil
}

// UpsertAdmin makes email an active admin with hash, creating the user or
// updating it: the organization owner synced in by provisioning.
func UpsertAdmin(ctx context.Context, q Querier, email, hash string) error {
	_, err := q.Exec(ctx, `INSERT INTO tenantuser (email, password_hash, role) VALUES ($1, $2, 'admin')
		ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin',
			is_active = TRUE, updated_at = now()`, email, hash)
	if err != nil {
		return fmt.Errorf("upsert admin: %w", err)
	}
	return nil
}

// ReplacePassword sets the hash of email's user when it differs, bumping
// its token version, and returns the user's id; changed is false when the
// user is absent or already has hash.
func ReplacePassword(ctx context.Context, q Querier, email, hash string) (id int64, changed bool, err error) {
	err = q.QueryRow(ctx, `UPDATE tenantuser SET password_hash = $2, token_version = token_version + 1, updated_at = now()
		WHERE email = $1 AND password_hash <> $2 RETURNING id`, email, hash).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("replace password: %w", err)
	}
	return id, true, nil
}

// RecordLogin notes that user id logged in just now, in a tenant database
// at schemaVersion; below LastLoginVersion there is no column for it and
// nothing is written. A database rolled back below it while the caller
// still knew the newer version has no column either: the login is not
// recorded, and it is no error.
func RecordLogin(ctx context.Context, q Querier, schemaVersion int, id int64) error {
	if schemaVersion < LastLoginVersion {
		return nil
	}
	_, err := q.Exec(ctx, `UPDATE tenantuser SET last_login_at = now() WHERE id = $1`, id)
	if err != nil && pgutil.Code(err) != pgerrcode.UndefinedColumn {
		return fmt.Errorf("record login: %w", err)
	}
	return nil
}

// Logins is the users table as the throttled password check needs it.
func Logins(q Querier) auth.LoginStore { return logins{q} }

type logins struct{ q Querier }

// CountAttempt implements auth.LoginStore: failed_logins counts the
// attempts since the last correct password, and the one that reaches the
// limit sets locked_until, in one statement under the row's lock.
func (l logins) CountAttempt(ctx context.Context, email string, th auth.Throttle) (auth.Attempt, error) {
	var a auth.Attempt
	err := l.q.QueryRow(ctx, `UPDATE tenantuser SET
			failed_logins = CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END,
			locked_until  = CASE WHEN (CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END) >= $2
				THEN now() + $3::interval END
		WHERE email = $1 AND (locked_until IS NULL OR locked_until <= now())
		RETURNING id, password_hash`, email, th.MaxFailures, th.Lockout).Scan(&a.ID, &a.Hash)
	if !errors.Is(err, pgx.ErrNoRows) {
		return a, err
	}
	// Unknown, or locked: a statement of its own sees a lock committed
	// while the update above waited.
	var seconds float64
	err = l.q.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM greatest(locked_until - now(), '0s')), 0)::float8
		FROM tenantuser WHERE email = $1`, email).Scan(&seconds)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Attempt{}, nil
	}
	return auth.Attempt{LockedFor: time.Duration(seconds * float64(time.Second))}, err
}

// ClearAttempts implements auth.LoginStore.
func (l logins) ClearAttempts(ctx context.Context, id int64) error {
	_, err := l.q.Exec(ctx, `UPDATE tenantuser SET failed_logins = 0, locked_until = NULL
		WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)`, id)
	return err
}
