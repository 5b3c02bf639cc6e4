package accounts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/auth"
	"tenantbase/libs/page"
	"tenantbase/services/control-plane/internal/audit"
)

// Querier is a pool or a transaction on the core database.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const userColumns = `id, email, is_verified, is_owner, is_admin, max_organizations, created_at`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.IsVerified, &u.IsOwner, &u.IsAdmin, &u.MaxOrganizations, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, ErrUserNotFound
	}
	return u, err
}

type newUser struct {
	email, hash                  string
	isOwner, isAdmin, isVerified bool
}

func insertUser(ctx context.Context, q Querier, n newUser) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `INSERT INTO coreuser (email, password_hash, is_owner, is_admin, is_verified)
		VALUES ($1, $2, $3, $4, $5) RETURNING `+userColumns,
		n.email, n.hash, n.isOwner, n.isAdmin, n.isVerified))
	if err := auth.InsertUserError(err, ErrEmailTaken); err != nil {
		return User{}, err
	}
	return u, nil
}

func userByID(ctx context.Context, q Querier, id int64) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `SELECT `+userColumns+` FROM coreuser WHERE id = $1`, id))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return User{}, fmt.Errorf("load user: %w", err)
	}
	return u, err
}

func userByEmail(ctx context.Context, q Querier, email string) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `SELECT `+userColumns+` FROM coreuser WHERE email = $1`, email))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return User{}, fmt.Errorf("load user: %w", err)
	}
	return u, err
}

// lockUserByEmail locks the user row so that concurrent resends for one
// account leave exactly one live token.
func lockUserByEmail(ctx context.Context, tx pgx.Tx, email string) (id int64, verified bool, err error) {
	err = tx.QueryRow(ctx, `SELECT id, is_verified FROM coreuser WHERE email = $1 FOR UPDATE`, email).Scan(&id, &verified)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, ErrUserNotFound
	}
	if err != nil {
		return 0, false, fmt.Errorf("lock user: %w", err)
	}
	return id, verified, nil
}

func insertVerificationToken(ctx context.Context, q Querier, userID int64, tokenHash string, ttl time.Duration) error {
	_, err := q.Exec(ctx, `INSERT INTO verification_token (token_hash, user_id, expires_at)
		VALUES ($1, $2, now() + $3::interval)`, tokenHash, userID, ttl)
	if err != nil {
		return fmt.Errorf("store verification token: %w", err)
	}
	return nil
}

func deleteUnusedVerificationTokens(ctx context.Context, q Querier, userID int64) error {
	if _, err := q.Exec(ctx, `DELETE FROM verification_token WHERE user_id = $1 AND used_at IS NULL`, userID); err != nil {
		return fmt.Errorf("void verification tokens: %w", err)
	}
	return nil
}

// spendVerificationToken marks the token used and returns its user. The row
// lock makes two concurrent uses of one token succeed once.
func spendVerificationToken(ctx context.Context, tx pgx.Tx, tokenHash string) (int64, error) {
	var (
		userID  int64
		used    bool
		expired bool
	)
	err := tx.QueryRow(ctx, `SELECT user_id, used_at IS NOT NULL, expires_at <= now()
		FROM verification_token WHERE token_hash = $1 FOR UPDATE`, tokenHash).Scan(&userID, &used, &expired)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, ErrTokenInvalid
	case err != nil:
		return 0, fmt.Errorf("load verification token: %w", err)
	case used:
		return 0, ErrTokenInvalid
	case expired:
		return 0, ErrTokenExpired
	}
	if _, err := tx.Exec(ctx, `UPDATE verification_token SET used_at = now() WHERE token_hash = $1`, tokenHash); err != nil {
		return 0, fmt.Errorf("spend verification token: %w", err)
	}
	return userID, nil
}

func markVerified(ctx context.Context, tx pgx.Tx, userID int64) (User, error) {
	u, err := scanUser(tx.QueryRow(ctx, `UPDATE coreuser SET is_verified = TRUE WHERE id = $1 RETURNING `+userColumns, userID))
	if err != nil {
		return User{}, fmt.Errorf("mark user verified: %w", err)
	}
	return u, nil
}

func updateUserFlags(ctx context.Context, tx pgx.Tx, id int64, p UserPatch) (User, error) {
	u, err := scanUser(tx.QueryRow(ctx, `UPDATE coreuser SET
			is_owner    = COALESCE($2::boolean, is_owner),
			is_admin    = COALESCE($3::boolean, is_admin),
			is_verified = COALESCE($4::boolean, is_verified),
			max_organizations = CASE WHEN $5 THEN $6::integer ELSE max_organizations END
		WHERE id = $1 RETURNING `+userColumns, id, p.IsOwner, p.IsAdmin, p.IsVerified, p.SetMaxOrganizations, p.MaxOrganizations))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return User{}, fmt.Errorf("update user: %w", err)
	}
	return u, err
}

func listUsers(ctx context.Context, q DB, emailContains string, r page.Request) (page.Page[User], error) {
	// strpos, not LIKE: wildcards in the filter are plain characters.
	rows, err := q.Query(ctx, `SELECT `+userColumns+` FROM coreuser
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

// lockAdmins locks the platform admins' rows in id order and returns their ids.
func lockAdmins(ctx context.Context, tx pgx.Tx) ([]int64, error) {
	rows, err := tx.Query(ctx, `SELECT id FROM coreuser WHERE is_admin ORDER BY id FOR UPDATE`)
	if err != nil {
		return nil, fmt.Errorf("lock admins: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("lock admins: %w", err)
	}
	return ids, nil
}

func setPassword(ctx context.Context, q Querier, id int64, hash string) error {
	tag, err := q.Exec(ctx, `UPDATE coreuser SET password_hash = $2, failed_logins = 0, locked_until = NULL WHERE id = $1`, id, hash)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrUserNotFound
	}
	return nil
}

// Credentials are what provisioning copies of an owner into a tenant.
type Credentials struct {
	Email        string
	PasswordHash string
}

// OwnerCredentials returns the email and password hash of user id.
func OwnerCredentials(ctx context.Context, q Querier, id int64) (Credentials, error) {
	var c Credentials
	err := q.QueryRow(ctx, `SELECT email, password_hash FROM coreuser WHERE id = $1`, id).Scan(&c.Email, &c.PasswordHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrUserNotFound
	}
	if err != nil {
		return c, fmt.Errorf("read owner %d: %w", id, err)
	}
	return c, nil
}

// LockPasswordHash returns user id's password hash, locking the row
// against a concurrent password change until tx ends.
func LockPasswordHash(ctx context.Context, tx pgx.Tx, id int64) (string, error) {
	var hash string
	if err := tx.QueryRow(ctx, `SELECT password_hash FROM coreuser WHERE id = $1 FOR SHARE`, id).Scan(&hash); err != nil {
		return "", fmt.Errorf("read owner %d: %w", id, err)
	}
	return hash, nil
}

// logins is coreuser as the throttled password check needs it.
type logins struct{ db DB }

// CountAttempt implements auth.LoginStore: failed_logins counts the
// attempts since the last correct password, and the one that reaches the
// limit sets locked_until, in one statement under the row's lock. The
// attempt that locks the account is audited in the same transaction.
func (l logins) CountAttempt(ctx context.Context, email string, th auth.Throttle) (auth.Attempt, error) {
	var a auth.Attempt
	err := pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) error {
		var locks bool
		err := tx.QueryRow(ctx, `UPDATE coreuser SET
				failed_logins = CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END,
				locked_until  = CASE WHEN (CASE WHEN locked_until <= now() THEN 1 ELSE failed_logins + 1 END) >= $2
					THEN now() + $3::interval END
			WHERE email = $1 AND (locked_until IS NULL OR locked_until <= now())
			RETURNING id, password_hash, locked_until IS NOT NULL`, email, th.MaxFailures, th.Lockout).Scan(&a.ID, &a.Hash, &locks)
		if err != nil || !locks {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: audit.UserLock, TargetType: audit.TargetUser, TargetID: audit.ID(a.ID),
			Outcome: audit.Failure, Detail: map[string]any{"failed_logins": th.MaxFailures, "locked_for_seconds": int(th.Lockout.Seconds())}})
	})
	if !errors.Is(err, pgx.ErrNoRows) {
		return a, err
	}
	// Unknown, or locked: a statement of its own sees a lock committed
	// while the update above waited.
	var seconds float64
	err = l.db.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM greatest(locked_until - now(), '0s')), 0)::float8
		FROM coreuser WHERE email = $1`, email).Scan(&seconds)
	if errors.Is(err, pgx.ErrNoRows) {
		return auth.Attempt{}, nil
	}
	return auth.Attempt{LockedFor: time.Duration(seconds * float64(time.Second))}, err
}

// ClearAttempts implements auth.LoginStore. A lock can only be set here
// when the attempt that reached the limit had the right password (a locked
// account's attempts are refused before the check): lifting it is audited.
func (l logins) ClearAttempts(ctx context.Context, id int64) error {
	return pgx.BeginFunc(ctx, l.db, func(tx pgx.Tx) error {
		var wasLocked bool
		err := tx.QueryRow(ctx, `UPDATE coreuser u SET failed_logins = 0, locked_until = NULL
			FROM (SELECT id, locked_until FROM coreuser WHERE id = $1 FOR UPDATE) old
			WHERE u.id = old.id AND (u.failed_logins <> 0 OR u.locked_until IS NOT NULL)
			RETURNING old.locked_until IS NOT NULL`, id).Scan(&wasLocked)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !wasLocked) {
			return nil
		}
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: audit.UserUnlock, TargetType: audit.TargetUser, TargetID: audit.ID(id),
			ActorID: id, Detail: map[string]any{"reason": "the attempt that reached the limit had the right password"}})
	})
}

// lockUserForOnboarding locks the user with email and reports whether it
// has a password (invited users have none until they accept).
func lockUserForOnboarding(ctx context.Context, tx pgx.Tx, email string) (User, bool, error) {
	var hasPassword bool
	var u User
	err := tx.QueryRow(ctx, `SELECT `+userColumns+`, password_hash <> '' FROM coreuser WHERE email = $1 FOR UPDATE`, email).
		Scan(&u.ID, &u.Email, &u.IsVerified, &u.IsOwner, &u.IsAdmin, &u.MaxOrganizations, &u.CreatedAt, &hasPassword)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, false, ErrUserNotFound
	}
	if err != nil {
		return User{}, false, fmt.Errorf("lock user: %w", err)
	}
	return u, hasPassword, nil
}

func lockMaxOrganizations(ctx context.Context, tx pgx.Tx, id int64) (*int, error) {
	var own *int
	err := tx.QueryRow(ctx, `SELECT max_organizations FROM coreuser WHERE id = $1 FOR UPDATE`, id).Scan(&own)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrUserNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lock owner: %w", err)
	}
	return own, nil
}

func insertInvitation(ctx context.Context, q Querier, userID int64, tokenHash string, ttl time.Duration) error {
	_, err := q.Exec(ctx, `INSERT INTO invitation_token (token_hash, user_id, expires_at)
		VALUES ($1, $2, now() + $3::interval)`, tokenHash, userID, ttl)
	if err != nil {
		return fmt.Errorf("store invitation: %w", err)
	}
	return nil
}

func deleteUnusedInvitations(ctx context.Context, q Querier, userID int64) error {
	if _, err := q.Exec(ctx, `DELETE FROM invitation_token WHERE user_id = $1 AND used_at IS NULL`, userID); err != nil {
		return fmt.Errorf("void invitations: %w", err)
	}
	return nil
}

// spendInvitation marks the invitation used and returns its user; the row
// lock makes two concurrent uses of one token succeed once.
func spendInvitation(ctx context.Context, tx pgx.Tx, tokenHash string) (int64, error) {
	var (
		userID  int64
		used    bool
		expired bool
	)
	err := tx.QueryRow(ctx, `SELECT user_id, used_at IS NOT NULL, expires_at <= now()
		FROM invitation_token WHERE token_hash = $1 FOR UPDATE`, tokenHash).Scan(&userID, &used, &expired)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, ErrInvitationInvalid
	case err != nil:
		return 0, fmt.Errorf("load invitation: %w", err)
	case used:
		return 0, ErrInvitationInvalid
	case expired:
		return 0, ErrInvitationExpired
	}
	if _, err := tx.Exec(ctx, `UPDATE invitation_token SET used_at = now() WHERE token_hash = $1`, tokenHash); err != nil {
		return 0, fmt.Errorf("spend invitation: %w", err)
	}
	return userID, nil
}
