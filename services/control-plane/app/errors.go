package app

import (
	"errors"
	"net/http"
	"slices"

	"tenantbase/libs/auth"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/problem"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/fleet"
	"tenantbase/services/control-plane/internal/organizations"
)

// errorTable maps every domain error of the control plane to its problem;
// httpx.ErrorHandler renders it, so handlers just return errors.
var errorTable = slices.Concat(problem.Common, problem.Table{
	{Err: accounts.ErrEmailTaken, Status: http.StatusConflict, Code: "email_taken"},
	{Err: accounts.ErrEmailNotVerified, Status: http.StatusForbidden, Code: "email_not_verified"},
	{Err: accounts.ErrOwnerSignupRestricted, Status: http.StatusForbidden, Code: "owner_signup_restricted"},
	{Err: accounts.ErrTokenInvalid, Status: http.StatusBadRequest, Code: "token_invalid"},
	{Err: accounts.ErrTokenExpired, Status: http.StatusGone, Code: "token_expired"},
	{Err: accounts.ErrUserNotFound, Status: http.StatusNotFound, Code: "user_not_found"},
	{Err: accounts.ErrLastAdmin, Status: http.StatusConflict, Code: "last_admin"},
	{Err: accounts.ErrInvitationInvalid, Status: http.StatusBadRequest, Code: "token_invalid"},
	{Err: accounts.ErrInvitationExpired, Status: http.StatusGone, Code: "token_expired"},
	{Err: auth.ErrInvalidCredentials, Status: http.StatusUnauthorized, Code: "invalid_credentials"},
	{Err: auth.ErrInvalidRefresh, Status: http.StatusUnauthorized, Code: "invalid_refresh_token"},
	{Err: auth.ErrBusy, Status: http.StatusServiceUnavailable, Code: "busy", RetryAfter: problem.RetryIn(1)},
	{Err: organizations.ErrNotFound, Status: http.StatusNotFound, Code: "organization_not_found"},
	{Err: organizations.ErrInvalidStatus, Status: http.StatusConflict, Code: "invalid_status"},
	{Err: organizations.ErrQuotaExceeded, Status: http.StatusForbidden, Code: "quota_exceeded"},
	{Err: dbservers.ErrNotFound, Status: http.StatusNotFound, Code: "db_server_not_found"},
	{Err: dbservers.ErrExists, Status: http.StatusConflict, Code: "db_server_exists"},
	{Err: errOwnerRequired, Status: http.StatusForbidden, Code: "owner_required"},
	{Err: fleet.ErrNotFound, Status: http.StatusNotFound, Code: "migration_not_found"},
	{Err: fleet.ErrInProgress, Status: http.StatusConflict, Code: "migration_in_progress"},
	{Err: fleet.ErrFinished, Status: http.StatusConflict, Code: "migration_finished"},
	{Match: pgutil.IsUnavailable, Status: http.StatusServiceUnavailable, Code: "database_unavailable",
		Detail: "the core database is unreachable; try again shortly", RetryAfter: problem.RetryIn(2)},
})

// withOwnDetail answers the errors whose own text is the detail the caller
// needs, which the table does not show for errors it matches by type: a
// server that cannot be registered, with the cause (never a password).
func withOwnDetail(err error) error {
	var unreachable *dbservers.UnreachableError
	if errors.As(err, &unreachable) {
		return problem.New(http.StatusUnprocessableEntity, "db_server_unreachable", unreachable.Error())
	}
	return err
}
