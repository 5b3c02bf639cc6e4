package app

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/services/control-plane/internal/accounts"
)

// registerAccountRoutes registers core users: registration, verification,
// login, tokens and the platform-admin user API.
func registerAccountRoutes(e *echo.Echo, h accountsAPI, mw middleware) {
	e.POST("/auth/register", h.handleRegister)
	e.GET("/auth/verify", h.handleVerifyLink)
	e.POST("/auth/verify", h.handleVerify)
	e.POST("/auth/verify/resend", h.handleResendVerification)
	e.POST("/auth/login", h.handleLogin)
	e.POST("/auth/refresh", h.handleRefresh)
	e.POST("/auth/logout", h.handleLogout)
	e.GET("/auth/me", h.handleMe, mw.requireUser)
	e.GET("/admin/users", h.handleListUsers, mw.requireAdmin)
	e.PATCH("/admin/users/:id", h.handleUpdateUser, mw.requireAdmin)
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

func (h accountsAPI) handleRefresh(c echo.Context) error {
	var in auth.RefreshRequest
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
	var in auth.RefreshRequest
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
		// Absent leaves the limit as it is; null resets it to the default.
		MaxOrganizations json.RawMessage `json:"max_organizations"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	patch := accounts.UserPatch{IsOwner: in.IsOwner, IsAdmin: in.IsAdmin, IsVerified: in.IsVerified}
	if in.MaxOrganizations != nil {
		patch.SetMaxOrganizations = true
		if string(in.MaxOrganizations) != "null" {
			var n int
			if err := json.Unmarshal(in.MaxOrganizations, &n); err != nil {
				return apperr.Invalid("max_organizations", "must be a whole number or null")
			}
			patch.MaxOrganizations = &n
		}
	}
	u, err := h.svc.UpdateUser(c.Request().Context(), id, patch)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}
