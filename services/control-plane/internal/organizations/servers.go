package organizations

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/events"
	"tenantbase/services/control-plane/internal/audit"
	"tenantbase/services/control-plane/internal/outbox"
)

// TenantsPerServer counts, per database server, the organizations placed
// on it that are not deleted, plus those moving to it: a move takes its
// place on the target from the moment it is asked for. It implements
// dbservers.Counter.
func (s *Store) TenantsPerServer(ctx context.Context, tx pgx.Tx) (map[int64]int, error) {
	rows, err := tx.Query(ctx, `SELECT server, count(*) FROM (
			SELECT db_server_id AS server FROM organization WHERE db_server_id IS NOT NULL AND status <> 'deleted'
			UNION ALL
			SELECT move_to_server_id FROM organization WHERE move_to_server_id IS NOT NULL
		) placed GROUP BY server`)
	if err != nil {
		return nil, err
	}
	counts := map[int64]int{}
	var id int64
	var n int
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		counts[id] = n
		return nil
	})
	return counts, err
}

// AdoptUnplaced records serverID as the server of every organization that
// has a database but no server: those provisioned before servers were
// registered, all on the one server of TENANT_DB_ADMIN_URL.
func (s *Store) AdoptUnplaced(ctx context.Context, serverID int64) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE organization SET db_server_id = $1
		WHERE db_server_id IS NULL AND db_name IS NOT NULL`, serverID)
	return tag.RowsAffected(), err
}

// Place records the server of organization id, chosen by choose within
// the same transaction, unless one is recorded already: a re-run of
// provisioning keeps the first choice. It returns the server in force.
func (s *Store) Place(ctx context.Context, id int64, choose func(ctx context.Context, tx pgx.Tx) (int64, error)) (int64, error) {
	var server int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		org, err := scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM organization WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if server = org.ServerID; server != 0 {
			return nil
		}
		if server, err = choose(ctx, tx); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE organization SET db_server_id = $2, updated_at = now() WHERE id = $1`, id, server)
		return err
	})
	return server, err
}

// StartMove sends a ready organization to status moving towards the server
// target returns (checked within the same transaction) and enqueues the
// move. No event yet: the move announces itself once the source has
// stopped taking writes.
func (s *Store) StartMove(ctx context.Context, id int64, target func(ctx context.Context, tx pgx.Tx, org Organization) (int64, error)) (Organization, error) {
	var org Organization
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if org, err = scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM organization WHERE id = $1 FOR UPDATE`, id)); err != nil {
			return err
		}
		if org.Status != StatusReady {
			return ErrInvalidStatus
		}
		to, err := target(ctx, tx, org)
		if err != nil {
			return err
		}
		from := org.ServerID
		org, err = scan(tx.QueryRow(ctx, `UPDATE organization SET status = 'moving', status_detail = NULL,
				move_to_server_id = $2, move_frozen_at = NULL, move_error = NULL, updated_at = now()
			WHERE id = $1 RETURNING `+columns, id, to))
		if err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationMove, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(id), Detail: map[string]any{"from_db_server_id": from, "to_db_server_id": to}}); err != nil {
			return err
		}
		return s.jobs.EnqueueMove(ctx, tx, id)
	})
	return org, err
}

// Moving lists the ids of the organizations being moved.
func (s *Store) Moving(ctx context.Context) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM organization WHERE status = 'moving' ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// MoveFrozen records when the source of a move stopped taking writes and
// publishes tenant.updated (status moving), once: tenant planes drop their
// connections, and the new ones are read-only. ok is false when it was
// recorded before or the organization is no longer moving.
func (s *Store) MoveFrozen(ctx context.Context, id int64, at time.Time) (ok bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		org, err := scan(tx.QueryRow(ctx, `UPDATE organization SET move_frozen_at = $2, updated_at = now()
			WHERE id = $1 AND status = 'moving' AND move_frozen_at IS NULL RETURNING `+columns, id, at))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		return outbox.Add(ctx, tx, s.Event(events.TenantUpdated, org))
	})
	return ok, err
}

// FinishMove switches a moving organization to its target server, at
// host:port: status ready, tenant.updated, and then run in the same
// transaction (it schedules the removal of the old copy). ok is false when
// the move was finished or abandoned before.
func (s *Store) FinishMove(ctx context.Context, id, to int64, host string, port int, then func(tx pgx.Tx) error) (ok bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		org, err := scan(tx.QueryRow(ctx, `UPDATE organization SET status = 'ready', status_detail = NULL,
				db_server_id = move_to_server_id, db_host = $3, db_port = $4,
				move_to_server_id = NULL, move_frozen_at = NULL, move_error = NULL, updated_at = now()
			WHERE id = $1 AND status = 'moving' AND move_to_server_id = $2 AND move_error IS NULL
			RETURNING `+columns, id, to, host, port))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		if err := outbox.Add(ctx, tx, s.Event(events.TenantUpdated, org)); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationMoved, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(id), Detail: map[string]any{"db_server_id": to}}); err != nil {
			return err
		}
		return then(tx)
	})
	return ok, err
}

// FailMove records why a move failed, unless a reason is recorded already:
// from then on the move is only rolled back. It returns the organization.
func (s *Store) FailMove(ctx context.Context, id int64, reason string) (Organization, error) {
	if _, err := s.pool.Exec(ctx, `UPDATE organization SET move_error = $2, updated_at = now()
		WHERE id = $1 AND status = 'moving' AND move_error IS NULL`, id, reason); err != nil {
		return Organization{}, err
	}
	return s.Get(ctx, id)
}

// AbandonMove ends a failed move: the organization is ready on its source
// server again, with the reason as its status_detail, tenant.updated is
// published, and then runs in the same transaction (it schedules the
// removal of the target's copy). It does nothing unless the organization
// is moving.
func (s *Store) AbandonMove(ctx context.Context, id int64, then func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		org, err := scan(tx.QueryRow(ctx, `UPDATE organization SET status = 'ready',
				status_detail = NULLIF(move_error, ''),
				move_to_server_id = NULL, move_frozen_at = NULL, move_error = NULL, updated_at = now()
			WHERE id = $1 AND status = 'moving' RETURNING `+columns, id))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := outbox.Add(ctx, tx, s.Event(events.TenantUpdated, org)); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationMoved, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(id), Outcome: audit.Failure,
			Detail: map[string]any{"db_server_id": org.ServerID, "reason": org.StatusDetail}}); err != nil {
			return err
		}
		return then(tx)
	})
}

// RequestRotation enqueues a new password for a ready or suspended
// organization's login role.
func (s *Store) RequestRotation(ctx context.Context, id int64) (Organization, error) {
	var org Organization
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if org, err = scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM organization WHERE id = $1 FOR UPDATE`, id)); err != nil {
			return err
		}
		if org.Status != StatusReady && org.Status != StatusSuspended {
			return ErrInvalidStatus
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationRotateCredentials, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(id)}); err != nil {
			return err
		}
		return s.jobs.EnqueueRotation(ctx, tx, id)
	})
	return org, err
}

// RotatePassword stores a new sealed password for a ready or suspended
// organization and publishes tenant.updated, in one transaction, in which
// apply (which gives the role the new password) runs last: the stored
// password and the role's change together, but for the moment between
// apply and the commit. ok is false, and nothing is changed, when the
// organization is in another status.
func (s *Store) RotatePassword(ctx context.Context, id int64, sealed []byte, apply func(org Organization) error) (ok bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		org, err := scan(tx.QueryRow(ctx, `UPDATE organization SET db_password_enc = $2, updated_at = now()
			WHERE id = $1 AND status IN ('ready', 'suspended') AND db_password_enc IS NOT NULL
			RETURNING `+columns, id, sealed))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		if err := outbox.Add(ctx, tx, s.Event(events.TenantUpdated, org)); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationCredentialsRotated, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(id)}); err != nil {
			return err
		}
		return apply(org)
	})
	return ok, err
}
