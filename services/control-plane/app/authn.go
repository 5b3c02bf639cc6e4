package app

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/problem"
)

const claimsKey = "core_claims"

var errUnauthorized = problem.New(http.StatusUnauthorized, "unauthorized", "a valid core access token is required")

// requireUser admits requests that carry a valid core access token
// (Authorization: Bearer ...) and keeps its claims for currentUser.
func (d *deps) requireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, ok := auth.BearerToken(c.Request())
		if !ok {
			return errUnauthorized
		}
		var claims auth.CoreClaims
		if err := d.keys.Parse(token, auth.CoreAudience, &claims); err != nil {
			return errUnauthorized
		}
		c.Set(claimsKey, &claims)
		return next(c)
	}
}

// currentUser is the verified caller of a route behind requireUser.
func currentUser(c echo.Context) *auth.CoreClaims {
	return c.Get(claimsKey).(*auth.CoreClaims)
}
