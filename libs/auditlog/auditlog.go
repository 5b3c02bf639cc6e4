// Package auditlog is what the two audit logs share: the core database's
// audit_log (control plane actions) and each tenant database's (its user
// management) have the same columns, read into the same row.
package auditlog

import (
	"time"

	"github.com/jackc/pgx/v5"
)

// Row is a recorded entry as the APIs show it.
type Row struct {
	ID         int64          `json:"id"`
	At         time.Time      `json:"at"`
	ActorType  string         `json:"actor_type"`
	ActorID    *int64         `json:"actor_id"`
	Action     string         `json:"action"`
	TargetType string         `json:"target_type"`
	TargetID   string         `json:"target_id"`
	RequestID  *string        `json:"request_id"`
	ClientIP   *string        `json:"client_ip"`
	Outcome    string         `json:"outcome"`
	Detail     map[string]any `json:"detail"`
}

// Select reads the columns Scan takes, from audit_log; a query adds its
// WHERE, ORDER BY and LIMIT.
const Select = `SELECT id, at, actor_type, actor_id, action, target_type, target_id, request_id,
		host(client_ip), outcome, detail
	FROM audit_log`

// Scan reads one row of a query that starts with Select (for
// pgx.CollectRows), its time in UTC.
func Scan(row pgx.CollectableRow) (Row, error) {
	var a Row
	err := row.Scan(&a.ID, &a.At, &a.ActorType, &a.ActorID, &a.Action, &a.TargetType, &a.TargetID, &a.RequestID,
		&a.ClientIP, &a.Outcome, &a.Detail)
	a.At = a.At.UTC()
	return a, err
}
