package provisioning

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
)

// ProvisionArgs is the job that creates a tenant's role and database.
type ProvisionArgs struct {
	OrganizationID int64 `json:"organization_id"`
}

// Kind implements river.JobArgs.
func (ProvisionArgs) Kind() string { return "provision_tenant" }

// DeleteArgs is the job that drops a tenant's database and role.
type DeleteArgs struct {
	OrganizationID int64 `json:"organization_id"`
}

// Kind implements river.JobArgs.
func (DeleteArgs) Kind() string { return "delete_tenant" }

// SyncOwnerPasswordArgs is the job that copies an owner's current password
// hash into their tenant-admin rows.
type SyncOwnerPasswordArgs struct {
	OwnerID int64 `json:"owner_id"`
}

// Kind implements river.JobArgs.
func (SyncOwnerPasswordArgs) Kind() string { return "sync_owner_password" }

// MoveArgs is the job that moves a tenant's database to another server.
type MoveArgs struct {
	OrganizationID int64 `json:"organization_id"`
}

// Kind implements river.JobArgs.
func (MoveArgs) Kind() string { return "move_tenant" }

// RotateCredentialsArgs is the job that gives a tenant role a new password.
type RotateCredentialsArgs struct {
	OrganizationID int64 `json:"organization_id"`
}

// Kind implements river.JobArgs.
func (RotateCredentialsArgs) Kind() string { return "rotate_tenant_credentials" }

// DropCopyArgs is the job that removes what a move left of a tenant on a
// server: the source after the grace period, or the target of a move that
// failed.
type DropCopyArgs struct {
	OrganizationID int64 `json:"organization_id"`
	DBServerID     int64 `json:"db_server_id"`
}

// Kind implements river.JobArgs.
func (DropCopyArgs) Kind() string { return "drop_tenant_copy" }

// ResumeMovesArgs is the periodic job that restarts the moves whose
// worker died with its process (see Provisioner.ResumeMoves).
type ResumeMovesArgs struct{}

// Kind implements river.JobArgs.
func (ResumeMovesArgs) Kind() string { return "resume_moves" }

// onePerOrganization keeps one live job per kind and organization; a
// finished (completed or cancelled) one does not block a new one, so a
// failed organization can be retried.
var onePerOrganization = river.UniqueOpts{
	ByArgs: true,
	ByState: []rivertype.JobState{
		rivertype.JobStateAvailable,
		rivertype.JobStatePending,
		rivertype.JobStateRunning,
		rivertype.JobStateRetryable,
		rivertype.JobStateScheduled,
	},
}

// Jobs enqueues background work in the caller's transaction, so the work
// exists exactly when the change that asks for it commits.
type Jobs struct {
	client      *river.Client[pgx.Tx]
	maxAttempts int
}

// NewJobs returns an insert-only job client on the core database.
// provisionAttempts bounds provisioning retries before an organization is failed.
func NewJobs(pool *pgxpool.Pool, provisionAttempts int) (*Jobs, error) {
	if provisionAttempts < 1 {
		return nil, fmt.Errorf("provisioning: max attempts must be at least 1, got %d", provisionAttempts)
	}
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		return nil, fmt.Errorf("provisioning: job client: %w", err)
	}
	return &Jobs{client: client, maxAttempts: provisionAttempts}, nil
}

// EnqueueProvision implements organizations.Jobs.
func (j *Jobs) EnqueueProvision(ctx context.Context, tx pgx.Tx, orgID int64) error {
	// One attempt more than configured: if recording the failure itself
	// fails on the last attempt, the extra one only records it.
	if err := j.insertOnce(ctx, tx, ProvisionArgs{OrganizationID: orgID}, j.maxAttempts+1); err != nil {
		return fmt.Errorf("enqueue provisioning of organization %d: %w", orgID, err)
	}
	return nil
}

// EnqueueDelete implements organizations.Jobs.
func (j *Jobs) EnqueueDelete(ctx context.Context, tx pgx.Tx, orgID int64) error {
	if err := j.insertOnce(ctx, tx, DeleteArgs{OrganizationID: orgID}, untilDone); err != nil {
		return fmt.Errorf("enqueue deletion of organization %d: %w", orgID, err)
	}
	return nil
}

// EnqueueMove implements organizations.Jobs.
func (j *Jobs) EnqueueMove(ctx context.Context, tx pgx.Tx, orgID int64) error {
	if err := j.insertOnce(ctx, tx, MoveArgs{OrganizationID: orgID}, untilDone); err != nil {
		return fmt.Errorf("enqueue move of organization %d: %w", orgID, err)
	}
	return nil
}

// EnqueueRotation implements organizations.Jobs.
func (j *Jobs) EnqueueRotation(ctx context.Context, tx pgx.Tx, orgID int64) error {
	if err := j.insertOnce(ctx, tx, RotateCredentialsArgs{OrganizationID: orgID}, untilDone); err != nil {
		return fmt.Errorf("enqueue credential rotation of organization %d: %w", orgID, err)
	}
	return nil
}

// EnqueueDropCopy asks for what a move left of orgID on server serverID
// to be removed, after the delay.
func (j *Jobs) EnqueueDropCopy(ctx context.Context, tx pgx.Tx, orgID, serverID int64, after time.Duration) error {
	_, err := j.client.InsertTx(ctx, tx, DropCopyArgs{OrganizationID: orgID, DBServerID: serverID},
		&river.InsertOpts{MaxAttempts: untilDone, ScheduledAt: time.Now().Add(after)})
	if err != nil {
		return fmt.Errorf("enqueue removal of organization %d's copy on database server %d: %w", orgID, serverID, err)
	}
	return nil
}

// insertOnce inserts a job unless one with the same arguments waits to
// run. A job already running may be past the point where it reads the
// organization (a failed provisioning finishing its attempt while the
// organization is retried): then another job is inserted, which waits for
// the organization's lock and acts on its status then.
func (j *Jobs) insertOnce(ctx context.Context, tx pgx.Tx, args river.JobArgs, attempts int) error {
	res, err := j.client.InsertTx(ctx, tx, args, &river.InsertOpts{MaxAttempts: attempts, UniqueOpts: onePerOrganization})
	if err != nil || !res.UniqueSkippedAsDuplicate || res.Job.State != rivertype.JobStateRunning {
		return err
	}
	_, err = j.client.InsertTx(ctx, tx, args, &river.InsertOpts{MaxAttempts: attempts})
	return err
}

// EnqueueOwnerPasswordSync asks for the owner's tenant-admin rows to follow
// their core password. Call it in the transaction that changes the hash.
func (j *Jobs) EnqueueOwnerPasswordSync(ctx context.Context, tx pgx.Tx, ownerID int64) error {
	_, err := j.client.InsertTx(ctx, tx, SyncOwnerPasswordArgs{OwnerID: ownerID},
		&river.InsertOpts{MaxAttempts: untilDone})
	if err != nil {
		return fmt.Errorf("enqueue password sync of owner %d: %w", ownerID, err)
	}
	return nil
}

// untilDone is the attempt budget of jobs that must eventually succeed:
// with the backoff capped at maxBackoff it spans days.
const untilDone = 1000

// maxBackoff caps the delay between two attempts.
const maxBackoff = 10 * time.Minute

// backoff is the retry policy of every job: base, 2*base, 4*base, ... up to
// maxBackoff, with 10% jitter so that jobs failing together spread out.
type backoff struct{ base time.Duration }

// NextRetry implements river.ClientRetryPolicy.
func (b backoff) NextRetry(job *rivertype.JobRow) time.Time {
	d := b.base
	for i := 1; i < job.Attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	jitter := time.Duration(rand.Int64N(int64(d)/10 + 1))
	return time.Now().Add(d + jitter)
}
