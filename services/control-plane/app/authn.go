package app

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/problem"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/audit"
)

const claimsKey = "core_claims"

var (
	errUnauthorized  = problem.New(http.StatusUnauthorized, "unauthorized", "a valid core access token is required")
	errAdminRequired = problem.New(http.StatusForbidden, "admin_required", "this endpoint is for platform admins")
	errServiceAuth   = problem.New(http.StatusUnauthorized, "unauthorized", "a valid service token is required")
)

// middleware authenticates callers: core users by access token, the tenant
// plane by the service token.
type middleware struct {
	keys         *auth.Keys
	accounts     *accounts.Service
	serviceToken string
}

// requireUser admits requests that carry a valid core access token
// (Authorization: Bearer ...) and keeps its claims for currentUser.
func (m middleware) requireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, ok := auth.BearerToken(c.Request())
		if !ok {
			return unauthorized(c)
		}
		var claims auth.CoreClaims
		if err := m.keys.Parse(token, auth.CoreAudience, &claims); err != nil {
			return unauthorized(c)
		}
		if _, err := subjectID(&claims); err != nil {
			return unauthorized(c)
		}
		c.Set(claimsKey, &claims)
		httpx.AddLogAttrs(c, "user_id", claims.Subject)
		id, _ := subjectID(&claims)
		r := c.Request()
		c.SetRequest(r.WithContext(audit.WithActor(r.Context(), id)))
		return next(c)
	}
}

func unauthorized(c echo.Context) error {
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="core"`)
	return errUnauthorized
}

// requireAdmin admits platform admins only. The token must say is_admin and
// the user row must still say so, so that a demoted admin loses access at
// once rather than when the token expires.
func (m middleware) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return m.requireUser(func(c echo.Context) error {
		claims := currentUser(c)
		if !claims.IsAdmin {
			return errAdminRequired
		}
		id, _ := subjectID(claims)
		u, err := m.accounts.User(c.Request().Context(), id)
		if errors.Is(err, accounts.ErrUserNotFound) {
			return unauthorized(c)
		}
		if err != nil {
			return err
		}
		if !u.IsAdmin {
			return errAdminRequired
		}
		return next(c)
	})
}

// requireService admits the tenant plane: Authorization: Bearer <SERVICE_TOKEN>.
func (m middleware) requireService(next echo.HandlerFunc) echo.HandlerFunc {
	// Digests have equal lengths, so the comparison time says nothing
	// about the token's length either.
	want := sha256.Sum256([]byte(m.serviceToken))
	configured := m.serviceToken != ""
	return func(c echo.Context) error {
		token, ok := auth.BearerToken(c.Request())
		got := sha256.Sum256([]byte(token))
		if !ok || !configured || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="internal"`)
			return errServiceAuth
		}
		return next(c)
	}
}

// currentUser is the verified caller of a route behind requireUser.
func currentUser(c echo.Context) *auth.CoreClaims {
	return c.Get(claimsKey).(*auth.CoreClaims)
}

// currentUserID is the id of the caller of a route behind requireUser.
func currentUserID(c echo.Context) int64 {
	id, _ := subjectID(currentUser(c))
	return id
}

func subjectID(claims *auth.CoreClaims) (int64, error) {
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id < 1 {
		return 0, errors.New("subject is not a user id")
	}
	return id, nil
}
