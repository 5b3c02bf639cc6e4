package app

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/apperr"
	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/libs/problem"
	"tenantbase/libs/tenantapi"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/provisioning"
	"tenantbase/services/control-plane/internal/secretbox"
)

var (
	errOwnerRequired  = errors.New("creating an organization takes an owner account")
	errTenantNotFound = problem.New(http.StatusNotFound, tenantapi.CodeNotFound, "no tenant with this id")
)

// registerOrganizationRoutes registers the organizations API and the
// platform admins' lifecycle operations.
func registerOrganizationRoutes(e *echo.Echo, h orgAPI, mw middleware) {
	e.POST("/organizations", h.handleCreate, mw.requireUser)
	e.GET("/organizations", h.handleList, mw.requireUser)
	e.GET("/organizations/:id", h.handleGet, mw.requireUser)
	e.DELETE("/organizations/:id", h.handleDelete, mw.requireUser)
	e.POST("/organizations/:id/retry", h.handleRetry, mw.requireUser)
	e.POST("/admin/organizations/:id/suspend", h.handleSuspend, mw.requireAdmin)
	e.POST("/admin/organizations/:id/resume", h.handleResume, mw.requireAdmin)
	e.POST("/admin/organizations/:id/move", h.handleMove, mw.requireAdmin)
	e.POST("/admin/organizations/:id/rotate-credentials", h.handleRotate, mw.requireAdmin)
}

// registerInternalRoutes registers the internal tenant API (tenantapi).
func registerInternalRoutes(e *echo.Echo, h internalAPI, mw middleware) {
	e.GET(tenantapi.PathPrefix+":id", h.handleTenant, mw.requireService)
}

type orgAPI struct {
	accounts *accounts.Service
	store    *organizations.Store
	servers  *dbservers.Registry
}

// orgBody is an organization as the public API shows it: never credentials.
type orgBody struct {
	ID            int64                `json:"id"`
	Name          string               `json:"name"`
	OwnerID       int64                `json:"owner_id"`
	Status        organizations.Status `json:"status"`
	StatusDetail  *string              `json:"status_detail"`
	SchemaVersion int                  `json:"schema_version"`
	CreatedAt     time.Time            `json:"created_at"`
	ReadyAt       *time.Time           `json:"ready_at"`
	UpdatedAt     time.Time            `json:"updated_at"`
}

// adminOrgBody is an organization as platform admins see it: also where
// its database lives (null until provisioning has placed it).
type adminOrgBody struct {
	orgBody
	DBServerID *int64 `json:"db_server_id"`
}

// viewFor shows o to a platform admin (admin) or to its owner.
func viewFor(admin bool) func(organizations.Organization) any {
	return func(o organizations.Organization) any {
		if !admin {
			return orgView(o)
		}
		return adminView(o)
	}
}

func adminView(o organizations.Organization) adminOrgBody {
	b := adminOrgBody{orgBody: orgView(o)}
	if o.ServerID != 0 {
		id := o.ServerID
		b.DBServerID = &id
	}
	return b
}

func orgView(o organizations.Organization) orgBody {
	b := orgBody{
		ID: o.ID, Name: o.Name, OwnerID: o.OwnerID, Status: o.Status, SchemaVersion: o.SchemaVersion,
		CreatedAt: o.CreatedAt.UTC(), UpdatedAt: o.UpdatedAt.UTC(),
	}
	if o.StatusDetail != "" {
		detail := o.StatusDetail
		b.StatusDetail = &detail
	}
	if o.ReadyAt != nil {
		t := o.ReadyAt.UTC()
		b.ReadyAt = &t
	}
	return b
}

// caller is the current user as the core database says now: flags in a
// token may be up to one token lifetime old.
func (o orgAPI) caller(c echo.Context) (accounts.User, error) {
	u, err := o.accounts.User(c.Request().Context(), currentUserID(c))
	if errors.Is(err, accounts.ErrUserNotFound) {
		return u, unauthorized(c)
	}
	return u, err
}

func (o orgAPI) handleCreate(c echo.Context) error {
	ctx := c.Request().Context()
	var in struct {
		Name    string `json:"name"`
		OwnerID *int64 `json:"owner_id"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	me, err := o.caller(c)
	if err != nil {
		return err
	}
	ownerID := me.ID
	if in.OwnerID != nil && *in.OwnerID != me.ID {
		if !me.IsAdmin {
			return errAdminRequired
		}
		if ownerID, err = o.otherOwner(ctx, *in.OwnerID); err != nil {
			return err
		}
	} else {
		if !me.IsOwner {
			return errOwnerRequired
		}
		if !me.IsVerified {
			return accounts.ErrEmailNotVerified
		}
	}
	name, err := organizations.NormalizeName(in.Name)
	if err != nil {
		return err
	}
	org, err := o.store.CreateWithin(ctx, name, func(tx pgx.Tx) (int64, int, error) {
		limit, err := o.accounts.LockQuota(ctx, tx, ownerID)
		return ownerID, limit, err
	})
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("organization created", "tenant_id", org.ID, "owner_id", ownerID)
	c.Response().Header().Set(echo.HeaderLocation, "/organizations/"+strconv.FormatInt(org.ID, 10))
	return c.JSON(http.StatusAccepted, viewFor(me.IsAdmin)(org))
}

// otherOwner checks the owner a platform admin names for a new organization.
func (o orgAPI) otherOwner(ctx context.Context, id int64) (int64, error) {
	u, err := o.accounts.User(ctx, id)
	switch {
	case errors.Is(err, accounts.ErrUserNotFound):
		return 0, apperr.Invalid("owner_id", "no such user")
	case err != nil:
		return 0, err
	case !u.IsOwner:
		return 0, apperr.Invalid("owner_id", "the user is not an owner")
	case !u.IsVerified:
		return 0, apperr.Invalid("owner_id", "the owner's email address is not verified")
	}
	return u.ID, nil
}

// errStatusFilter refuses a status filter that names no status.
func errStatusFilter() error {
	names := make([]string, len(tenantapi.Statuses))
	for i, s := range tenantapi.Statuses {
		names[i] = string(s)
	}
	return apperr.Invalid("status", "must be one of "+strings.Join(names, ", "))
}

func (o orgAPI) handleList(c echo.Context) error {
	me, err := o.caller(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	f := organizations.Filter{Status: organizations.Status(q.Get("status"))}
	if f.Status != "" && !slices.Contains(tenantapi.Statuses, f.Status) {
		return errStatusFilter()
	}
	r, err := page.FromQuery(q)
	if err != nil {
		return err
	}
	if r, err = r.Normalize(); err != nil {
		return err
	}
	f.Before, f.Limit = r.Cursor, r.Limit+1
	if !me.IsAdmin {
		f.OwnerID = me.ID
	}
	orgs, err := o.store.List(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page.Map(page.Of(orgs, r.Limit, func(org organizations.Organization) int64 { return org.ID }), viewFor(me.IsAdmin)))
}

// visible loads the organization of the :id path parameter if the caller
// may see it: its owner or a platform admin. Anyone else gets the same 404
// as for an id that does not exist, so ids of others cannot be probed.
func (o orgAPI) visible(c echo.Context) (organizations.Organization, accounts.User, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return organizations.Organization{}, accounts.User{}, organizations.ErrNotFound
	}
	me, err := o.caller(c)
	if err != nil {
		return organizations.Organization{}, me, err
	}
	org, err := o.store.Get(c.Request().Context(), id)
	if err != nil {
		return org, me, err
	}
	if org.OwnerID != me.ID && !me.IsAdmin {
		return organizations.Organization{}, me, organizations.ErrNotFound
	}
	return org, me, nil
}

func (o orgAPI) handleGet(c echo.Context) error {
	org, me, err := o.visible(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewFor(me.IsAdmin)(org))
}

func (o orgAPI) handleDelete(c echo.Context) error {
	return o.change(c, http.StatusAccepted, o.store.Delete)
}

func (o orgAPI) handleRetry(c echo.Context) error {
	return o.change(c, http.StatusAccepted, o.store.Retry)
}

func (o orgAPI) handleSuspend(c echo.Context) error {
	return o.change(c, http.StatusOK, o.store.Suspend)
}

func (o orgAPI) handleResume(c echo.Context) error {
	return o.change(c, http.StatusOK, o.store.Resume)
}

func (o orgAPI) change(c echo.Context, status int, fn func(context.Context, int64) (organizations.Organization, error)) error {
	org, me, err := o.visible(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	org, err = fn(ctx, org.ID)
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("organization status changed", "tenant_id", org.ID, "status", org.Status)
	return c.JSON(status, viewFor(me.IsAdmin)(org))
}

// handleMove starts moving a ready organization's database to another
// server: 202, status moving; the move runs in the background.
func (o orgAPI) handleMove(c echo.Context) error {
	var in struct {
		DBServerID *int64 `json:"db_server_id"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	if in.DBServerID == nil {
		return apperr.Invalid("db_server_id", "is required")
	}
	org, _, err := o.visible(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	org, err = o.store.StartMove(ctx, org.ID, func(ctx context.Context, tx pgx.Tx, org organizations.Organization) (int64, error) {
		s, err := o.servers.MoveTarget(ctx, tx, *in.DBServerID, org.ServerID)
		return s.ID, err
	})
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("organization move requested", "tenant_id", org.ID, "from_db_server_id", org.ServerID,
		"db_server_id", org.Move.To)
	return c.JSON(http.StatusAccepted, viewFor(true)(org))
}

// handleRotate asks for a new password of the tenant's login role: 202;
// the rotation runs in the background and ends with tenant.updated.
func (o orgAPI) handleRotate(c echo.Context) error {
	org, _, err := o.visible(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if org, err = o.store.RequestRotation(ctx, org.ID); err != nil {
		return err
	}
	httpx.Logger(ctx).Info("credential rotation requested", "tenant_id", org.ID)
	return c.JSON(http.StatusAccepted, viewFor(true)(org))
}

// internalAPI answers the tenant plane's lookups (tenantapi).
type internalAPI struct {
	store      *organizations.Store
	box        *secretbox.Box
	deployment string
}

func (h internalAPI) handleTenant(c echo.Context) error {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return errTenantNotFound
	}
	ctx := c.Request().Context()
	org, err := h.store.Get(ctx, id)
	if errors.Is(err, organizations.ErrNotFound) {
		return errTenantNotFound
	}
	if err != nil {
		return err
	}
	httpx.AddLogAttrs(c, "tenant_id", id)
	body := tenantapi.Tenant{ID: org.ID, Deployment: h.deployment, Status: org.Status, SchemaVersion: org.SchemaVersion}
	if org.Status.Serving() {
		creds, err := provisioning.OpenCredentials(h.box, org)
		if err != nil {
			return err
		}
		body.Database = &tenantapi.Database{Host: creds.Host, Port: creds.Port, Name: creds.Name, User: creds.User,
			Password: tenantapi.Password(creds.Password)}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, body)
}
