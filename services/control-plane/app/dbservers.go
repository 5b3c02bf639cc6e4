package app

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/services/control-plane/internal/dbservers"
)

// registerDBServerRoutes registers the platform admins' registry of
// tenant database servers.
func registerDBServerRoutes(e *echo.Echo, h dbServerAPI, mw middleware) {
	e.POST("/admin/db-servers", h.handleCreate, mw.requireAdmin)
	e.GET("/admin/db-servers", h.handleList, mw.requireAdmin)
	e.POST("/admin/db-servers/:id/drain", h.handleState(dbservers.StateDraining), mw.requireAdmin)
	e.POST("/admin/db-servers/:id/activate", h.handleState(dbservers.StateActive), mw.requireAdmin)
}

type dbServerAPI struct {
	servers *dbservers.Registry
}

// dbServerBody is a server as the API shows it: never its admin DSN.
type dbServerBody struct {
	ID         int64           `json:"id"`
	Name       string          `json:"name"`
	Host       string          `json:"host"`
	Port       int             `json:"port"`
	MaxTenants int             `json:"max_tenants"`
	Tenants    int             `json:"tenants"`
	State      dbservers.State `json:"state"`
}

func dbServerView(s dbservers.Server) dbServerBody {
	return dbServerBody{ID: s.ID, Name: s.Name, Host: s.Host, Port: s.Port, MaxTenants: s.MaxTenants, Tenants: s.Tenants, State: s.State}
}

func (h dbServerAPI) handleCreate(c echo.Context) error {
	var in struct {
		Name       string `json:"name"`
		AdminURL   string `json:"admin_url"`
		Host       string `json:"host"`
		Port       int    `json:"port"`
		MaxTenants int    `json:"max_tenants"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	ctx := c.Request().Context()
	s, err := h.servers.Register(ctx, dbservers.Registration{
		Name: in.Name, AdminURL: in.AdminURL, Host: in.Host, Port: in.Port, MaxTenants: in.MaxTenants,
	})
	if err != nil {
		return withOwnDetail(err)
	}
	httpx.Logger(ctx).Info("database server registered", "db_server_id", s.ID, "name", s.Name, "host", s.Host, "port", s.Port)
	return c.JSON(http.StatusCreated, dbServerView(s))
}

func (h dbServerAPI) handleList(c echo.Context) error {
	r, err := page.FromQuery(c.QueryParams())
	if err != nil {
		return err
	}
	if r, err = r.Normalize(); err != nil {
		return err
	}
	servers, err := h.servers.List(c.Request().Context(), r.Cursor, r.Limit+1)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page.Map(page.Of(servers, r.Limit, func(s dbservers.Server) int64 { return s.ID }), dbServerView))
}

func (h dbServerAPI) handleState(state dbservers.State) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := strconv.ParseInt(c.Param("id"), 10, 64)
		if err != nil || id < 1 {
			return dbservers.ErrNotFound
		}
		ctx := c.Request().Context()
		s, err := h.servers.SetState(ctx, id, state)
		if err != nil {
			return err
		}
		httpx.Logger(ctx).Info("database server state changed", "db_server_id", s.ID, "state", s.State)
		return c.JSON(http.StatusOK, dbServerView(s))
	}
}
