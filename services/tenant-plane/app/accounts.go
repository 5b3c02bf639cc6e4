package app

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/libs/tenantdb"
	"tenantbase/services/tenant-plane/internal/accounts"
)

// registerAccountRoutes registers the tenant users' API; every route needs X-TENANT.
func (a *api) registerAccountRoutes(e *echo.Echo) {
	e.POST("/auth/register", a.handleRegister, a.requireTenant)
	e.POST("/auth/login", a.handleLogin, a.requireTenant)
	e.POST("/auth/refresh", a.handleRefresh, a.requireTenant)
	e.POST("/auth/logout", a.handleLogout, a.requireTenant)
	e.GET("/profile", a.handleGetProfile, a.requireUser)
	e.PATCH("/profile", a.handleUpdateProfile, a.requireUser)
	e.POST("/profile/password", a.handleChangePassword, a.requireUser)
	e.GET("/users", a.handleListUsers, a.requireAdmin)
	e.PATCH("/users/:id", a.handleUpdateUser, a.requireAdmin)
	e.GET("/audit", a.handleAudit, a.requireAdmin)
}

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (a *api) handleRegister(c echo.Context) error {
	var in credentials
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	u, err := a.accounts.Register(c.Request().Context(), tenantScope(c).db, in.Email, in.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, u)
}

func (a *api) handleLogin(c echo.Context) error {
	var in credentials
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	s := tenantScope(c)
	t, err := a.accounts.Login(c.Request().Context(), s.db, s.tenantID, s.schemaVersion, in.Email, in.Password)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

func (a *api) handleRefresh(c echo.Context) error {
	var in auth.RefreshRequest
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	s := tenantScope(c)
	t, err := a.accounts.Refresh(c.Request().Context(), s.db, s.tenantID, in.RefreshToken)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

func (a *api) handleLogout(c echo.Context) error {
	var in auth.RefreshRequest
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	if err := a.accounts.Logout(c.Request().Context(), tenantScope(c).db, in.RefreshToken); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// handleGetProfile answers from the row requireUser loaded: one query per request.
func (a *api) handleGetProfile(c echo.Context) error {
	return c.JSON(http.StatusOK, accounts.ProfileOf(currentAccount(c)))
}

func (a *api) handleUpdateProfile(c echo.Context) error {
	var in accounts.ProfilePatch
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	p, err := a.accounts.UpdateProfile(c.Request().Context(), tenantScope(c).db, currentAccount(c).ID, in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

func (a *api) handleChangePassword(c echo.Context) error {
	var in struct {
		CurrentPassword string `json:"current_password"`
		NewPassword     string `json:"new_password"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	s := tenantScope(c)
	t, err := a.accounts.ChangePassword(c.Request().Context(), s.db, s.tenantID, currentAccount(c), in.CurrentPassword, in.NewPassword)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
}

func (a *api) handleListUsers(c echo.Context) error {
	r, err := page.FromQuery(c.QueryParams())
	if err != nil {
		return err
	}
	p, err := a.accounts.ListUsers(c.Request().Context(), tenantScope(c).db, accounts.UserQuery{EmailContains: c.QueryParam("email"), Request: r})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

func (a *api) handleUpdateUser(c echo.Context) error {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return accounts.ErrUserNotFound
	}
	var in struct {
		IsActive *bool   `json:"is_active"`
		Role     *string `json:"role"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	u, err := a.accounts.UpdateUser(c.Request().Context(), tenantScope(c).db, id, accounts.UserPatch{IsActive: in.IsActive, Role: in.Role})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, u)
}

// handleAudit lists the tenant's user-management audit log for its admins.
func (a *api) handleAudit(c echo.Context) error {
	q := c.QueryParams()
	r, err := page.FromQuery(q)
	var f tenantdb.AuditFilter
	f.Action = q.Get("action")
	errs := []error{err}
	for name, dst := range map[string]*int64{"actor_id": &f.ActorID, "target_id": &f.TargetID} {
		if v := q.Get(name); v != "" {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id < 1 {
				errs = append(errs, apperr.Invalid(name, "must be a user id"))
			}
			*dst = id
		}
	}
	if err := apperr.Join(errs...); err != nil {
		return err
	}
	p, err := a.accounts.Audit(c.Request().Context(), tenantScope(c).db, accounts.AuditQuery{AuditFilter: f, Request: r})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}
