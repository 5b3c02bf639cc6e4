package tenantdb

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

// Actions of a tenant's audit log: its user management.
const (
	AuditRoleChange     = "user.role_change"
	AuditDeactivate     = "user.deactivate"
	AuditActivate       = "user.activate"
	AuditPasswordChange = "user.password_change"
	// AuditPasswordSync is the owner's core password carried into the
	// tenant by the control plane.
	AuditPasswordSync = "user.password_sync"
)

// AuditSchemaVersion is the tenant migration that adds the audit log.
// Tenants still on an older schema (provisioned before it, until the fleet
// is migrated) have none: HasAudit tells callers to skip recording.
const AuditSchemaVersion = 3

// HasAudit reports whether a tenant database at schemaVersion has the
// audit log.
func HasAudit(schemaVersion int) bool { return schemaVersion >= AuditSchemaVersion }

// AuditEntry is one user-management action to record in the tenant's
// audit log.
type AuditEntry struct {
	// ActorID is the tenant user who acted; 0 is the system (the control
	// plane).
	ActorID int64
	Action  string
	// TargetUserID is the user acted on.
	TargetUserID int64
	Detail       map[string]any
}

// RecordAudit writes e in tx, the transaction of the change; the request
// id and client address come from ctx (reqctx) when there is a request.
func RecordAudit(ctx context.Context, tx pgx.Tx, e AuditEntry) error {
	if e.Action == "" || e.TargetUserID < 1 {
		return errors.New("tenantdb: an audit entry needs an action and a target")
	}
	actorType, actorID := "system", (*int64)(nil)
	if e.ActorID > 0 {
		actorType, actorID = "user", &e.ActorID
	}
	detail := e.Detail
	if detail == nil {
		detail = map[string]any{}
	}
	raw, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("audit detail: %w", err)
	}
	req, _ := reqctx.From(ctx)
	_, err = tx.Exec(ctx, `INSERT INTO audit_log
			(actor_type, actor_id, action, target_type, target_id, request_id, client_ip, outcome, detail)
		VALUES ($1, $2, $3, 'user', $4, NULLIF($5, ''), NULLIF($6, '')::inet, 'success', $7)`,
		actorType, actorID, e.Action, strconv.FormatInt(e.TargetUserID, 10), req.ID, req.ClientIP, raw)
	if err != nil {
		return fmt.Errorf("record audit %s: %w", e.Action, err)
	}
	return nil
}

// AuditRow is a recorded entry of the tenant's audit log: the same row as
// the core database's log.
type AuditRow = auditlog.Row

// AuditFilter selects rows for ListAudit; zero fields do not filter.
type AuditFilter struct {
	ActorID  int64
	TargetID int64
	Action   string
}

// ListAudit returns one page of the tenant's audit log, newest first
// (keyset pagination on id).
func ListAudit(ctx context.Context, q Querier, f AuditFilter, r page.Request) (page.Page[AuditRow], error) {
	if len(f.Action) > 200 {
		return page.Page[AuditRow]{}, apperr.Invalid("action", "must be at most 200 characters")
	}
	target := ""
	if f.TargetID > 0 {
		target = strconv.FormatInt(f.TargetID, 10)
	}
	rows, err := q.Query(ctx, auditlog.Select+`
		WHERE ($1::bigint = 0 OR id < $1) AND ($2::bigint = 0 OR actor_id = $2)
			AND ($3 = '' OR (target_type = 'user' AND target_id = $3)) AND ($4 = '' OR action = $4)
		ORDER BY id DESC LIMIT $5`, r.Cursor, f.ActorID, target, f.Action, r.Limit+1)
	if err != nil {
		return page.Page[AuditRow]{}, fmt.Errorf("list audit: %w", err)
	}
	list, err := pgx.CollectRows(rows, auditlog.Scan)
	if err != nil {
		return page.Page[AuditRow]{}, fmt.Errorf("list audit: %w", err)
	}
	return page.Of(list, r.Limit, func(a AuditRow) int64 { return a.ID }), nil
}
