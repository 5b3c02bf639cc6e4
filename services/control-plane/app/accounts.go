package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/mailer"
)

// mountAccounts registers core users: registration, verification, login,
// tokens and the platform-admin user API. It creates the bootstrap admin
// when one is configured and absent.
func mountAccounts(ctx context.Context, d *deps) error {
	var mail accounts.Mailer = mailer.Log{}
	if d.cfg.SMTPAddr != "" {
		smtp, err := mailer.NewSMTP(d.cfg.SMTPAddr, d.cfg.SMTPFrom, d.cfg.SMTPUsername, d.cfg.SMTPPassword.Reveal())
		if err != nil {
			return err
		}
		mail = smtp
	} else {
		d.log.Warn("no SMTP server configured (SMTP_ADDR): verification links are written to the log")
	}
	d.accounts = accounts.New(d.pool, d.passwords, d.keys, mail, accounts.Options{
		PublicURL:       d.cfg.PublicURL,
		OpenOwnerSignup: d.cfg.OwnerSignupPolicy == "open",
		AccessTokenTTL:  d.cfg.AccessTokenTTL,
		RefreshTokenTTL: d.cfg.RefreshTokenTTL,
		Throttle:        auth.Throttle{MaxFailures: d.cfg.LoginMaxFailures, Lockout: d.cfg.LoginLockout},
	})

	if d.cfg.BootstrapAdminEmail != "" {
		created, err := d.accounts.EnsureAdmin(ctx, d.cfg.BootstrapAdminEmail, d.cfg.BootstrapAdminPassword.Reveal())
		if err != nil {
			return fmt.Errorf("bootstrap admin: %w", err)
		}
		if created {
			d.log.Info("bootstrap admin created", "email", d.cfg.BootstrapAdminEmail)
		}
	}

	h := accountsAPI{svc: d.accounts}
	d.public.POST("/auth/register", h.handleRegister)
	d.public.GET("/auth/verify", h.handleVerifyLink)
	d.public.POST("/auth/verify", h.handleVerify)
	d.public.POST("/auth/verify/resend", h.handleResendVerification)
	d.public.POST("/auth/login", h.handleLogin)
	d.public.POST("/auth/refresh", h.handleRefresh)
	d.public.POST("/auth/logout", h.handleLogout)
	d.public.GET("/auth/me", h.handleMe, d.requireUser)
	d.public.GET("/admin/users", h.handleListUsers, d.requireAdmin)
	d.public.PATCH("/admin/users/:id", h.handleUpdateUser, d.requireAdmin)
	return nil
}

type accountsAPI struct {
	svc *accounts.Service
}

func (h accountsAPI) handleRegister(c echo.Context) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		IsOwner  bool   `json:"is_owner"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	u, err := h.svc.Register(c.Request().Context(), accounts.Registration{Email: in.Email, Password: in.Password, IsOwner: in.IsOwner})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

// handleVerifyLink serves the link sent by mail.
func (h accountsAPI) handleVerifyLink(c echo.Context) error {
	u, err := h.svc.Verify(c.Request().Context(), c.QueryParam("token"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func (h accountsAPI) handleVerify(c echo.Context) error {
	var in struct {
		Token string `json:"token"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	u, err := h.svc.Verify(c.Request().Context(), in.Token)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// handleResendVerification answers 202 whether or not the account exists,
// so the endpoint cannot be used to discover accounts.
func (h accountsAPI) handleResendVerification(c echo.Context) error {
	var in struct {
		Email string `json:"email"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	if err := h.svc.ResendVerification(c.Request().Context(), in.Email); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}

func (h accountsAPI) handleLogin(c echo.Context) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	t, err := h.svc.Login(c.Request().Context(), in.Email, in.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

func (h accountsAPI) handleRefresh(c echo.Context) error {
	var in refreshRequest
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	t, err := h.svc.Refresh(c.Request().Context(), in.RefreshToken)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

func (h accountsAPI) handleLogout(c echo.Context) error {
	var in refreshRequest
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	if err := h.svc.Logout(c.Request().Context(), in.RefreshToken); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (h accountsAPI) handleMe(c echo.Context) error {
	u, err := h.svc.User(c.Request().Context(), currentUserID(c))
	if errors.Is(err, accounts.ErrUserNotFound) {
		// A valid token for a user that was deleted since.
		return unauthorized(c)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

func (h accountsAPI) handleListUsers(c echo.Context) error {
	r, err := page.FromQuery(c.QueryParams())
	if err != nil {
		return err
	}
	p, err := h.svc.ListUsers(c.Request().Context(), accounts.UserQuery{EmailContains: c.QueryParam("email"), Request: r})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

func (h accountsAPI) handleUpdateUser(c echo.Context) error {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return accounts.ErrUserNotFound
	}
	var in struct {
		IsOwner    *bool `json:"is_owner"`
		IsAdmin    *bool `json:"is_admin"`
		IsVerified *bool `json:"is_verified"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	u, err := h.svc.UpdateUser(c.Request().Context(), id, accounts.UserPatch{IsOwner: in.IsOwner, IsAdmin: in.IsAdmin, IsVerified: in.IsVerified})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}
