package app

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/auth"
	"tenantbase/libs/httpx"
	"tenantbase/libs/page"
	"tenantbase/libs/problem"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/natsbus"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/outbox"
	"tenantbase/services/control-plane/internal/provisioning"
	"tenantbase/services/control-plane/internal/secretbox"
)

// organizationErrors are the organization rules of errorTable.
var organizationErrors = problem.Table{
	{Err: organizations.ErrNotFound, Status: http.StatusNotFound, Code: "organization_not_found"},
	{Err: organizations.ErrInvalidStatus, Status: http.StatusConflict, Code: "invalid_status"},
	{Err: errOwnerRequired, Status: http.StatusForbidden, Code: "owner_required"},
}

var (
	errOwnerRequired  = errors.New("creating an organization takes an owner account")
	errTenantNotFound = problem.New(http.StatusNotFound, "tenant_not_found", "no tenant with this id")
	errServiceAuth    = problem.New(http.StatusUnauthorized, "unauthorized", "a valid service token is required")
)

// mountOrganizations registers organizations, provisioning, the internal
// tenant API and the core password change (which reaches into tenant
// databases), and returns the background work (job workers, outbox relay)
// that runs until its context is cancelled.
func mountOrganizations(ctx context.Context, d *deps) (func(context.Context) error, error) {
	cfg := d.cfg
	switch {
	case cfg.ProvisionMaxAttempts < 1:
		return nil, errors.New("config: PROVISION_MAX_ATTEMPTS must be at least 1")
	case cfg.JobTimeout <= 0 || cfg.JobRescueAfter < cfg.JobTimeout:
		return nil, errors.New("config: JOB_TIMEOUT must be positive and JOB_RESCUE_AFTER at least JOB_TIMEOUT")
	case cfg.ProvisionRetryBackoff <= 0:
		return nil, errors.New("config: PROVISION_RETRY_BACKOFF must be positive")
	}
	if err := provisioning.CheckAdminDSN(tenantAdminDSN(cfg)); err != nil {
		return nil, fmt.Errorf("config: TENANT_DB_ADMIN_URL (or DATABASE_URL): %w", err)
	}
	key, err := secretbox.LoadKey(cfg.CredentialsKey.Reveal(), cfg.KeysDir, "credentials")
	if err != nil {
		return nil, err
	}
	box, err := secretbox.New(key)
	if err != nil {
		return nil, err
	}
	if err := provisioning.RestrictDatabase(ctx, d.pool); err != nil {
		return nil, fmt.Errorf("close the core database to tenant roles: %w", err)
	}
	jobs, err := provisioning.NewJobs(d.pool, cfg.ProvisionMaxAttempts)
	if err != nil {
		return nil, err
	}
	d.jobs = jobs
	store := organizations.NewStore(d.pool, jobs, d.deployment)
	o := orgAPI{d: d, store: store, box: box}

	d.public.POST("/organizations", o.handleCreate, d.requireUser)
	d.public.GET("/organizations", o.handleList, d.requireUser)
	d.public.GET("/organizations/:id", o.handleGet, d.requireUser)
	d.public.DELETE("/organizations/:id", o.handleDelete, d.requireUser)
	d.public.POST("/organizations/:id/retry", o.handleRetry, d.requireUser)
	d.public.POST("/admin/organizations/:id/suspend", o.handleSuspend, d.requireAdmin)
	d.public.POST("/admin/organizations/:id/resume", o.handleResume, d.requireAdmin)
	d.internal.GET("/internal/tenants/:id", o.handleInternalTenant, d.requireService)
	// A core password change fans out to the owner's tenant databases.
	d.public.POST("/auth/password", d.handleChangePassword, d.requireUser)

	return func(ctx context.Context) error { return runOrganizations(ctx, d, store, jobs, box) }, nil
}

// tenantAdminDSN is the connection that creates tenant roles and databases.
func tenantAdminDSN(cfg Config) string {
	return cmp.Or(cfg.TenantDBAdminURL.Reveal(), cfg.DatabaseURL.Reveal())
}

// ownerPasswordChanged keeps the owner's tenant-admin rows following their
// core password: call it in the transaction that stores the new hash.
func (d *deps) ownerPasswordChanged(ctx context.Context, tx pgx.Tx, userID int64) error {
	return d.jobs.EnqueueOwnerPasswordSync(ctx, tx, userID)
}

// runOrganizations runs the job workers and the event relay until ctx is
// cancelled. Neither needs NATS to start: events wait in the outbox.
func runOrganizations(ctx context.Context, d *deps, store *organizations.Store, jobs *provisioning.Jobs, box *secretbox.Box) error {
	cfg := d.cfg
	beforeStep := cfg.beforeProvisionStep
	if cfg.ProvisionStepDelay > 0 {
		inner := beforeStep
		beforeStep = func(ctx context.Context, orgID int64, step string) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(cfg.ProvisionStepDelay):
			}
			if inner != nil {
				return inner(ctx, orgID, step)
			}
			return nil
		}
	}
	prov, err := provisioning.New(ctx, d.pool, store, jobs, box, provisioning.Options{
		Deployment: d.deployment,
		CoreDSN:    cfg.DatabaseURL.Reveal(),
		AdminDSN:   tenantAdminDSN(cfg),
		Host:       cfg.TenantDBHost,
		Port:       cfg.TenantDBPort,
		BeforeStep: beforeStep,
	}, d.log)
	if err != nil {
		return err
	}
	defer prov.Close()
	runner, err := provisioning.NewRunner(d.pool, prov, provisioning.RunnerOptions{
		Workers:      cfg.Workers,
		MaxAttempts:  cfg.ProvisionMaxAttempts,
		RetryBackoff: cfg.ProvisionRetryBackoff,
		JobTimeout:   cfg.JobTimeout,
		RescueAfter:  cfg.JobRescueAfter,
		StopTimeout:  cfg.ShutdownTimeout,
	}, d.log)
	if err != nil {
		return err
	}
	bus, err := natsbus.Connect(cfg.NATSURL, "control-plane", natsbus.StreamOptions{
		Channel: cfg.eventChannel(), MaxAge: cfg.EventsMaxAge, Replicas: cfg.EventsReplicas,
	}, d.log.With("component", "events"), cfg.natsLogin()...)
	if err != nil {
		return err
	}
	defer bus.Close()
	ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := bus.EnsureStream(ectx); err != nil {
		d.log.Warn("event stream not ready yet; events wait in the outbox", "error", err.Error())
	}
	cancel()
	relay := &outbox.Relay{
		Pool:      d.pool,
		DSN:       cfg.DatabaseURL.Reveal(),
		Publisher: bus,
		Log:       d.log.With("component", "events"),
		Retention: cfg.EventsMaxAge,
	}

	// Jobs drop and change tenant objects only when they carry their tag,
	// so the objects of tenants provisioned before tags get theirs first.
	runJobs := func(ctx context.Context) error {
		if err := tagLegacy(ctx, prov, d.log); err != nil {
			return nil
		}
		return runner.Run(ctx)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, run := range []func(context.Context) error{runJobs, relay.Run} {
		wg.Go(func() {
			if errs[i] = run(ctx); errs[i] != nil {
				d.log.Error("background work stopped", "error", errs[i].Error())
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// tagLegacy runs prov.TagLegacy until it succeeds, retrying while the
// tenant database server cannot be reached; it fails only when ctx ends.
func tagLegacy(ctx context.Context, prov *provisioning.Provisioner, log *slog.Logger) error {
	wait := time.Second
	for {
		err := prov.TagLegacy(ctx)
		if err == nil {
			return nil
		}
		log.Error("tagging tenants provisioned before tags failed; jobs wait", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// requireService admits the tenant plane: Authorization: Bearer <SERVICE_TOKEN>.
func (d *deps) requireService(next echo.HandlerFunc) echo.HandlerFunc {
	// Digests have equal lengths, so the comparison time says nothing
	// about the token's length either.
	want := sha256.Sum256([]byte(d.cfg.ServiceToken.Reveal()))
	configured := d.cfg.ServiceToken != ""
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

type orgAPI struct {
	d     *deps
	store *organizations.Store
	box   *secretbox.Box
}

// orgBody is an organization as the public API shows it: never credentials.
type orgBody struct {
	ID            int64      `json:"id"`
	Name          string     `json:"name"`
	OwnerID       int64      `json:"owner_id"`
	Status        string     `json:"status"`
	StatusDetail  *string    `json:"status_detail"`
	SchemaVersion int        `json:"schema_version"`
	CreatedAt     time.Time  `json:"created_at"`
	ReadyAt       *time.Time `json:"ready_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
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
	u, err := o.d.accounts.User(c.Request().Context(), currentUserID(c))
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
	org, err := o.store.Create(ctx, name, ownerID)
	if err != nil {
		return err
	}
	httpx.Logger(ctx).Info("organization created", "tenant_id", org.ID, "owner_id", ownerID)
	c.Response().Header().Set(echo.HeaderLocation, "/organizations/"+strconv.FormatInt(org.ID, 10))
	return c.JSON(http.StatusAccepted, orgView(org))
}

// otherOwner checks the owner a platform admin names for a new organization.
func (o orgAPI) otherOwner(ctx context.Context, id int64) (int64, error) {
	u, err := o.d.accounts.User(ctx, id)
	switch {
	case errors.Is(err, accounts.ErrUserNotFound):
		return 0, problem.Invalid("owner_id", "no such user")
	case err != nil:
		return 0, err
	case !u.IsOwner:
		return 0, problem.Invalid("owner_id", "the user is not an owner")
	case !u.IsVerified:
		return 0, problem.Invalid("owner_id", "the owner's email address is not verified")
	}
	return u.ID, nil
}

func (o orgAPI) handleList(c echo.Context) error {
	me, err := o.caller(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	f := organizations.Filter{Status: q.Get("status")}
	if f.Status != "" && !slices.Contains(organizations.Statuses, f.Status) {
		return problem.Invalid("status", "must be one of provisioning, ready, failed, suspended, deleting, deleted")
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
	return c.JSON(http.StatusOK, page.Map(page.Of(orgs, r.Limit, func(org organizations.Organization) int64 { return org.ID }), orgView))
}

// visible loads the organization of the :id path parameter if the caller
// may see it: its owner or a platform admin. Anyone else gets the same 404
// as for an id that does not exist, so ids of others cannot be probed.
func (o orgAPI) visible(c echo.Context) (organizations.Organization, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return organizations.Organization{}, organizations.ErrNotFound
	}
	me, err := o.caller(c)
	if err != nil {
		return organizations.Organization{}, err
	}
	org, err := o.store.Get(c.Request().Context(), id)
	if err != nil {
		return org, err
	}
	if org.OwnerID != me.ID && !me.IsAdmin {
		return organizations.Organization{}, organizations.ErrNotFound
	}
	return org, nil
}

func (o orgAPI) handleGet(c echo.Context) error {
	org, err := o.visible(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, orgView(org))
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
	org, err := o.visible(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	org, err = fn(ctx, org.ID)
	if err != nil {
		if errors.Is(err, organizations.ErrInvalidStatus) {
			return problem.New(http.StatusConflict, "invalid_status",
				fmt.Sprintf("the organization is %s, which does not allow this", org.Status))
		}
		return err
	}
	httpx.Logger(ctx).Info("organization status changed", "tenant_id", org.ID, "status", org.Status)
	return c.JSON(status, orgView(org))
}

// tenantBody is what the tenant plane learns about a tenant. database is
// present only while the tenant is ready.
type tenantBody struct {
	ID int64 `json:"id"`
	// Deployment lets the tenant plane ignore events of other deployments.
	Deployment    string        `json:"deployment"`
	Status        string        `json:"status"`
	SchemaVersion int           `json:"schema_version"`
	Database      *tenantDBBody `json:"database,omitempty"`
}

type tenantDBBody struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Name     string `json:"name"`
	User     string `json:"user"`
	Password string `json:"password"`
}

func (o orgAPI) handleInternalTenant(c echo.Context) error {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 {
		return errTenantNotFound
	}
	ctx := c.Request().Context()
	org, err := o.store.Get(ctx, id)
	if errors.Is(err, organizations.ErrNotFound) {
		return errTenantNotFound
	}
	if err != nil {
		return err
	}
	httpx.AddLogAttrs(c, "tenant_id", id)
	body := tenantBody{ID: org.ID, Deployment: o.d.deployment, Status: org.Status, SchemaVersion: org.SchemaVersion}
	if org.Status == organizations.StatusReady {
		creds, err := provisioning.OpenCredentials(o.box, org)
		if err != nil {
			return err
		}
		body.Database = &tenantDBBody{Host: creds.Host, Port: creds.Port, Name: creds.Name, User: creds.User, Password: creds.Password}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, body)
}
