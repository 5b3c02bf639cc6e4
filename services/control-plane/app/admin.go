package app

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/apperr"
	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/libs/tenantapi"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/audit"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/provisioning"
)

// recentAttempts is how many provisioning attempts the fleet view shows.
const recentAttempts = 20

// registerAdminRoutes registers the platform admins' fleet operations
// (onboarding, the fleet views, retry and deletion of any organization)
// and the audit log, for admins and for owners of their organizations.
func registerAdminRoutes(e *echo.Echo, h adminAPI, mw middleware) {
	e.POST("/admin/organizations", h.handleOnboard, mw.requireAdmin)
	e.GET("/admin/organizations", h.handleFleet, mw.requireAdmin)
	e.GET("/admin/organizations/:id", h.handleFleetOrganization, mw.requireAdmin)
	e.DELETE("/admin/organizations/:id", h.handleDelete, mw.requireAdmin)
	e.POST("/admin/organizations/:id/retry", h.handleRetry, mw.requireAdmin)
	e.GET("/admin/audit", h.handleAudit, mw.requireAdmin)
	e.GET("/organizations/:id/audit", h.handleOrganizationAudit, mw.requireUser)
}

type adminAPI struct {
	orgAPI
	db *pgxpool.Pool
}

// handleOnboard creates an organization for the owner with owner_email: a
// known user becomes its owner, an unknown email gets an account and an
// invitation. The owner, the quota check under the owner's row lock, the
// organization and its provisioning job commit together; the invitation
// is mailed after the commit.
func (h adminAPI) handleOnboard(c echo.Context) error {
	ctx := c.Request().Context()
	var in struct {
		Name       string `json:"name"`
		OwnerEmail string `json:"owner_email"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	name, err := organizations.NormalizeName(in.Name)
	if in.OwnerEmail == "" {
		err = apperr.Join(err, apperr.Invalid("owner_email", "is required"))
	}
	if err != nil {
		return err
	}
	var owner accounts.Owner
	org, err := h.store.CreateWithin(ctx, name, func(tx pgx.Tx) (int64, int, error) {
		var err error
		if owner, err = h.accounts.PrepareOwner(ctx, tx, in.OwnerEmail); err != nil {
			return 0, 0, err
		}
		limit, err := h.accounts.LockQuota(ctx, tx, owner.ID)
		return owner.ID, limit, err
	})
	if err != nil {
		return err
	}
	h.accounts.SendInvitation(ctx, owner, org.Name)
	httpx.Logger(ctx).Info("organization onboarded", "tenant_id", org.ID, "owner_id", owner.ID,
		"owner_created", owner.Created, "invited", owner.Invited())
	c.Response().Header().Set(echo.HeaderLocation, "/organizations/"+strconv.FormatInt(org.ID, 10))
	return c.JSON(http.StatusAccepted, orgView(org))
}

// handleFleet lists every organization, newest first.
func (h adminAPI) handleFleet(c echo.Context) error {
	q := c.QueryParams()
	f := organizations.Filter{Status: organizations.Status(q.Get("status")), NameContains: strings.TrimSpace(q.Get("q"))}
	var errs []error
	if f.Status != "" && !slices.Contains(tenantapi.Statuses, f.Status) {
		errs = append(errs, errStatusFilter())
	}
	if v := q.Get("owner_id"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 1 {
			errs = append(errs, apperr.Invalid("owner_id", "must be a user id"))
		}
		f.OwnerID = id
	}
	if utf8.RuneCountInString(f.NameContains) > organizations.MaxNameLength || !utf8.ValidString(f.NameContains) {
		errs = append(errs, apperr.Invalid("q", "must be text of at most 100 characters"))
	}
	r, err := page.FromQuery(q)
	if err == nil {
		r, err = r.Normalize()
	}
	if err := apperr.Join(append(errs, err)...); err != nil {
		return err
	}
	f.Before, f.Limit = r.Cursor, r.Limit+1
	orgs, err := h.store.List(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page.Map(page.Of(orgs, r.Limit, func(org organizations.Organization) int64 { return org.ID }), adminView))
}

// fleetBody is an organization as the fleet view shows it to admins.
type fleetBody struct {
	adminOrgBody
	Owner                ownerBody              `json:"owner"`
	DatabaseServer       *serverBody            `json:"database_server"`
	ProvisioningAttempts []provisioning.Attempt `json:"provisioning_attempts"`
}

type ownerBody struct {
	ID    int64  `json:"id"`
	Email string `json:"email"`
}

// serverBody is where a tenant database lives, without credentials: the
// registered server and the database's name on it.
type serverBody struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Database string `json:"database"`
}

// serverView is the database server of org's view: the registered server
// it is placed on (during a move, still the source) and its database
// there; nil until provisioning placed it.
func (h adminAPI) serverView(ctx context.Context, org organizations.Organization) (*serverBody, error) {
	if org.ServerID == 0 {
		return nil, nil
	}
	s, err := h.servers.Get(ctx, org.ServerID)
	if err != nil {
		return nil, err
	}
	d := org.Database
	host, port := d.Host, d.Port
	if host == "" {
		host, port = s.Host, s.Port
	}
	return &serverBody{ID: s.ID, Name: s.Name, Host: host, Port: port, Database: d.Name}, nil
}

func (h adminAPI) handleFleetOrganization(c echo.Context) error {
	org, _, err := h.visible(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	server, err := h.serverView(ctx, org)
	if err != nil {
		return err
	}
	owner, err := h.accounts.User(ctx, org.OwnerID)
	if err != nil {
		return err
	}
	attempts, err := provisioning.Attempts(ctx, h.db, org.ID, recentAttempts)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, fleetBody{
		adminOrgBody:         adminView(org),
		Owner:                ownerBody{ID: owner.ID, Email: owner.Email},
		DatabaseServer:       server,
		ProvisioningAttempts: attempts,
	})
}

// handleAudit lists the audit log for platform admins, newest first.
func (h adminAPI) handleAudit(c echo.Context) error {
	q := c.QueryParams()
	f := audit.Filter{TargetType: q.Get("target_type"), TargetID: q.Get("target_id"), Action: q.Get("action")}
	var errs []error
	if f.TargetType != "" && !slices.Contains(audit.TargetTypes, f.TargetType) {
		errs = append(errs, apperr.Invalid("target_type", "must be one of "+strings.Join(audit.TargetTypes, ", ")))
	}
	if v := q.Get("actor_id"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id < 1 {
			errs = append(errs, apperr.Invalid("actor_id", "must be a user id"))
		}
		f.ActorID = id
	}
	r, err := page.FromQuery(q)
	if err := apperr.Join(append(errs, err)...); err != nil {
		return err
	}
	f.Request = r
	p, err := audit.List(c.Request().Context(), h.db, f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}

// handleOrganizationAudit lists the entries about one organization, for
// its owner and platform admins.
func (h adminAPI) handleOrganizationAudit(c echo.Context) error {
	org, _, err := h.visible(c)
	if err != nil {
		return err
	}
	r, err := page.FromQuery(c.QueryParams())
	if err != nil {
		return err
	}
	p, err := audit.List(c.Request().Context(), h.db, audit.Filter{
		TargetType: audit.TargetOrganization, TargetID: audit.ID(org.ID), Request: r,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, p)
}
