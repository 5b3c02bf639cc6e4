package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/apperr"
)

// DB is what the refresh-token queries need: a *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Errors of the login and refresh flows, mapped to 401 by the services.
var (
	ErrInvalidCredentials = errors.New("email or password is wrong")
	ErrInvalidRefresh     = errors.New("refresh token is invalid, expired or revoked")
)

// Throttle locks an account for Lockout once MaxFailures login attempts in
// a row were made without a correct password.
type Throttle struct {
	MaxFailures int
	Lockout     time.Duration
}

// Attempt is what a plane's users table answers for a counted login attempt.
type Attempt struct {
	// ID and Hash are the account's; ID is 0 when no account has the email.
	ID   int64
	Hash string
	// LockedFor, when positive, is how long the account stays locked: the
	// attempt was refused and not counted.
	LockedFor time.Duration
}

// LoginStore is a plane's users table as the throttled password check
// needs it. Each plane's store owns its table and implements it.
type LoginStore interface {
	// CountAttempt records a login attempt on the account of email in one
	// statement, before the password is checked: unless the account is
	// locked, its count of attempts since the last correct password goes
	// up, and the attempt that reaches th.MaxFailures locks the account for
	// th.Lockout. A lock whose time has passed starts a new count.
	CountAttempt(ctx context.Context, email string, th Throttle) (Attempt, error)
	// ClearAttempts forgets the account's attempts and lock after a
	// correct password.
	ClearAttempts(ctx context.Context, id int64) error
}

// CheckPassword verifies email and password, spending the same time on
// unknown emails as on wrong passwords. Counting each attempt before the
// comparison, in one statement, means that however many guesses arrive at
// once, at most th.MaxFailures of them are compared per lock window; the
// others get an *apperr.LockedError without a comparison.
func CheckPassword(ctx context.Context, store LoginStore, pw *Passwords, th Throttle, email, password string) (int64, error) {
	// The turn comes first: an attempt shed for lack of a core is not
	// counted against the account.
	release, err := pw.turn(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	a, err := store.CountAttempt(ctx, email, th)
	if err != nil {
		return 0, fmt.Errorf("auth: count login attempt: %w", err)
	}
	if a.LockedFor > 0 {
		return 0, &apperr.LockedError{RetryAfter: a.LockedFor}
	}
	if !pw.verify(a.Hash, password) || a.ID == 0 {
		return 0, ErrInvalidCredentials
	}
	if err := store.ClearAttempts(ctx, a.ID); err != nil {
		return 0, fmt.Errorf("auth: clear login attempts: %w", err)
	}
	return a.ID, nil
}

// Login validates a login's input (see ValidateLogin) and checks it with
// CheckPassword, returning the user's id.
func Login(ctx context.Context, store LoginStore, pw *Passwords, th Throttle, rawEmail, password string) (int64, error) {
	email, err := ValidateLogin(rawEmail, password)
	if err != nil {
		return 0, err
	}
	return CheckPassword(ctx, store, pw, th, email, password)
}

// Refresh tokens live in a table named refresh_token in each plane's
// database, of the same shape in both (columns id, family_id, user_id,
// token_hash, expires_at, created_at, used_at, revoked_at); this package
// owns it. Each login starts a family; each use rotates the token; using a
// rotated token again revokes the whole family.

// IssueRefresh starts a new token family for userID, and deletes the
// user's tokens that can never be used again: each login keeps the table
// of a tenant database (no job walks those) from growing with the user's
// history.
func IssueRefresh(ctx context.Context, db DB, userID int64, ttl time.Duration) (string, error) {
	if _, err := db.Exec(ctx, `DELETE FROM refresh_token WHERE user_id = $1 AND `+deadRefresh, userID); err != nil {
		return "", fmt.Errorf("auth: purge refresh tokens: %w", err)
	}
	return insertRefresh(ctx, db, uuid.New(), userID, ttl)
}

// deadRefresh matches tokens that can never be used again: expired, or
// revoked (a used token stays until it expires, so that presenting it
// again still revokes its family).
const deadRefresh = `(expires_at < now() OR revoked_at IS NOT NULL)`

// PurgeRefresh deletes every token that can never be used again and
// returns how many.
func PurgeRefresh(ctx context.Context, db DB) (int64, error) {
	tag, err := db.Exec(ctx, `DELETE FROM refresh_token WHERE `+deadRefresh)
	if err != nil {
		return 0, fmt.Errorf("auth: purge refresh tokens: %w", err)
	}
	return tag.RowsAffected(), nil
}

func insertRefresh(ctx context.Context, db DB, family uuid.UUID, userID int64, ttl time.Duration) (string, error) {
	token, hash := NewOpaqueToken()
	_, err := db.Exec(ctx, `INSERT INTO refresh_token (family_id, user_id, token_hash, expires_at)
		VALUES ($1, $2, $3, now() + $4::interval)`, family, userID, hash, ttl)
	if err != nil {
		return "", fmt.Errorf("auth: store refresh token: %w", err)
	}
	return token, nil
}

// RotateRefresh exchanges token for a new one of the same family and
// returns the user it belongs to. A token used before revokes its family
// (the revocation is committed) and fails with ErrInvalidRefresh. An empty
// token is a validation error naming refresh_token, the field both planes
// take it in.
func RotateRefresh(ctx context.Context, db DB, token string, ttl time.Duration) (userID int64, next string, err error) {
	if err := required("refresh_token", token); err != nil {
		return 0, "", err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, "", err
	}
	defer tx.Rollback(ctx)
	var (
		family  uuid.UUID
		expires time.Time
		used    *time.Time
		revoked *time.Time
	)
	err = tx.QueryRow(ctx, `SELECT family_id, user_id, expires_at, used_at, revoked_at
		FROM refresh_token WHERE token_hash = $1 FOR UPDATE`, HashToken(token)).
		Scan(&family, &userID, &expires, &used, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", ErrInvalidRefresh
	}
	if err != nil {
		return 0, "", fmt.Errorf("auth: load refresh token: %w", err)
	}
	if revoked != nil || time.Now().After(expires) {
		return 0, "", ErrInvalidRefresh
	}
	if used != nil {
		if _, err := tx.Exec(ctx, `UPDATE refresh_token SET revoked_at = now()
			WHERE family_id = $1 AND revoked_at IS NULL`, family); err != nil {
			return 0, "", fmt.Errorf("auth: revoke family: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, "", err
		}
		return 0, "", ErrInvalidRefresh
	}
	if _, err := tx.Exec(ctx, `UPDATE refresh_token SET used_at = now() WHERE token_hash = $1`, HashToken(token)); err != nil {
		return 0, "", fmt.Errorf("auth: mark refresh token used: %w", err)
	}
	next, err = insertRefresh(ctx, tx, family, userID, ttl)
	if err != nil {
		return 0, "", err
	}
	return userID, next, tx.Commit(ctx)
}

// RevokeRefresh revokes the family token belongs to (logout). Unknown tokens
// are ignored; an empty one is a validation error as in RotateRefresh.
func RevokeRefresh(ctx context.Context, db DB, token string) error {
	if err := required("refresh_token", token); err != nil {
		return err
	}
	_, err := db.Exec(ctx, `UPDATE refresh_token SET revoked_at = now()
		WHERE revoked_at IS NULL AND family_id IN (SELECT family_id FROM refresh_token WHERE token_hash = $1)`,
		HashToken(token))
	return err
}

// RevokeAllRefresh revokes every refresh token of userID (deactivation, password change).
func RevokeAllRefresh(ctx context.Context, db DB, userID int64) error {
	_, err := db.Exec(ctx, `UPDATE refresh_token SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL`, userID)
	return err
}
