package accounts

import (
	"context"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/page"
	"tenantbase/libs/tenantdb"
)

type (
	auditOnKey struct{}
	actorKey   struct{}
)

// WithAudit returns ctx saying whether the tenant's database has the audit
// log (tenantdb.HasAudit of its schema version): user-management changes
// under ctx are recorded there only then.
func WithAudit(ctx context.Context, enabled bool) context.Context {
	return context.WithValue(ctx, auditOnKey{}, enabled)
}

// WithActor returns ctx naming the tenant user who acts under it.
func WithActor(ctx context.Context, userID int64) context.Context {
	return context.WithValue(ctx, actorKey{}, userID)
}

// record writes an audit entry in tx when the tenant has the audit log.
func record(ctx context.Context, tx pgx.Tx, action string, target int64, detail map[string]any) error {
	if on, _ := ctx.Value(auditOnKey{}).(bool); !on {
		return nil
	}
	actor, _ := ctx.Value(actorKey{}).(int64)
	return tenantdb.RecordAudit(ctx, tx, tenantdb.AuditEntry{ActorID: actor, Action: action, TargetUserID: target, Detail: detail})
}

// AuditQuery selects a page of the tenant's audit log.
type AuditQuery struct {
	tenantdb.AuditFilter
	page.Request
}

// Audit returns one page of the tenant's audit log, newest first; a
// tenant whose database has none yet has an empty one.
func (s *Service) Audit(ctx context.Context, db DB, q AuditQuery) (page.Page[tenantdb.AuditRow], error) {
	r, err := q.Request.Normalize()
	if err != nil {
		return page.Page[tenantdb.AuditRow]{}, err
	}
	if on, _ := ctx.Value(auditOnKey{}).(bool); !on {
		return page.Page[tenantdb.AuditRow]{Items: []tenantdb.AuditRow{}}, nil
	}
	return tenantdb.ListAudit(ctx, db, q.AuditFilter, r)
}
