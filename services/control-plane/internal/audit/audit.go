// Package audit is the control plane's audit log: one row per
// state-changing action, written with Record in the transaction of the
// change, so that a change and its row commit together or not at all.
// Rows are append-only; the core database's triggers refuse UPDATE,
// DELETE and TRUNCATE on them.
//
// Who acted and from where comes from the context: reqctx (request id and
// client address, set for every request by httpx) and WithActor (the
// authenticated core user, set by the HTTP layer). Work outside a request
// (background jobs, start-up) is recorded as the system.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auditlog"
	"tenantbase/libs/page"
	"tenantbase/libs/reqctx"
)

// Actor types.
const (
	ActorUser      = "user"
	ActorSystem    = "system"
	ActorAnonymous = "anonymous"
)

// Outcomes.
const (
	Success = "success"
	Failure = "failure"
)

// Target types.
const (
	TargetUser         = "user"
	TargetOrganization = "organization"
	TargetMigrationRun = "migration_run"
)

// TargetTypes lists every target type, for filters.
var TargetTypes = []string{TargetUser, TargetOrganization, TargetMigrationRun}

// Actions. Features that change organizations record theirs with the
// constants below too (organization.move, .migrate, .rotate_credentials).
const (
	UserCreate           = "user.create"
	UserVerify           = "user.verify"
	UserPasswordChange   = "user.password_change"
	UserInvitationAccept = "user.invitation_accept"
	UserLock             = "user.lock"
	UserUnlock           = "user.unlock"
	UserUpdate           = "user.update"

	OrganizationCreate             = "organization.create"
	OrganizationRetry              = "organization.retry"
	OrganizationSuspend            = "organization.suspend"
	OrganizationResume             = "organization.resume"
	OrganizationDelete             = "organization.delete"
	OrganizationReady              = "organization.ready"
	OrganizationProvisioningFailed = "organization.provisioning_failed"
	OrganizationDeleted            = "organization.deleted"
	OrganizationMove               = "organization.move"
	OrganizationMoved              = "organization.moved"
	OrganizationMigrate            = "organization.migrate"
	OrganizationRotateCredentials  = "organization.rotate_credentials"
	OrganizationCredentialsRotated = "organization.credentials_rotated"

	MigrationRunStart  = "migration_run.start"
	MigrationRunPause  = "migration_run.pause"
	MigrationRunCancel = "migration_run.cancel"
	MigrationRunResume = "migration_run.resume"
)

// Entry is one action to record.
type Entry struct {
	Action     string
	TargetType string
	TargetID   string
	// Outcome is Success when empty.
	Outcome string
	// Detail says more about the change (the fields an admin set, say);
	// never secrets.
	Detail map[string]any
	// ActorID names the acting user when the context has none: a user
	// identified by a token they hold (a verification link, an invitation).
	ActorID int64
}

// ID is the target id of a user or organization id.
func ID(id int64) string { return strconv.FormatInt(id, 10) }

type actorKey struct{}

// WithActor returns ctx naming core user id as the actor of what is
// recorded under it.
func WithActor(ctx context.Context, userID int64) context.Context {
	return context.WithValue(ctx, actorKey{}, userID)
}

// Record writes e in tx, the transaction of the change it records.
func Record(ctx context.Context, tx pgx.Tx, e Entry) error {
	if e.Action == "" || e.TargetType == "" || e.TargetID == "" {
		return errors.New("audit: an entry needs an action and a target")
	}
	outcome := e.Outcome
	if outcome == "" {
		outcome = Success
	}
	req, inRequest := reqctx.From(ctx)
	actorType, actorID := ActorSystem, (*int64)(nil)
	if id, ok := ctx.Value(actorKey{}).(int64); ok && id > 0 {
		actorType, actorID = ActorUser, &id
	} else if e.ActorID > 0 {
		id := e.ActorID
		actorType, actorID = ActorUser, &id
	} else if inRequest {
		actorType = ActorAnonymous
	}
	detail := e.Detail
	if detail == nil {
		detail = map[string]any{}
	}
	raw, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("audit: detail: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO audit_log
			(actor_type, actor_id, action, target_type, target_id, request_id, client_ip, outcome, detail)
		VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), NULLIF($7, '')::inet, $8, $9)`,
		actorType, actorID, e.Action, e.TargetType, e.TargetID, req.ID, req.ClientIP, outcome, raw)
	if err != nil {
		return fmt.Errorf("audit: record %s: %w", e.Action, err)
	}
	return nil
}

// Row is a recorded entry as the API shows it: the same row as a tenant
// database's log.
type Row = auditlog.Row

// Filter selects rows for List; zero fields do not filter.
type Filter struct {
	ActorID    int64
	TargetType string
	TargetID   string
	Action     string
	page.Request
}

// Querier is a pool or a transaction on the core database.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// maxFilterLen bounds the text filters; longer ones match nothing anyway.
const maxFilterLen = 200

// List returns one page of rows, newest first (keyset pagination on id).
func List(ctx context.Context, q Querier, f Filter) (page.Page[Row], error) {
	r, err := f.Request.Normalize()
	if err != nil {
		return page.Page[Row]{}, err
	}
	for name, v := range map[string]string{"target_type": f.TargetType, "target_id": f.TargetID, "action": f.Action} {
		if len(v) > maxFilterLen {
			return page.Page[Row]{}, apperr.Invalid(name, fmt.Sprintf("must be at most %d characters", maxFilterLen))
		}
	}
	rows, err := q.Query(ctx, auditlog.Select+`
		WHERE ($1::bigint = 0 OR id < $1) AND ($2::bigint = 0 OR actor_id = $2)
			AND ($3 = '' OR target_type = $3) AND ($4 = '' OR target_id = $4) AND ($5 = '' OR action = $5)
		ORDER BY id DESC LIMIT $6`, r.Cursor, f.ActorID, f.TargetType, f.TargetID, f.Action, r.Limit+1)
	if err != nil {
		return page.Page[Row]{}, fmt.Errorf("audit: list: %w", err)
	}
	list, err := pgx.CollectRows(rows, auditlog.Scan)
	if err != nil {
		return page.Page[Row]{}, fmt.Errorf("audit: list: %w", err)
	}
	return page.Of(list, r.Limit, func(a Row) int64 { return a.ID }), nil
}
