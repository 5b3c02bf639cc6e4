package app

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/services/control-plane/internal/fleet"
)

// registerMigrationRoutes registers the platform admins' migration runs,
// which move tenant databases to another schema version.
func registerMigrationRoutes(e *echo.Echo, h migrationAPI, mw middleware) {
	e.POST("/admin/migrations", h.handleCreate, mw.requireAdmin)
	e.GET("/admin/migrations", h.handleList, mw.requireAdmin)
	e.GET("/admin/migrations/:id", h.handleGet, mw.requireAdmin)
	e.GET("/admin/migrations/:id/tenants", h.handleTenants, mw.requireAdmin)
	e.POST("/admin/migrations/:id/resume", h.handleResume, mw.requireAdmin)
	e.POST("/admin/migrations/:id/pause", h.handlePause, mw.requireAdmin)
	e.POST("/admin/migrations/:id/cancel", h.handleCancel, mw.requireAdmin)
}

type migrationAPI struct {
	svc *fleet.Service
}

type runBody struct {
	ID            int64              `json:"id"`
	Status        fleet.Status       `json:"status"`
	TargetVersion int                `json:"target_version"`
	Canary        int                `json:"canary"`
	Concurrency   int                `json:"concurrency"`
	OnError       fleet.OnError      `json:"on_error"`
	StartedAt     time.Time          `json:"started_at"`
	FinishedAt    *time.Time         `json:"finished_at"`
	Counts        countsBody         `json:"counts"`
	Failed        []failedTenantBody `json:"failed"`
}

type countsBody struct {
	Pending int `json:"pending"`
	Running int `json:"running"`
	Done    int `json:"done"`
	Skipped int `json:"skipped"`
	Failed  int `json:"failed"`
}

type failedTenantBody struct {
	TenantID    int64  `json:"tenant_id"`
	FromVersion int    `json:"from_version"`
	Error       string `json:"error"`
}

func runView(r fleet.Run) runBody {
	b := runBody{
		ID: r.ID, Status: r.Status, TargetVersion: r.TargetVersion, Canary: r.Canary, Concurrency: r.Concurrency,
		OnError: r.OnError, StartedAt: r.StartedAt.UTC(), FinishedAt: utc(r.FinishedAt),
		Counts: countsBody{Pending: r.Counts.Pending, Running: r.Counts.Running, Done: r.Counts.Done,
			Skipped: r.Counts.Skipped, Failed: r.Counts.Failed},
		Failed: make([]failedTenantBody, 0, len(r.Failed)),
	}
	for _, t := range r.Failed {
		b.Failed = append(b.Failed, failedTenantBody{TenantID: t.TenantID, FromVersion: t.FromVersion, Error: t.Error})
	}
	return b
}

type runTenantBody struct {
	TenantID      int64       `json:"tenant_id"`
	State         fleet.State `json:"state"`
	Canary        bool        `json:"canary"`
	Server        string      `json:"server"`
	FromVersion   int         `json:"from_version"`
	SchemaVersion int         `json:"schema_version"`
	Error         *string     `json:"error"`
	Attempts      int         `json:"attempts"`
	StartedAt     *time.Time  `json:"started_at"`
	FinishedAt    *time.Time  `json:"finished_at"`
}

func runTenantView(t fleet.Tenant) runTenantBody {
	b := runTenantBody{TenantID: t.TenantID, State: t.State, Canary: t.Canary, Server: t.Server, FromVersion: t.FromVersion,
		SchemaVersion: t.SchemaVersion, Attempts: t.Attempts, StartedAt: utc(t.StartedAt), FinishedAt: utc(t.FinishedAt)}
	if t.Error != "" {
		e := t.Error
		b.Error = &e
	}
	return b
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func (h migrationAPI) handleCreate(c echo.Context) error {
	var in struct {
		TargetVersion *int          `json:"target_version"`
		TenantIDs     []int64       `json:"tenant_ids"`
		Canary        *int          `json:"canary"`
		Concurrency   *int          `json:"concurrency"`
		OnError       fleet.OnError `json:"on_error"`
	}
	if err := httpx.Bind(c, &in); err != nil {
		return err
	}
	ctx := c.Request().Context()
	run, err := h.svc.Create(ctx, fleet.Request{TargetVersion: in.TargetVersion, TenantIDs: in.TenantIDs,
		Canary: in.Canary, Concurrency: in.Concurrency, OnError: in.OnError})
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("migration run started", "run_id", run.ID, "target_version", run.TargetVersion,
		"tenants", run.Counts.Pending+run.Counts.Running, "skipped", run.Counts.Skipped)
	c.Response().Header().Set(echo.HeaderLocation, "/admin/migrations/"+strconv.FormatInt(run.ID, 10))
	return c.JSON(http.StatusAccepted, runView(run))
}

func (h migrationAPI) handleList(c echo.Context) error {
	r, err := page.FromQuery(c.QueryParams())
	if err != nil {
		return err
	}
	p, err := h.svc.List(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page.Map(p, runView))
}

// runID reads the :id path parameter; anything but a positive integer is
// a run that does not exist.
func runID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return 0, fleet.ErrNotFound
	}
	return id, nil
}

func (h migrationAPI) handleGet(c echo.Context) error {
	return h.one(c, http.StatusOK, h.svc.Get)
}

func (h migrationAPI) handleTenants(c echo.Context) error {
	id, err := runID(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	r, err := page.FromQuery(q)
	if err != nil {
		return err
	}
	p, err := h.svc.Tenants(c.Request().Context(), id, fleet.State(q.Get("state")), r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page.Map(p, runTenantView))
}

func (h migrationAPI) handleResume(c echo.Context) error {
	return h.one(c, http.StatusAccepted, h.svc.Resume)
}

func (h migrationAPI) handlePause(c echo.Context) error {
	return h.one(c, http.StatusOK, h.svc.Pause)
}

func (h migrationAPI) handleCancel(c echo.Context) error {
	return h.one(c, http.StatusOK, h.svc.Cancel)
}

// one answers with run :id after fn.
func (h migrationAPI) one(c echo.Context, status int, fn func(context.Context, int64) (fleet.Run, error)) error {
	id, err := runID(c)
	if err != nil {
		return err
	}
	run, err := fn(c.Request().Context(), id)
	if err != nil {
		return err
	}
	if c.Request().Method != http.MethodGet {
		httpx.Logger(c.Request().Context()).Info("migration run steered", "run_id", id, "status", run.Status)
	}
	return c.JSON(status, runView(run))
}
