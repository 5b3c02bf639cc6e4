package app

import (
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/tenantdb"
	"tenantbase/services/tenant-plane/internal/accounts"
	"tenantbase/services/tenant-plane/internal/pools"
	"tenantbase/services/tenant-plane/internal/tenants"
)

// HeaderTenant names the organization a request is for.
const HeaderTenant = "X-Tenant"

const (
	scopeKey   = "tenant_scope"
	accountKey = "tenant_account"
)

// scope is the tenant a request is for, its database and the schema
// version the control plane recorded for it.
type scope struct {
	tenantID      int64
	schemaVersion int
	db            *tenantDB
}

// requireTenant admits requests whose X-TENANT names a ready (or moving)
// tenant at a schema version the handlers work with, and keeps the
// tenant's database for the handlers. A tenant above the minimum is served
// (its newer columns go unused); one below it is being migrated: 503, come
// back soon. The header must appear
// once: an ingress that routes on the first of several values must not
// send a request here that the plane reads as another tenant's.
func (a *api) requireTenant(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		values := c.Request().Header.Values(HeaderTenant)
		if len(values) != 1 {
			return errTenantHeader
		}
		id, ok := tenants.ParseID(values[0])
		if !ok {
			return errTenantHeader
		}
		httpx.AddLogAttrs(c, "tenant_id", id)
		t, err := a.resolver.Resolve(c.Request().Context(), id)
		if err != nil {
			return err
		}
		if err := tenants.Usable(t); err != nil {
			return err
		}
		if t.SchemaVersion < a.minSchema {
			return tenants.ErrMigrating
		}
		r := c.Request()
		c.SetRequest(r.WithContext(accounts.WithAudit(r.Context(), tenantdb.HasAudit(t.SchemaVersion))))
		c.Set(scopeKey, scope{tenantID: id, schemaVersion: t.SchemaVersion, db: a.tenantDB(t)})
		if err := next(c); err != nil {
			return a.writeRefused(t, err)
		}
		return nil
	}
}

// writeRefused answers tenant_moving for a write the tenant's database
// refused as read-only: its database is moving to another server (the
// source refuses writes from the start of the copy on, and forever after
// the switch). When the plane still thought the tenant ready, it missed
// the event: the tenant is looked up again and its pool replaced, so the
// next request reaches the tenant where it is now. While a tenant moves,
// a connection the control plane ended (a replica that kept connections
// from before the move) means the same.
func (a *api) writeRefused(t tenants.Tenant, err error) error {
	readOnly := pgutil.Code(err) == pgerrcode.ReadOnlySQLTransaction
	switch {
	case readOnly && t.Status != tenantapi.StatusMoving:
		a.resolver.Expire(t.ID)
		a.pools.Retire(t.ID)
	case readOnly:
	case t.Status == tenantapi.StatusMoving && (pgutil.IsUnavailable(err) || errors.Is(err, pools.ErrUnavailable)):
	default:
		return err
	}
	return fmt.Errorf("%w (%w)", tenants.ErrMoving, err)
}

// requireUser admits requests with a valid access token of the request's
// tenant (behind requireTenant) and keeps the user's current row.
func (a *api) requireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return a.requireTenant(func(c echo.Context) error {
		token, ok := auth.BearerToken(c.Request())
		if !ok {
			return unauthorized(c)
		}
		s := tenantScope(c)
		acc, err := a.accounts.Authenticate(c.Request().Context(), s.db, s.tenantID, token)
		if err != nil {
			if errors.Is(err, accounts.ErrUnauthenticated) {
				return unauthorized(c)
			}
			return err
		}
		httpx.AddLogAttrs(c, "user_id", acc.ID)
		r := c.Request()
		c.SetRequest(r.WithContext(accounts.WithActor(r.Context(), acc.ID)))
		c.Set(accountKey, acc)
		return next(c)
	})
}

// requireAdmin admits the tenant's admins, as their row says now.
func (a *api) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return a.requireUser(func(c echo.Context) error {
		if currentAccount(c).Role != accounts.RoleAdmin {
			return errAdminRequired
		}
		return next(c)
	})
}

func unauthorized(c echo.Context) error {
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="tenant"`)
	return accounts.ErrUnauthenticated
}

func tenantScope(c echo.Context) scope { return c.Get(scopeKey).(scope) }

func currentAccount(c echo.Context) accounts.Account { return c.Get(accountKey).(accounts.Account) }
