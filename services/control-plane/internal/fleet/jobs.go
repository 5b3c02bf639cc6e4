package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"tenantbase/libs/tenantdb"
	"tenantbase/services/control-plane/internal/organizations"
)

// QueueName is the River queue of tenant migrations: workers of their own,
// so that a run never holds up provisioning.
const QueueName = "tenant_migrations"

// fetchCooldown is the shortest wait between two fetches of the queue, and
// between two insert notifications of the fleet's job client: a wave is
// picked up within it of the job that enqueued it (River's default, 100ms,
// would bound a run to a few tenants a second at low concurrency).
const fetchCooldown = 10 * time.Millisecond

// MigrateArgs is the job that migrates one tenant for one run. It is
// unique per tenant (River compares only organization_id), so two runs or
// two control planes never have it queued twice.
type MigrateArgs struct {
	RunID          int64 `json:"run_id"`
	OrganizationID int64 `json:"organization_id" river:"unique"`
}

// Kind implements river.JobArgs.
func (MigrateArgs) Kind() string { return "migrate_tenant" }

var onePerTenant = river.UniqueOpts{
	ByArgs: true,
	ByState: []rivertype.JobState{
		rivertype.JobStateAvailable,
		rivertype.JobStatePending,
		rivertype.JobStateRunning,
		rivertype.JobStateRetryable,
		rivertype.JobStateScheduled,
	},
}

// untilDone is the attempt budget of a migration job: a tenant's failure
// is recorded, not retried by River, so only failures to record (the core
// database down) are retried, until they succeed.
const untilDone = 1000

// enqueue inserts the jobs of run id's tenants orgIDs in tx. A tenant whose
// unique job is already waiting for this run keeps it. One whose job is
// another run's, or is still marked running (lost with a crashed process,
// or finishing an attempt past the point where it read its state), gets a
// second job: it waits for the tenant's lock and acts on the state then,
// so nothing depends on River rescuing or rescheduling the first.
func (s *Service) enqueue(ctx context.Context, tx pgx.Tx, id int64, orgIDs []int64) error {
	params := make([]river.InsertManyParams, len(orgIDs))
	for i, org := range orgIDs {
		params[i] = river.InsertManyParams{Args: MigrateArgs{RunID: id, OrganizationID: org},
			InsertOpts: &river.InsertOpts{Queue: QueueName, MaxAttempts: untilDone, UniqueOpts: onePerTenant}}
	}
	res, err := s.jobs.InsertManyTx(ctx, tx, params)
	if err != nil {
		return fmt.Errorf("fleet: enqueue: %w", err)
	}
	var again []river.InsertManyParams
	for i, r := range res {
		if !r.UniqueSkippedAsDuplicate {
			continue
		}
		var other MigrateArgs
		if err := json.Unmarshal(r.Job.EncodedArgs, &other); err == nil && other.RunID == id && r.Job.State == rivertype.JobStateAvailable {
			continue
		}
		again = append(again, river.InsertManyParams{Args: params[i].Args,
			InsertOpts: &river.InsertOpts{Queue: QueueName, MaxAttempts: untilDone}})
	}
	if len(again) > 0 {
		if _, err := s.jobs.InsertManyTx(ctx, tx, again); err != nil {
			return fmt.Errorf("fleet: enqueue: %w", err)
		}
	}
	return nil
}

type worker struct {
	river.WorkerDefaults[MigrateArgs]
	s *Service
}

func (w *worker) Work(ctx context.Context, job *river.Job[MigrateArgs]) error {
	return w.s.work(ctx, job)
}

// outcome is what became of a tenant's job.
type outcome struct {
	state   State
	version int
	detail  string
	// previous is the version the core database had before (done only).
	previous int
}

// work migrates one tenant under its organization's lock, so that no
// provisioning, deletion or other migration of it overlaps, and records the
// outcome (see finish).
func (s *Service) work(ctx context.Context, job *river.Job[MigrateArgs]) error {
	a := job.Args
	return s.tenants.WithOrganizationLock(ctx, a.OrganizationID, func() error {
		t, run, err := tenantOf(ctx, s.pool, a.RunID, a.OrganizationID)
		if errors.Is(err, ErrNotFound) || (err == nil && t.State != StateRunning) {
			// Another job of this tenant got here first.
			return nil
		}
		if err != nil {
			return err
		}
		if run.Status != StatusRunning {
			// Paused or cancelled after this job was enqueued: it never starts.
			return s.finish(ctx, job, outcome{state: StatePending, version: t.SchemaVersion})
		}
		org, err := s.orgs.Get(ctx, a.OrganizationID)
		if err != nil {
			return err
		}
		switch {
		case org.Status != organizations.StatusReady && org.Status != organizations.StatusSuspended:
			return s.finish(ctx, job, outcome{state: StateSkipped, version: org.SchemaVersion})
		case org.SchemaVersion == run.TargetVersion:
			// Decided from the core database: no connection to the tenant.
			return s.finish(ctx, job, outcome{state: StateSkipped, version: org.SchemaVersion})
		}
		res, err := s.migrate(ctx, org, run.TargetVersion)
		if err != nil && errors.Is(ctx.Err(), context.Canceled) {
			// Shutting down: the step in progress was rolled back, and the
			// job runs again after the restart.
			return err
		}
		version := org.SchemaVersion
		if res.Known {
			version = int(res.To)
		}
		if err != nil {
			return s.finish(ctx, job, outcome{state: StateFailed, version: version, detail: failureDetail(run.TargetVersion, err)})
		}
		return s.finish(ctx, job, outcome{state: StateDone, version: version, previous: org.SchemaVersion})
	})
}

// migrate moves org's database to target as the tenant's own role.
func (s *Service) migrate(ctx context.Context, org organizations.Organization, target int) (tenantdb.Result, error) {
	if s.o.BeforeMigrate != nil {
		if err := s.o.BeforeMigrate(ctx, org.ID); err != nil {
			return tenantdb.Result{}, err
		}
	}
	dsn, err := s.tenants.TenantDSN(ctx, org)
	if err != nil {
		return tenantdb.Result{}, err
	}
	var opts tenantdb.MigrateOptions
	if d := s.o.StepDelay; d > 0 {
		opts.BeforeCommit = func(ctx context.Context, _ uint) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
				return nil
			}
		}
	}
	return s.o.Migrations.MigrateTo(ctx, dsn, uint(target), opts)
}

// failureDetail is the readable reason a tenant is parked with: the file
// and the server's message, never SQL of other tenants or credentials.
func failureDetail(target int, err error) string {
	var (
		dirty *tenantdb.DirtyError
		step  *tenantdb.StepError
	)
	switch {
	case errors.As(err, &dirty):
		return fmt.Sprintf("migration to version %d not started: %v", target, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("migration to version %d took longer than the job timeout (JOB_TIMEOUT); its step was rolled back", target)
	case errors.As(err, &step):
		return fmt.Sprintf("migration to version %d failed at %v", target, step)
	}
	return fmt.Sprintf("migration to version %d failed: %s", target, tenantdb.Describe(err))
}

// finish records o for the job's tenant in one transaction: the tenant's
// state in the run; for done or failed, the organization's schema version
// and its tenant.migrated or tenant.migration_failed event; a pause when a
// canary fails or the run pauses on errors; the next tenants of the run
// (enqueued, so the workers are woken when it commits); and the job's own
// completion, so that it no longer counts as running for the uniqueness
// of the tenant's next job.
func (s *Service) finish(ctx context.Context, job *river.Job[MigrateArgs], o outcome) error {
	// The attempt may have run out of time; recording gets a moment of its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	a := job.Args
	var paused bool
	err := pgx.BeginFunc(rctx, s.pool, func(tx pgx.Tx) error {
		run, err := lockRun(rctx, tx, a.RunID)
		if err != nil {
			return err
		}
		t, _, err := tenantOf(rctx, tx, a.RunID, a.OrganizationID)
		if err != nil {
			return err
		}
		switch o.state {
		case StateDone:
			if _, _, err := s.orgs.RecordMigration(rctx, tx, a.OrganizationID, o.version); err != nil {
				return err
			}
		case StateFailed:
			if _, err := s.orgs.RecordMigrationFailure(rctx, tx, a.OrganizationID, o.version, o.detail); err != nil {
				return err
			}
			if run.Status == StatusRunning && (t.Canary || run.OnError == OnErrorPause) {
				if err := setStatus(rctx, tx, a.RunID, StatusPaused); err != nil {
					return err
				}
				paused = true
			}
		}
		if err := setOutcome(rctx, tx, a.RunID, a.OrganizationID, o); err != nil {
			return err
		}
		if err := s.advance(rctx, tx, a.RunID); err != nil {
			return err
		}
		_, err = river.JobCompleteTx[*riverpgxv5.Driver](rctx, tx, job)
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: record the migration of tenant %d: %w", a.OrganizationID, err)
	}
	log := s.log.With("run_id", a.RunID, "tenant_id", a.OrganizationID)
	switch o.state {
	case StateDone:
		log.Info("tenant migrated", "schema_version", o.version, "previous_schema_version", o.previous)
	case StateFailed:
		log.Warn("tenant migration failed; the tenant is parked at its version", "schema_version", o.version, "error", o.detail)
		if paused {
			log.Warn("migration run paused by a failure")
		}
	}
	return nil
}
