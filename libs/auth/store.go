package auth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/problem"
)

// DB is what the shared account queries need: a *pgxpool.Pool, *pgx.Conn or pgx.Tx.
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

// Throttle locks an account for Lockout after MaxFailures failed logins in a row.
type Throttle struct {
	MaxFailures int
	Lockout     time.Duration
}

// CheckPassword verifies email and password against the users table
// (columns id, email, password_hash, failed_logins, locked_until), spending
// the same time on unknown emails as on wrong passwords, and counts
// failures per account. A locked account gets a 429 problem with Retry-After.
func CheckPassword(ctx context.Context, db DB, table string, pw *Passwords, th Throttle, email, password string) (int64, error) {
	t := pgx.Identifier{table}.Sanitize()
	var (
		id          int64
		hash        string
		lockedUntil *time.Time
	)
	err := db.QueryRow(ctx, `SELECT id, password_hash, locked_until FROM `+t+` WHERE email = $1`, email).
		Scan(&id, &hash, &lockedUntil)
	if errors.Is(err, pgx.ErrNoRows) {
		pw.Verify("", password)
		return 0, ErrInvalidCredentials
	}
	if err != nil {
		return 0, fmt.Errorf("auth: load credentials: %w", err)
	}
	if lockedUntil != nil {
		if wait := time.Until(*lockedUntil); wait > 0 {
			return 0, problem.New(http.StatusTooManyRequests, "too_many_attempts",
				"too many failed logins for this account; try again later").
				WithRetryAfter(int(math.Ceil(wait.Seconds())))
		}
	}
	if !pw.Verify(hash, password) {
		_, err := db.Exec(ctx, `UPDATE `+t+` SET
			failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END,
			locked_until  = CASE WHEN failed_logins + 1 >= $2 THEN now() + $3::interval ELSE locked_until END
			WHERE id = $1`, id, th.MaxFailures, th.Lockout)
		if err != nil {
			return 0, fmt.Errorf("auth: record failed login: %w", err)
		}
		return 0, ErrInvalidCredentials
	}
	if _, err := db.Exec(ctx, `UPDATE `+t+` SET failed_logins = 0, locked_until = NULL
		WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)`, id); err != nil {
		return 0, fmt.Errorf("auth: reset failed logins: %w", err)
	}
	return id, nil
}

// Login validates a login's input (see ValidateLogin) and checks it with
// CheckPassword, returning the user's id.
func Login(ctx context.Context, db DB, table string, pw *Passwords, th Throttle, rawEmail, password string) (int64, error) {
	email, err := ValidateLogin(rawEmail, password)
	if err != nil {
		return 0, err
	}
	return CheckPassword(ctx, db, table, pw, th, email, password)
}

// Refresh tokens live in a table named refresh_token in the service's
// database (columns id, family_id, user_id, token_hash, expires_at,
// created_at, used_at, revoked_at). Each login starts a family; each use
// rotates the token; using a rotated token again revokes the whole family.

// IssueRefresh starts a new token family for userID.
func IssueRefresh(ctx context.Context, db DB, userID int64, ttl time.Duration) (string, error) {
	return insertRefresh(ctx, db, uuid.New(), userID, ttl)
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
// token is a 422 naming refresh_token, the field both planes take it in.
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
// are ignored; an empty one is a 422 as in RotateRefresh.
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
