package app

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/problem"
	"tenantbase/services/tenant-plane/internal/accounts"
	"tenantbase/services/tenant-plane/internal/pools"
	"tenantbase/services/tenant-plane/internal/tenants"
)

// errorTable maps every domain error of the tenant plane to its problem;
// handlers just return errors.
var errorTable = problem.Table{
	{Err: tenants.ErrNotFound, Status: http.StatusNotFound, Code: "tenant_not_found"},
	{Err: tenants.ErrNotReady, Status: http.StatusServiceUnavailable, Code: "tenant_not_ready"},
	{Err: tenants.ErrFailed, Status: http.StatusServiceUnavailable, Code: "tenant_failed"},
	{Err: tenants.ErrSuspended, Status: http.StatusForbidden, Code: "tenant_suspended"},
	{Err: tenants.ErrUnavailable, Status: http.StatusServiceUnavailable, Code: "tenant_directory_unavailable"},
	{Err: pools.ErrBusy, Status: http.StatusServiceUnavailable, Code: "tenant_busy"},
	{Err: pools.ErrUnavailable, Status: http.StatusServiceUnavailable, Code: "tenant_database_unavailable"},
	{Err: accounts.ErrUnauthenticated, Status: http.StatusUnauthorized, Code: "unauthorized"},
	{Err: accounts.ErrEmailTaken, Status: http.StatusConflict, Code: "email_taken"},
	{Err: accounts.ErrUserNotFound, Status: http.StatusNotFound, Code: "user_not_found"},
	{Err: accounts.ErrUserInactive, Status: http.StatusForbidden, Code: "user_inactive"},
	{Err: accounts.ErrLastAdmin, Status: http.StatusConflict, Code: "last_admin"},
	{Err: accounts.ErrWrongPassword, Status: http.StatusForbidden, Code: "wrong_password"},
	{Err: auth.ErrInvalidCredentials, Status: http.StatusUnauthorized, Code: "invalid_credentials"},
	{Err: auth.ErrInvalidRefresh, Status: http.StatusUnauthorized, Code: "invalid_refresh_token"},
}

// retryAfter says when to come back after a temporary refusal, in seconds.
var retryAfter = []struct {
	err     error
	seconds int
}{
	{tenants.ErrNotReady, 5},
	{tenants.ErrUnavailable, 2},
	{pools.ErrBusy, 1},
	{pools.ErrUnavailable, 2},
}

var (
	errTenantHeader  = problem.New(http.StatusBadRequest, "tenant_header_invalid", "X-TENANT must be one positive integer: the organization id")
	errAdminRequired = problem.New(http.StatusForbidden, "admin_required", "this endpoint is for tenant admins")
)

// handleError adds Retry-After to temporary refusals and logs why a
// tenant could not be served, then renders as every service does. The
// cause of a 503 stays in the log: the client only learns its code.
func handleError(table problem.Table) echo.HTTPErrorHandler {
	render := httpx.ErrorHandler(table)
	return func(err error, c echo.Context) {
		if p, ok := table.Lookup(err); ok {
			for _, r := range retryAfter {
				if errors.Is(err, r.err) {
					p = p.WithRetryAfter(r.seconds)
				}
			}
			if p.Status >= http.StatusInternalServerError {
				httpx.Logger(c.Request().Context()).Warn("request refused", "code", p.Code, "error", err.Error())
			}
			err = p
		}
		render(err, c)
	}
}
