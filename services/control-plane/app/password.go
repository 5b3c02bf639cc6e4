package app

import (
	"errors"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/services/control-plane/internal/accounts"
)

// handleChangePassword changes the caller's core password. The new hash,
// the revocation of the caller's refresh tokens and the job that carries the hash
// into the owner's tenant databases commit together, so the tenants follow
// even if the process stops right after.
func (d *deps) handleChangePassword(c echo.Context) error {
	ctx := c.Request().Context()
	var in struct {
		CurrentPassword string `json:"current_password"`
		NewPassword     string `json:"new_password"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	if err := auth.ValidatePasswordChange(in.CurrentPassword, in.NewPassword); err != nil {
		return err
	}
	me, err := d.accounts.User(ctx, currentUserID(c))
	if errors.Is(err, accounts.ErrUserNotFound) {
		return unauthorized(c)
	}
	if err != nil {
		return err
	}
	throttle := auth.Throttle{MaxFailures: d.cfg.LoginMaxFailures, Lockout: d.cfg.LoginLockout}
	if _, err := auth.CheckPassword(ctx, d.pool, "coreuser", d.passwords, throttle, me.Email, in.CurrentPassword); err != nil {
		return err
	}
	hash, err := d.passwords.Hash(in.NewPassword)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE coreuser SET password_hash = $2 WHERE id = $1`, me.ID, hash); err != nil {
			return err
		}
		if err := auth.RevokeAllRefresh(ctx, tx, me.ID); err != nil {
			return err
		}
		return d.ownerPasswordChanged(ctx, tx, me.ID)
	})
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("password changed")
	return c.NoContent(http.StatusNoContent)
}
