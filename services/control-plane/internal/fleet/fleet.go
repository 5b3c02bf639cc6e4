// Package fleet moves tenant databases to another schema version in
// migration runs: a canary wave first, then the other tenants with a
// bounded number at once per database server, one River job per tenant.
// A failing tenant is parked with its error (or pauses the run) and keeps
// being served at its version; resume retries it. Everything a run knows
// is in the core database, so a crashed control plane resumes where it
// stopped, and tenants already at the target are decided there, without a
// connection to their database. docs/migrations.md tells the whole story.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"tenantbase/libs/apperr"
	"tenantbase/libs/page"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/tenantdb"
	"tenantbase/services/control-plane/internal/audit"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/provisioning"
)

// Status is a run's state.
type Status string

// Run statuses.
const (
	StatusRunning               Status = "running"
	StatusPaused                Status = "paused"
	StatusCompleted             Status = "completed"
	StatusCompletedWithFailures Status = "completed_with_failures"
	StatusCancelled             Status = "cancelled"
)

// State is where one tenant of a run is.
type State string

// Tenant states: pending until its job is enqueued, running while a job
// exists for it, then done, skipped (already at the target, or no longer
// ready or suspended) or failed (parked until the run is resumed).
const (
	StatePending State = "pending"
	StateRunning State = "running"
	StateDone    State = "done"
	StateSkipped State = "skipped"
	StateFailed  State = "failed"
)

// States lists every tenant state.
var States = []State{StatePending, StateRunning, StateDone, StateSkipped, StateFailed}

// OnError says what a failing tenant does to its run.
type OnError string

// Policies on error.
const (
	// OnErrorContinue parks the failing tenant; the others go on.
	OnErrorContinue OnError = "continue"
	// OnErrorPause parks it and pauses the run.
	OnErrorPause OnError = "pause"
)

// Defaults and bounds of a run's settings.
const (
	DefaultCanary      = 1
	DefaultConcurrency = 4
	MaxCanary          = 1000
	MaxConcurrency     = 64
	// MaxFailedShown bounds the failed tenants a run lists; all of them
	// are in its tenant rows.
	MaxFailedShown = 100
)

// Domain errors; the HTTP layer maps them to problems.
var (
	ErrNotFound   = errors.New("no such migration run")
	ErrInProgress = errors.New("a migration run is already in progress: wait for it, pause it or cancel it")
	ErrFinished   = errors.New("the migration run is finished; start a new one")
)

// Run is a migration run with the tally of its tenants.
type Run struct {
	ID            int64
	Status        Status
	TargetVersion int
	Canary        int
	Concurrency   int
	OnError       OnError
	StartedAt     time.Time
	FinishedAt    *time.Time
	Counts        Counts
	// Failed are the first MaxFailedShown parked tenants, in id order.
	Failed []Tenant
}

// Counts are a run's tenants per state.
type Counts struct {
	Pending, Running, Done, Skipped, Failed int
}

// Tenant is one tenant of a run.
type Tenant struct {
	TenantID int64
	State    State
	Canary   bool
	// Server is where its database lives; concurrency is bounded per server.
	Server string
	// FromVersion is its version when the run took it; SchemaVersion the
	// one last recorded.
	FromVersion   int
	SchemaVersion int
	// Error says why it failed; empty unless failed.
	Error      string
	Attempts   int
	StartedAt  *time.Time
	FinishedAt *time.Time
}

// Request starts a run; nil and empty fields take the defaults.
type Request struct {
	// TargetVersion defaults to the newest tenant migration; below a
	// tenant's version means rolling it back with the down files.
	TargetVersion *int
	// TenantIDs defaults to every ready and suspended tenant.
	TenantIDs   []int64
	Canary      *int
	Concurrency *int
	OnError     OnError
}

// Tenants reaches tenant databases as their own roles, under the lock
// provisioning and deletion hold (*provisioning.Provisioner).
type Tenants interface {
	TenantDSN(ctx context.Context, org organizations.Organization) (string, error)
	WithOrganizationLock(ctx context.Context, orgID int64, fn func() error) error
}

// Options configure a Service.
type Options struct {
	// Migrations are the tenant migrations runs apply.
	Migrations tenantdb.Migrations
	// Workers is how many tenants this process migrates at once.
	Workers int
	// StepDelay pauses inside every migration step's transaction, before
	// its commit: a fault-injection knob for crash tests. Leave it at 0.
	StepDelay time.Duration
	// BeforeMigrate, when set, runs before a tenant's database is
	// migrated; an error fails the tenant. Tests count migrations with it.
	BeforeMigrate func(ctx context.Context, orgID int64) error
}

// Service starts, follows and steers migration runs, and works their jobs.
type Service struct {
	pool    *pgxpool.Pool
	orgs    *organizations.Store
	tenants Tenants
	jobs    *river.Client[pgx.Tx]
	o       Options
	log     *slog.Logger
}

// New returns a Service on the core database.
func New(pool *pgxpool.Pool, orgs *organizations.Store, tenants Tenants, o Options, log *slog.Logger) (*Service, error) {
	// An insert-only client: its inserts notify the queue's workers at once
	// (no more often than the cooldown), which is what keeps a run moving.
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{FetchCooldown: fetchCooldown})
	if err != nil {
		return nil, fmt.Errorf("fleet: job client: %w", err)
	}
	return &Service{pool: pool, orgs: orgs, tenants: tenants, jobs: jobs, o: o, log: log.With("component", "fleet")}, nil
}

// Latest is the newest tenant migration version runs can apply.
func (s *Service) Latest() int { return int(s.o.Migrations.Latest()) }

// Queue is the job queue of tenant migrations, for the job runner.
func (s *Service) Queue() provisioning.Queue {
	return provisioning.Queue{
		Name:          QueueName,
		MaxWorkers:    s.o.Workers,
		FetchCooldown: fetchCooldown,
		Register:      func(w *river.Workers) { river.AddWorker(w, &worker{s: s}) },
	}
}

// server is where org's database lives, the unit concurrency is bounded
// by: its registered database server, or the host and port of its
// placement before it has one.
func server(org organizations.Organization) string {
	if org.ServerID != 0 {
		return "db_server:" + strconv.FormatInt(org.ServerID, 10)
	}
	return net.JoinHostPort(org.Database.Host, strconv.Itoa(org.Database.Port))
}

// spec is a validated Request.
type spec struct {
	target      int
	ids         []int64
	canary      int
	concurrency int
	onError     OnError
}

func (s *Service) validate(r Request) (spec, error) {
	sp := spec{target: s.Latest(), ids: r.TenantIDs, canary: DefaultCanary, concurrency: DefaultConcurrency, onError: OnErrorContinue}
	var errs []error
	if r.TargetVersion != nil {
		sp.target = *r.TargetVersion
		if sp.target < 1 || sp.target > s.Latest() || !s.o.Migrations.Has(uint(sp.target)) {
			errs = append(errs, apperr.Invalid("target_version",
				fmt.Sprintf("must be a tenant migration version from 1 to %d (the newest this control plane carries)", s.Latest())))
		}
	}
	if r.TenantIDs != nil {
		seen := map[int64]bool{}
		for _, id := range r.TenantIDs {
			if id < 1 || seen[id] {
				errs = append(errs, apperr.Invalid("tenant_ids", "must be distinct organization ids"))
				break
			}
			seen[id] = true
		}
		if len(r.TenantIDs) == 0 {
			errs = append(errs, apperr.Invalid("tenant_ids", "must not be empty; leave it out for every tenant"))
		}
	}
	if r.Canary != nil {
		sp.canary = *r.Canary
		if sp.canary < 0 || sp.canary > MaxCanary {
			errs = append(errs, apperr.Invalid("canary", fmt.Sprintf("must be between 0 and %d", MaxCanary)))
		}
	}
	if r.Concurrency != nil {
		sp.concurrency = *r.Concurrency
		if sp.concurrency < 1 || sp.concurrency > MaxConcurrency {
			errs = append(errs, apperr.Invalid("concurrency", fmt.Sprintf("must be between 1 and %d", MaxConcurrency)))
		}
	}
	switch r.OnError {
	case "":
	case OnErrorContinue, OnErrorPause:
		sp.onError = r.OnError
	default:
		errs = append(errs, apperr.Invalid("on_error", "must be continue or pause"))
	}
	return sp, apperr.Join(errs...)
}

// Create starts a run and enqueues its first wave, in one transaction.
// Tenants already at the target are skipped on the spot: their databases
// are not touched.
func (s *Service) Create(ctx context.Context, r Request) (Run, error) {
	sp, err := s.validate(r)
	if err != nil {
		return Run{}, err
	}
	var id int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		id, err = s.create(ctx, tx, sp, 0)
		return err
	})
	if err != nil {
		return Run{}, err
	}
	return s.Get(ctx, id)
}

// create inserts a run of the ready and suspended tenants of sp (only those
// below `below` when not 0) and advances it.
func (s *Service) create(ctx context.Context, tx pgx.Tx, sp spec, below int) (int64, error) {
	id, err := insertRun(ctx, tx, sp)
	if pgutil.Code(err) == pgerrcode.UniqueViolation {
		return 0, ErrInProgress
	}
	if err != nil {
		return 0, fmt.Errorf("fleet: start a run: %w", err)
	}
	orgs, err := s.orgs.MigrationCandidates(ctx, tx, sp.ids, below)
	if err != nil {
		return 0, fmt.Errorf("fleet: list tenants: %w", err)
	}
	if sp.ids != nil && len(orgs) != len(sp.ids) {
		found := map[int64]bool{}
		for _, o := range orgs {
			found[o.ID] = true
		}
		for _, want := range sp.ids {
			if !found[want] {
				return 0, apperr.Invalid("tenant_ids", fmt.Sprintf("organization %d does not exist or is not ready or suspended", want))
			}
		}
	}
	rows := make([]Tenant, 0, len(orgs))
	canaries := 0
	for _, o := range orgs {
		t := Tenant{TenantID: o.ID, State: StatePending, Server: server(o), FromVersion: o.SchemaVersion, SchemaVersion: o.SchemaVersion}
		switch {
		case o.SchemaVersion == sp.target:
			t.State = StateSkipped
		case canaries < sp.canary:
			t.Canary = true
			canaries++
		}
		rows = append(rows, t)
	}
	if err := insertTenants(ctx, tx, id, rows); err != nil {
		return 0, fmt.Errorf("fleet: start a run: %w", err)
	}
	if err := audit.Record(ctx, tx, audit.Entry{Action: audit.MigrationRunStart, TargetType: audit.TargetMigrationRun,
		TargetID: audit.ID(id), Detail: map[string]any{"target_version": sp.target, "tenants": len(rows),
			"canary": sp.canary, "concurrency": sp.concurrency, "on_error": sp.onError}}); err != nil {
		return 0, err
	}
	return id, s.advance(ctx, tx, id)
}

// advance moves run id on, in tx: it enqueues pending tenants while their
// server has room (only canaries while any is unfinished), and finishes the
// run once no tenant is pending or running. It does nothing to a run that
// is not running.
func (s *Service) advance(ctx context.Context, tx pgx.Tx, id int64) error {
	run, err := lockRun(ctx, tx, id)
	if err != nil || run.Status != StatusRunning {
		return err
	}
	picked, err := dispatch(ctx, tx, run)
	if err != nil {
		return fmt.Errorf("fleet: dispatch: %w", err)
	}
	if len(picked) > 0 {
		return s.enqueue(ctx, tx, id, picked)
	}
	counts, err := countsOf(ctx, tx, id)
	if err != nil || counts.Pending+counts.Running > 0 {
		return err
	}
	status := StatusCompleted
	if counts.Failed > 0 {
		status = StatusCompletedWithFailures
	}
	if err := setStatus(ctx, tx, id, status); err != nil {
		return err
	}
	s.log.Info("migration run finished", "run_id", id, "status", status, "target_version", run.TargetVersion,
		"done", counts.Done, "skipped", counts.Skipped, "failed", counts.Failed)
	return nil
}

// Get returns run id with its counts and first failed tenants.
func (s *Service) Get(ctx context.Context, id int64) (Run, error) {
	runs, err := loadRuns(ctx, s.pool, id, id+1, 1)
	if err != nil {
		return Run{}, err
	}
	if len(runs) == 0 {
		return Run{}, ErrNotFound
	}
	return runs[0], nil
}

// List returns one page of runs, newest first.
func (s *Service) List(ctx context.Context, r page.Request) (page.Page[Run], error) {
	r, err := r.Normalize()
	if err != nil {
		return page.Page[Run]{}, err
	}
	before := r.Cursor
	if before == 0 {
		before = 1<<63 - 1
	}
	runs, err := loadRuns(ctx, s.pool, 0, before, r.Limit+1)
	if err != nil {
		return page.Page[Run]{}, err
	}
	return page.Of(runs, r.Limit, func(run Run) int64 { return run.ID }), nil
}

// Tenants returns one page of run id's tenants in id order, in state when
// it is not empty.
func (s *Service) Tenants(ctx context.Context, id int64, state State, r page.Request) (page.Page[Tenant], error) {
	if state != "" && !slices.Contains(States, state) {
		return page.Page[Tenant]{}, apperr.Invalid("state", "must be one of pending, running, done, skipped, failed")
	}
	r, err := r.Normalize()
	if err != nil {
		return page.Page[Tenant]{}, err
	}
	if _, err := s.Get(ctx, id); err != nil {
		return page.Page[Tenant]{}, err
	}
	rows, err := listTenants(ctx, s.pool, id, state, r.Cursor, r.Limit+1)
	if err != nil {
		return page.Page[Tenant]{}, err
	}
	return page.Of(rows, r.Limit, func(t Tenant) int64 { return t.TenantID }), nil
}

// Pause stops a running run from starting tenants; those running finish.
// Pausing a paused run changes nothing.
func (s *Service) Pause(ctx context.Context, id int64) (Run, error) {
	return s.steer(ctx, id, audit.MigrationRunPause, func(tx pgx.Tx, run Run) error {
		switch run.Status {
		case StatusPaused:
			return nil
		case StatusRunning:
			return setStatus(ctx, tx, id, StatusPaused)
		}
		return ErrFinished
	})
}

// Cancel ends a run: tenants running finish, pending ones never start.
// Cancelling a cancelled run changes nothing.
func (s *Service) Cancel(ctx context.Context, id int64) (Run, error) {
	return s.steer(ctx, id, audit.MigrationRunCancel, func(tx pgx.Tx, run Run) error {
		switch run.Status {
		case StatusCancelled:
			return nil
		case StatusRunning, StatusPaused:
			return setStatus(ctx, tx, id, StatusCancelled)
		}
		return ErrFinished
	})
}

// Resume sends the run's parked tenants back to pending and runs it again:
// a paused run continues, a run completed with failures retries them.
func (s *Service) Resume(ctx context.Context, id int64) (Run, error) {
	return s.steer(ctx, id, audit.MigrationRunResume, func(tx pgx.Tx, run Run) error {
		switch run.Status {
		case StatusCompleted, StatusCancelled:
			return ErrFinished
		}
		if err := retryFailed(ctx, tx, id); err != nil {
			return err
		}
		if err := setStatus(ctx, tx, id, StatusRunning); err != nil {
			return err
		}
		return s.advance(ctx, tx, id)
	})
}

// steer runs fn on run id under its lock and records action in the audit
// log (also when it changed nothing: an admin asked), then returns the run.
func (s *Service) steer(ctx context.Context, id int64, action string, fn func(tx pgx.Tx, run Run) error) (Run, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		run, err := lockRun(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := fn(tx, run); err != nil {
			return err
		}
		now, err := lockRun(ctx, tx, id)
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: action, TargetType: audit.TargetMigrationRun, TargetID: audit.ID(id),
			Detail: map[string]any{"from_status": run.Status, "to_status": now.Status}})
	})
	if pgutil.Code(err) == pgerrcode.UniqueViolation {
		return Run{}, ErrInProgress
	}
	if err != nil {
		return Run{}, err
	}
	return s.Get(ctx, id)
}

// Start picks up after a restart and, with migrateOnStart, rolls the fleet
// forward: the running run's tenants whose jobs were lost with a crashed
// process are enqueued again at once (rather than when River rescues the
// jobs), and when no run is in progress and some tenant is below the newest
// migration, a run to it starts with the default settings. It retries
// until it succeeds or ctx ends.
func (s *Service) Start(ctx context.Context, migrateOnStart bool) error {
	wait := time.Second
	for {
		err := s.start(ctx, migrateOnStart)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		s.log.Error("resuming tenant migrations failed", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

func (s *Service) start(ctx context.Context, migrateOnStart bool) error {
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.recover(ctx, tx) }); err != nil {
		return err
	}
	if !migrateOnStart {
		return nil
	}
	latest := s.Latest()
	behind, err := s.orgs.CountBehind(ctx, latest)
	if err != nil || behind == 0 {
		return err
	}
	var id int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Only tenants below: a tenant a newer release moved beyond is
		// never rolled back by a restart.
		id, err = s.create(ctx, tx, spec{target: latest, canary: DefaultCanary, concurrency: DefaultConcurrency, onError: OnErrorContinue}, latest)
		return err
	})
	if errors.Is(err, ErrInProgress) {
		s.log.Warn("tenants are below the newest migration, but a migration run is in progress; no run started",
			"tenants_behind", behind, "target_version", latest)
		return nil
	}
	if err != nil {
		return err
	}
	s.log.Info("migration run started on start", "run_id", id, "target_version", latest, "tenants_behind", behind)
	return nil
}

// recover enqueues again the running tenants of the running run whose job
// is not waiting to be worked (it was lost with a crashed process or is
// waiting for a retry), then advances the run.
func (s *Service) recover(ctx context.Context, tx pgx.Tx) error {
	id, ok, err := activeRun(ctx, tx)
	if err != nil || !ok {
		return err
	}
	run, err := lockRun(ctx, tx, id)
	if err != nil || run.Status != StatusRunning {
		return err
	}
	running, err := tenantIDs(ctx, tx, id, StateRunning)
	if err != nil {
		return err
	}
	if len(running) > 0 {
		if err := s.enqueue(ctx, tx, id, running); err != nil {
			return err
		}
		s.log.Info("migration run resumed", "run_id", id, "tenants_reenqueued", len(running))
	}
	return s.advance(ctx, tx, id)
}
