package provisioning

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"tenantbase/services/control-plane/internal/dbservers"
)

// RunnerOptions configure the job runner.
type RunnerOptions struct {
	// Workers is how many jobs this process runs at once.
	Workers int
	// MaxAttempts bounds provisioning attempts before the organization is failed.
	MaxAttempts int
	// RetryBackoff is the delay before the first retry; it doubles per attempt.
	RetryBackoff time.Duration
	// JobTimeout cancels a job attempt that runs longer.
	JobTimeout time.Duration
	// RescueAfter is how long a job may stay running before it is presumed
	// lost with a crashed process and run again.
	RescueAfter time.Duration
	// StopTimeout bounds the wait for running jobs at shutdown.
	StopTimeout time.Duration
	// ReconcileEvery is how often organizations in a transitional state
	// are checked for a job (see Reconcile); they must have been in it
	// that long.
	ReconcileEvery time.Duration
	// Queues are other packages' queues the runner works too.
	Queues []Queue
}

// Queue is a queue of another package's jobs, with its own workers so
// that they never hold up provisioning.
type Queue struct {
	Name       string
	MaxWorkers int
	// FetchCooldown, when set, is the shortest wait between two fetches
	// (River's default is 100ms).
	FetchCooldown time.Duration
	// Register adds the queue's workers.
	Register func(*river.Workers)
}

// Runner works the provisioning, deletion, owner-sync, move, rotation and
// copy-removal jobs. Several
// runners (processes) may share a core database: River hands each job to
// one of them at a time.
type Runner struct {
	client      *river.Client[pgx.Tx]
	stopTimeout time.Duration
}

// NewRunner registers the workers on a River client over the core pool.
func NewRunner(pool *pgxpool.Pool, p *Provisioner, o RunnerOptions, log *slog.Logger) (*Runner, error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, &provisionWorker{p: p, maxAttempts: o.MaxAttempts})
	river.AddWorker(workers, &deleteWorker{p: p})
	river.AddWorker(workers, &syncOwnerPasswordWorker{p: p})
	river.AddWorker(workers, &reconcileWorker{p: p, minAge: o.ReconcileEvery})
	river.AddWorker(workers, &purgeRefreshWorker{p: p})
	river.AddWorker(workers, &moveWorker{p: p})
	river.AddWorker(workers, &rotateWorker{p: p})
	river.AddWorker(workers, &dropCopyWorker{p: p})
	river.AddWorker(workers, &resumeMovesWorker{p: p})
	river.AddWorker(workers, &refillSparesWorker{p: p})
	queues := map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: max(o.Workers, 1)}}
	if p.opts.Spares > 0 {
		queues[sparesQueue] = river.QueueConfig{MaxWorkers: 1}
	}
	for _, q := range o.Queues {
		q.Register(workers)
		queues[q.Name] = river.QueueConfig{MaxWorkers: max(q.MaxWorkers, 1), FetchCooldown: q.FetchCooldown}
	}
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		PeriodicJobs:         periodicJobs(cmp.Or(o.ReconcileEvery, time.Minute), p.opts.Spares > 0),
		Queues:               queues,
		Workers:              workers,
		RetryPolicy:          backoff{base: o.RetryBackoff},
		JobTimeout:           o.JobTimeout,
		RescueStuckJobsAfter: o.RescueAfter,
		Logger:               log.With("component", "jobs"),
	})
	if err != nil {
		return nil, fmt.Errorf("provisioning: job runner: %w", err)
	}
	return &Runner{client: client, stopTimeout: o.StopTimeout}, nil
}

// Run works jobs until ctx is cancelled, then lets running jobs finish
// within the stop timeout and cancels those still running.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("provisioning: start job runner: %w", err)
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), r.stopTimeout)
	defer cancel()
	if err := r.client.Stop(stopCtx); err != nil {
		// Interrupted jobs are retried by whichever runner is up next.
		hardCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return r.client.StopAndCancel(hardCtx)
	}
	return nil
}

type provisionWorker struct {
	river.WorkerDefaults[ProvisionArgs]
	p           *Provisioner
	maxAttempts int
}

func (w *provisionWorker) Work(ctx context.Context, job *river.Job[ProvisionArgs]) error {
	id := job.Args.OrganizationID
	if job.Attempt > w.maxAttempts {
		// The last attempt failed and could not record it: record it now.
		cause := "unknown error"
		if n := len(job.Errors); n > 0 {
			cause = job.Errors[n-1].Error
		}
		return w.fail(ctx, id, errors.New(cause), w.maxAttempts)
	}
	err := w.p.Provision(ctx, id)
	w.p.recordAttempt(ctx, id, job.Attempt, err)
	if errors.Is(err, ErrForeignObject) || errors.Is(err, dbservers.ErrNoCapacity) {
		// Another run would find the same object, or no room either: fail
		// now. The organization can be retried once the cause is gone.
		return w.fail(ctx, id, err, job.Attempt)
	}
	if err == nil || job.Attempt < w.maxAttempts {
		if err != nil {
			w.p.log.Warn("provisioning attempt failed", "tenant_id", id, "attempt", job.Attempt, "error", err.Error())
		}
		return err
	}
	return w.fail(ctx, id, err, job.Attempt)
}

func (w *provisionWorker) fail(ctx context.Context, id int64, cause error, attempt int) error {
	attempts := "attempts"
	if attempt == 1 {
		attempts = "attempt"
	}
	detail := fmt.Sprintf("provisioning failed after %d %s: %s", attempt, attempts, Reason(cause))
	// The attempt may have failed because its context ran out; recording
	// the failure still gets a moment of its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := w.p.store.MarkFailed(rctx, id, detail); err != nil {
		return fmt.Errorf("record failure: %w (after %v)", err, cause)
	}
	w.p.log.Error("provisioning failed", "tenant_id", id, "detail", detail, "error", cause.Error())
	return river.JobCancel(cause)
}

type deleteWorker struct {
	river.WorkerDefaults[DeleteArgs]
	p *Provisioner
}

func (w *deleteWorker) Work(ctx context.Context, job *river.Job[DeleteArgs]) error {
	return w.p.Delete(ctx, job.Args.OrganizationID)
}

type syncOwnerPasswordWorker struct {
	river.WorkerDefaults[SyncOwnerPasswordArgs]
	p *Provisioner
}

func (w *syncOwnerPasswordWorker) Work(ctx context.Context, job *river.Job[SyncOwnerPasswordArgs]) error {
	return w.p.SyncOwnerPassword(ctx, job.Args.OwnerID)
}

type moveWorker struct {
	river.WorkerDefaults[MoveArgs]
	p *Provisioner
}

// Timeout gives a move its own limit: copying a large tenant takes longer
// than a provisioning step.
func (w *moveWorker) Timeout(*river.Job[MoveArgs]) time.Duration { return w.p.opts.MoveTimeout }

// Work moves the tenant. Any failure rolls the move back at once rather
// than retrying it later, since the tenant refuses writes while it moves;
// a move cut short by a crash is started again by ResumeMoves and repeats
// every step. A rollback that fails is retried: the recorded reason makes
// every later run roll back.
func (w *moveWorker) Work(ctx context.Context, job *river.Job[MoveArgs]) error {
	id := job.Args.OrganizationID
	err := w.p.Move(ctx, id)
	if err == nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if rbErr := w.p.AbortMove(rctx, id, err); rbErr != nil {
		return fmt.Errorf("roll back the move: %w (it failed with: %v)", rbErr, err)
	}
	return river.JobCancel(err)
}

type rotateWorker struct {
	river.WorkerDefaults[RotateCredentialsArgs]
	p *Provisioner
}

func (w *rotateWorker) Work(ctx context.Context, job *river.Job[RotateCredentialsArgs]) error {
	err := w.p.RotateCredentials(ctx, job.Args.OrganizationID)
	if errors.Is(err, errMoving) {
		return river.JobSnooze(5 * time.Second)
	}
	return err
}

type dropCopyWorker struct {
	river.WorkerDefaults[DropCopyArgs]
	p *Provisioner
}

func (w *dropCopyWorker) Work(ctx context.Context, job *river.Job[DropCopyArgs]) error {
	return w.p.DropCopy(ctx, job.Args.OrganizationID, job.Args.DBServerID)
}

// resumeMovesEvery is how often the leader looks for moves whose worker
// died: a crashed move leaves its tenant refusing writes until then (or
// until the new leader's first look, right after it is elected).
const resumeMovesEvery = 30 * time.Second

type resumeMovesWorker struct {
	river.WorkerDefaults[ResumeMovesArgs]
	p *Provisioner
}

func (w *resumeMovesWorker) Work(ctx context.Context, _ *river.Job[ResumeMovesArgs]) error {
	return w.p.ResumeMoves(ctx)
}
