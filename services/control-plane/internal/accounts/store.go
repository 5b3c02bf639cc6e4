package accounts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/auth"
)

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const userColumns = `id, email, is_verified, is_owner, is_admin, created_at`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.IsVerified, &u.IsOwner, &u.IsAdmin, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, ErrUserNotFound
	}
	return u, err
}

type newUser struct {
	email, hash                  string
	isOwner, isAdmin, isVerified bool
}

func insertUser(ctx context.Context, q querier, n newUser) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `INSERT INTO coreuser (email, password_hash, is_owner, is_admin, is_verified)
		VALUES ($1, $2, $3, $4, $5) RETURNING `+userColumns,
		n.email, n.hash, n.isOwner, n.isAdmin, n.isVerified))
	if err := auth.InsertUserError(err, ErrEmailTaken); err != nil {
		return User{}, err
	}
	return u, nil
}

func userByID(ctx context.Context, q querier, id int64) (User, error) {
	u, err := scanUser(q.QueryRow(ctx, `SELECT `+userColumns+` FROM coreuser WHERE id = $1`, id))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return User{}, fmt.Errorf("load user: %w", err)
	}
	return u, err
}

func userByEmail(ctx context.Context, q querier, email string) (User, error) {
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

func insertVerificationToken(ctx context.Context, q querier, userID int64, tokenHash string, ttl time.Duration) error {
	_, err := q.Exec(ctx, `INSERT INTO verification_token (token_hash, user_id, expires_at)
		VALUES ($1, $2, now() + $3::interval)`, tokenHash, userID, ttl)
	if err != nil {
		return fmt.Errorf("store verification token: %w", err)
	}
	return nil
}

func deleteUnusedVerificationTokens(ctx context.Context, q querier, userID int64) error {
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
			is_verified = COALESCE($4::boolean, is_verified)
		WHERE id = $1 RETURNING `+userColumns, id, p.IsOwner, p.IsAdmin, p.IsVerified))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return User{}, fmt.Errorf("update user: %w", err)
	}
	return u, err
}
