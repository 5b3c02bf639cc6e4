package app

import (
	"context"
	"errors"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/httpx"
	"tenantbase/services/control-plane/internal/accounts"
)

// passwordAPI changes core passwords, which reach into the owner's tenant
// databases.
type passwordAPI struct {
	accounts *accounts.Service
	jobs     interface {
		EnqueueOwnerPasswordSync(ctx context.Context, tx pgx.Tx, ownerID int64) error
	}
}

func registerPasswordRoute(e *echo.Echo, h passwordAPI, mw middleware) {
	e.POST("/auth/password", h.handleChangePassword, mw.requireUser)
	e.POST("/auth/invitations/accept", h.handleAcceptInvitation)
}

// handleChangePassword changes the caller's core password. The new hash,
// the revocation of the caller's refresh tokens and the job that carries
// the hash into the owner's tenant databases commit together.
func (h passwordAPI) handleChangePassword(c echo.Context) error {
	ctx := c.Request().Context()
	var in struct {
		CurrentPassword string `json:"current_password"`
		NewPassword     string `json:"new_password"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	id := currentUserID(c)
	err := h.accounts.ChangePassword(ctx, id, in.CurrentPassword, in.NewPassword, func(tx pgx.Tx) error {
		return h.jobs.EnqueueOwnerPasswordSync(ctx, tx, id)
	})
	if errors.Is(err, accounts.ErrUserNotFound) {
		return unauthorized(c)
	}
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("password changed")
	return c.NoContent(http.StatusNoContent)
}

// handleAcceptInvitation sets the password of an owner a platform admin
// onboarded, verifies the account and starts a session. The password
// reaches the owner's tenant databases through the same job as a password
// change, enqueued in the same transaction.
func (h passwordAPI) handleAcceptInvitation(c echo.Context) error {
	ctx := c.Request().Context()
	var in struct {
		Token    string `json:"token"`
		Password string `json:"password"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	t, err := h.accounts.AcceptInvitation(ctx, in.Token, in.Password, func(tx pgx.Tx, userID int64) error {
		return h.jobs.EnqueueOwnerPasswordSync(ctx, tx, userID)
	})
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("invitation accepted")
	return c.JSON(http.StatusOK, t)
}
