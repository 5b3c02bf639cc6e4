package accounts

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/libs/auth"
)

// querier is a DB or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const accountColumns = `id, email, role, is_active, display_name, bio, avatar_url, created_at, updated_at, token_version`

func scanAccount(row pgx.Row) (Account, error) {
	var a Account
	err := row.Scan(&a.ID, &a.Email, &a.Role, &a.IsActive, &a.DisplayName, &a.Bio, &a.AvatarURL,
		&a.CreatedAt, &a.UpdatedAt, &a.TokenVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, ErrUserNotFound
	}
	return a, err
}

func insertAccount(ctx context.Context, q querier, email, hash, role string) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `INSERT INTO tenantuser (email, password_hash, role)
		VALUES ($1, $2, $3) RETURNING `+accountColumns, email, hash, role))
	if err := auth.InsertUserError(err, ErrEmailTaken); err != nil {
		return Account{}, err
	}
	return a, nil
}

func accountByID(ctx context.Context, q querier, id int64) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `SELECT `+accountColumns+` FROM tenantuser WHERE id = $1`, id))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return Account{}, fmt.Errorf("load user: %w", err)
	}
	return a, err
}

// setPassword stores a new hash and bumps the token version, which ends
// every access token issued before.
func setPassword(ctx context.Context, q querier, id int64, hash string) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `UPDATE tenantuser
		SET password_hash = $2, token_version = token_version + 1, failed_logins = 0, locked_until = NULL, updated_at = now()
		WHERE id = $1 RETURNING `+accountColumns, id, hash))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return Account{}, fmt.Errorf("set password: %w", err)
	}
	return a, err
}

type profileChange struct {
	setName, setBio, setAvatar bool
	name, bio, avatar          *string
}

func updateProfile(ctx context.Context, q querier, id int64, c profileChange) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `UPDATE tenantuser SET
		display_name = CASE WHEN $2 THEN $3 ELSE display_name END,
		bio          = CASE WHEN $4 THEN $5 ELSE bio END,
		avatar_url   = CASE WHEN $6 THEN $7 ELSE avatar_url END,
		updated_at   = now()
		WHERE id = $1 RETURNING `+accountColumns,
		id, c.setName, c.name, c.setBio, c.bio, c.setAvatar, c.avatar))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return Account{}, fmt.Errorf("update profile: %w", err)
	}
	return a, err
}

// updateFlags changes is_active and role; deactivating bumps the token
// version, which ends the user's access tokens.
func updateFlags(ctx context.Context, q querier, id int64, p UserPatch) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `UPDATE tenantuser SET
		token_version = token_version + CASE WHEN is_active AND NOT COALESCE($2, is_active) THEN 1 ELSE 0 END,
		is_active     = COALESCE($2, is_active),
		role          = COALESCE($3, role),
		updated_at    = now()
		WHERE id = $1 RETURNING `+accountColumns, id, p.IsActive, p.Role))
	if err != nil && !errors.Is(err, ErrUserNotFound) {
		return Account{}, fmt.Errorf("update user: %w", err)
	}
	return a, err
}
