package provisioning

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"tenantbase/libs/auth"
	"tenantbase/services/control-plane/internal/organizations"
)

// ReconcileArgs is the periodic job that gives every organization in a
// transitional state the job that moves it on.
type ReconcileArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return "reconcile_organizations" }

// PurgeRefreshArgs is the periodic job that deletes the core database's
// refresh tokens that can never be used again.
type PurgeRefreshArgs struct{}

// Kind implements river.JobArgs.
func (PurgeRefreshArgs) Kind() string { return "purge_refresh_tokens" }

// transitions names, for each transitional status, the kind of the job
// that ends it.
var transitions = map[organizations.Status]string{
	organizations.StatusProvisioning: ProvisionArgs{}.Kind(),
	organizations.StatusDeleting:     DeleteArgs{}.Kind(),
}

var liveStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
	rivertype.JobStateRetryable, rivertype.JobStateScheduled,
}

// Reconcile enqueues the job of every organization that has been in a
// transitional state (provisioning, deleting) for at least minAge without
// a live job for it, and returns how many it enqueued. A lost job (an
// insert skipped, a failure recorded but the job gone, rows removed by
// hand) would otherwise leave the organization there for good. A job
// enqueued for an organization that moved on meanwhile does nothing.
func (p *Provisioner) Reconcile(ctx context.Context, minAge time.Duration) (int, error) {
	statuses := make([]organizations.Status, 0, len(transitions))
	kinds := make([]string, 0, len(transitions))
	for s, k := range transitions {
		statuses = append(statuses, s)
		kinds = append(kinds, k)
	}
	// Organizations first, jobs second: a job inserted in between is seen.
	stuck, err := p.store.InStatusSince(ctx, statuses, minAge)
	if err != nil || len(stuck) == 0 {
		return 0, err
	}
	live, err := p.jobs.liveJobs(ctx, kinds)
	if err != nil {
		return 0, err
	}
	enqueued := 0
	for _, org := range stuck {
		kind := transitions[org.Status]
		if live[kind][org.ID] {
			continue
		}
		err := pgx.BeginFunc(ctx, p.core, func(tx pgx.Tx) error {
			if org.Status == organizations.StatusDeleting {
				return p.jobs.EnqueueDelete(ctx, tx, org.ID)
			}
			return p.jobs.EnqueueProvision(ctx, tx, org.ID)
		})
		if err != nil {
			return enqueued, err
		}
		enqueued++
		p.log.Warn("organization had no job; enqueued one", "tenant_id", org.ID, "status", org.Status, "job", kind)
	}
	return enqueued, nil
}

// liveJobs returns, for each kind, the organizations that have a job not
// yet finished.
func (j *Jobs) liveJobs(ctx context.Context, kinds []string) (map[string]map[int64]bool, error) {
	live := map[string]map[int64]bool{}
	for _, k := range kinds {
		live[k] = map[int64]bool{}
	}
	params := river.NewJobListParams().Kinds(kinds...).States(liveStates...).First(1000)
	for {
		res, err := j.client.JobList(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("provisioning: list jobs: %w", err)
		}
		for _, job := range res.Jobs {
			var args ProvisionArgs // every organization job's args carry organization_id
			if err := json.Unmarshal(job.EncodedArgs, &args); err != nil {
				return nil, fmt.Errorf("provisioning: job %d: %w", job.ID, err)
			}
			live[job.Kind][args.OrganizationID] = true
		}
		if len(res.Jobs) < 1000 {
			return live, nil
		}
		params = params.After(res.LastCursor)
	}
}

type reconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	p      *Provisioner
	minAge time.Duration
}

func (w *reconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	_, err := w.p.Reconcile(ctx, w.minAge)
	return err
}

type purgeRefreshWorker struct {
	river.WorkerDefaults[PurgeRefreshArgs]
	p *Provisioner
}

func (w *purgeRefreshWorker) Work(ctx context.Context, _ *river.Job[PurgeRefreshArgs]) error {
	n, err := auth.PurgeRefresh(ctx, w.p.core)
	if err == nil && n > 0 {
		w.p.log.Info("purged dead refresh tokens", "count", n)
	}
	return err
}

// periodicJobs are the maintenance jobs the leader among the runners
// inserts on schedule (and once at its start); spares adds the refill of
// every server's spare databases.
func periodicJobs(reconcileEvery time.Duration, spares bool) []*river.PeriodicJob {
	jobs := []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(reconcileEvery),
			func() (river.JobArgs, *river.InsertOpts) { return ReconcileArgs{}, nil },
			&river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return PurgeRefreshArgs{}, nil },
			&river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(resumeMovesEvery),
			func() (river.JobArgs, *river.InsertOpts) { return ResumeMovesArgs{}, nil },
			&river.PeriodicJobOpts{RunOnStart: true}),
	}
	if spares {
		jobs = append(jobs, river.NewPeriodicJob(river.PeriodicInterval(time.Minute),
			func() (river.JobArgs, *river.InsertOpts) {
				opts := refillOpts
				return RefillSparesArgs{}, &opts
			},
			&river.PeriodicJobOpts{RunOnStart: true}))
	}
	return jobs
}
