package app

import (
	"net/http"
	"slices"

	"tenantbase/libs/auth"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/problem"
	"tenantbase/services/tenant-plane/internal/accounts"
	"tenantbase/services/tenant-plane/internal/pools"
	"tenantbase/services/tenant-plane/internal/tenants"
)

// errorTable maps every domain error of the tenant plane to its problem;
// handlers just return errors. Temporary refusals say when to come back.
var errorTable = slices.Concat(problem.Common, problem.Table{
	{Err: tenants.ErrNotFound, Status: http.StatusNotFound, Code: "tenant_not_found"},
	{Err: tenants.ErrNotReady, Status: http.StatusServiceUnavailable, Code: "tenant_not_ready", RetryAfter: problem.RetryIn(5)},
	{Err: tenants.ErrFailed, Status: http.StatusServiceUnavailable, Code: "tenant_failed"},
	{Err: tenants.ErrSuspended, Status: http.StatusForbidden, Code: "tenant_suspended"},
	{Err: tenants.ErrMigrating, Status: http.StatusServiceUnavailable, Code: "tenant_migrating", RetryAfter: problem.RetryIn(5)},
	{Err: tenants.ErrMoving, Status: http.StatusServiceUnavailable, Code: "tenant_moving", RetryAfter: problem.RetryIn(2)},
	{Err: tenants.ErrUnavailable, Status: http.StatusServiceUnavailable, Code: "tenant_directory_unavailable", RetryAfter: problem.RetryIn(2)},
	{Err: pools.ErrBusy, Status: http.StatusServiceUnavailable, Code: "tenant_busy", RetryAfter: problem.RetryIn(1)},
	{Err: pools.ErrUnavailable, Status: http.StatusServiceUnavailable, Code: "tenant_database_unavailable", RetryAfter: problem.RetryIn(2)},
	// A connection the server ends (a restart, a failover) fails the
	// statement on it: the database is unavailable, no bug.
	{Match: pgutil.IsUnavailable, Status: http.StatusServiceUnavailable, Code: "tenant_database_unavailable",
		Detail: pools.ErrUnavailable.Error(), RetryAfter: problem.RetryIn(2)},
	{Err: accounts.ErrUnauthenticated, Status: http.StatusUnauthorized, Code: "unauthorized"},
	{Err: accounts.ErrEmailTaken, Status: http.StatusConflict, Code: "email_taken"},
	{Err: accounts.ErrUserNotFound, Status: http.StatusNotFound, Code: "user_not_found"},
	{Err: accounts.ErrUserInactive, Status: http.StatusForbidden, Code: "user_inactive"},
	{Err: accounts.ErrLastAdmin, Status: http.StatusConflict, Code: "last_admin"},
	{Err: accounts.ErrWrongPassword, Status: http.StatusForbidden, Code: "wrong_password"},
	{Err: auth.ErrInvalidCredentials, Status: http.StatusUnauthorized, Code: "invalid_credentials"},
	{Err: auth.ErrInvalidRefresh, Status: http.StatusUnauthorized, Code: "invalid_refresh_token"},
	{Err: auth.ErrBusy, Status: http.StatusServiceUnavailable, Code: "busy", RetryAfter: problem.RetryIn(1)},
})

var (
	errTenantHeader  = problem.New(http.StatusBadRequest, "tenant_header_invalid", "X-TENANT must be one positive integer: the organization id")
	errAdminRequired = problem.New(http.StatusForbidden, "admin_required", "this endpoint is for tenant admins")
)
