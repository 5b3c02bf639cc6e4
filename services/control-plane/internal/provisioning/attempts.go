package provisioning

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/services/control-plane/internal/organizations"
)

// Attempt is one run of an organization's provisioning job as the fleet
// view shows it: the step that failed and why, in words (Reason), never
// the raw error.
type Attempt struct {
	Attempt int       `json:"attempt"`
	Step    *string   `json:"step"`
	Error   *string   `json:"error"`
	At      time.Time `json:"at"`
}

// recordAttempt keeps the outcome of one provisioning attempt. A run that
// found the organization no longer provisioning is recorded only when the
// organization is ready (the successful run); the record is best effort,
// as it only informs admins.
func (p *Provisioner) recordAttempt(ctx context.Context, orgID int64, attempt int, err error) {
	var step, reason *string
	if err != nil {
		r := Reason(err)
		reason = &r
		var se *StepError
		if errors.As(err, &se) {
			step = &se.Step
		}
	} else {
		org, gerr := p.store.Get(ctx, orgID)
		if gerr != nil || org.Status != organizations.StatusReady {
			return
		}
		s := StepMarkReady
		step = &s
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := p.core.Exec(rctx, `INSERT INTO provisioning_attempt (organization_id, attempt, step, error)
		VALUES ($1, $2, $3, $4)`, orgID, attempt, step, reason); err != nil {
		p.log.Warn("provisioning attempt not recorded", "tenant_id", orgID, "error", err.Error())
	}
}

// Attempts returns the most recent provisioning attempts of an
// organization, newest first.
func Attempts(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, orgID int64, limit int) ([]Attempt, error) {
	rows, err := q.Query(ctx, `SELECT attempt, step, error, at FROM provisioning_attempt
		WHERE organization_id = $1 ORDER BY id DESC LIMIT $2`, orgID, limit)
	if err != nil {
		return nil, fmt.Errorf("provisioning attempts: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Attempt, error) {
		var a Attempt
		err := row.Scan(&a.Attempt, &a.Step, &a.Error, &a.At)
		a.At = a.At.UTC()
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("provisioning attempts: %w", err)
	}
	return list, nil
}
