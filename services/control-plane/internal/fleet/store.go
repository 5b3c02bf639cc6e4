package fleet

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The SQL of the fleet's tables, migration_run and migration_run_tenant
// (migrations/core/000005_fleet.up.sql).

// querier is the pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const runColumns = `id, status, target_version, canary, concurrency, on_error, started_at, finished_at`

func scanRun(row pgx.Row) (Run, error) {
	var r Run
	err := row.Scan(&r.ID, &r.Status, &r.TargetVersion, &r.Canary, &r.Concurrency, &r.OnError, &r.StartedAt, &r.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, ErrNotFound
	}
	return r, err
}

const tenantColumns = `organization_id, state, canary, server, from_version, schema_version, coalesce(error, ''),
	attempts, started_at, finished_at`

func scanTenant(row pgx.Row) (Tenant, error) {
	var t Tenant
	err := row.Scan(&t.TenantID, &t.State, &t.Canary, &t.Server, &t.FromVersion, &t.SchemaVersion, &t.Error,
		&t.Attempts, &t.StartedAt, &t.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, ErrNotFound
	}
	return t, err
}

// insertRun inserts a running run; a run already in progress makes it fail
// with a unique violation.
func insertRun(ctx context.Context, tx pgx.Tx, sp spec) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `INSERT INTO migration_run (target_version, canary, concurrency, on_error)
		VALUES ($1, $2, $3, $4) RETURNING id`, sp.target, sp.canary, sp.concurrency, sp.onError).Scan(&id)
	return id, err
}

// insertTenants adds the tenants of run id in one statement.
func insertTenants(ctx context.Context, tx pgx.Tx, id int64, rows []Tenant) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	orgIDs, canary, servers, states := make([]int64, n), make([]bool, n), make([]string, n), make([]string, n)
	from, finished := make([]int32, n), make([]*time.Time, n)
	now := time.Now()
	for i, t := range rows {
		orgIDs[i], canary[i], servers[i], states[i], from[i] = t.TenantID, t.Canary, t.Server, string(t.State), int32(t.FromVersion)
		if t.State == StateSkipped {
			finished[i] = &now
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO migration_run_tenant
			(run_id, organization_id, canary, server, state, from_version, schema_version, finished_at)
		SELECT $1, o, c, s, st, v, v, f FROM unnest($2::bigint[], $3::bool[], $4::text[], $5::text[], $6::int[], $7::timestamptz[])
			AS x(o, c, s, st, v, f)`,
		id, orgIDs, canary, servers, states, from, finished)
	return err
}

// lockRun reads run id and locks it until tx ends: every change of a run
// and of its tenants' states happens under this lock, so two control
// planes never dispatch one run at the same time.
func lockRun(ctx context.Context, tx pgx.Tx, id int64) (Run, error) {
	return scanRun(tx.QueryRow(ctx, `SELECT `+runColumns+` FROM migration_run WHERE id = $1 FOR UPDATE`, id))
}

// activeRun is the id of the run in progress (running or paused), if any.
func activeRun(ctx context.Context, q querier) (int64, bool, error) {
	var id int64
	err := q.QueryRow(ctx, `SELECT id FROM migration_run WHERE status IN ('running', 'paused')`).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return id, err == nil, err
}

func setStatus(ctx context.Context, tx pgx.Tx, id int64, status Status) error {
	_, err := tx.Exec(ctx, `UPDATE migration_run SET status = $2,
			finished_at = CASE WHEN $2 IN ('running', 'paused') THEN NULL ELSE now() END
		WHERE id = $1`, id, status)
	return err
}

// dispatch marks as running, and returns, the pending tenants of run that
// may start now: per server, as many as its concurrency leaves room for
// beside those running; only canaries while any canary is unfinished.
func dispatch(ctx context.Context, tx pgx.Tx, run Run) ([]int64, error) {
	rows, err := tx.Query(ctx, `WITH phase AS (
			SELECT EXISTS (SELECT FROM migration_run_tenant
				WHERE run_id = $1 AND canary AND state IN ('pending', 'running')) AS canaries_only
		), busy AS (
			SELECT server, count(*) AS n FROM migration_run_tenant WHERE run_id = $1 AND state = 'running' GROUP BY server
		), ranked AS (
			SELECT t.organization_id, t.server,
				row_number() OVER (PARTITION BY t.server ORDER BY t.canary DESC, t.organization_id) AS rn
			FROM migration_run_tenant t, phase
			WHERE t.run_id = $1 AND t.state = 'pending' AND (t.canary OR NOT phase.canaries_only)
		)
		UPDATE migration_run_tenant t SET state = 'running', attempts = t.attempts + 1, started_at = now(), finished_at = NULL
		FROM ranked r LEFT JOIN busy b ON b.server = r.server
		WHERE t.run_id = $1 AND t.organization_id = r.organization_id AND r.rn <= $2 - coalesce(b.n, 0)
		RETURNING t.organization_id`, run.ID, run.Concurrency)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// countsOf tallies run id's tenants per state.
func countsOf(ctx context.Context, q querier, id int64) (Counts, error) {
	all, err := countsOfRuns(ctx, q, []int64{id})
	return all[id], err
}

func countsOfRuns(ctx context.Context, q querier, ids []int64) (map[int64]Counts, error) {
	rows, err := q.Query(ctx, `SELECT run_id, state, count(*) FROM migration_run_tenant
		WHERE run_id = ANY($1) GROUP BY run_id, state`, ids)
	if err != nil {
		return nil, err
	}
	out := map[int64]Counts{}
	var (
		id    int64
		state State
		n     int
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &state, &n}, func() error {
		c := out[id]
		switch state {
		case StatePending:
			c.Pending = n
		case StateRunning:
			c.Running = n
		case StateDone:
			c.Done = n
		case StateSkipped:
			c.Skipped = n
		case StateFailed:
			c.Failed = n
		}
		out[id] = c
		return nil
	})
	return out, err
}

// loadRuns returns runs below id before, newest first (only run `only`
// when it is not 0), with their counts and first failed tenants.
func loadRuns(ctx context.Context, q querier, only, before int64, limit int) ([]Run, error) {
	rows, err := q.Query(ctx, `SELECT `+runColumns+` FROM migration_run
		WHERE ($1::bigint = 0 OR id = $1) AND id < $2 ORDER BY id DESC LIMIT $3`, only, before, limit)
	if err != nil {
		return nil, err
	}
	runs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Run, error) { return scanRun(r) })
	if err != nil || len(runs) == 0 {
		return runs, err
	}
	ids := make([]int64, len(runs))
	for i, r := range runs {
		ids[i] = r.ID
	}
	counts, err := countsOfRuns(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	frows, err := q.Query(ctx, `SELECT run_id, `+tenantColumns+` FROM (
			SELECT *, row_number() OVER (PARTITION BY run_id ORDER BY organization_id) AS rn
			FROM migration_run_tenant WHERE run_id = ANY($1) AND state = 'failed'
		) f WHERE rn <= $2 ORDER BY run_id, organization_id`, ids, MaxFailedShown)
	if err != nil {
		return nil, err
	}
	failed := map[int64][]Tenant{}
	for frows.Next() {
		var runID int64
		var t Tenant
		if err := frows.Scan(&runID, &t.TenantID, &t.State, &t.Canary, &t.Server, &t.FromVersion, &t.SchemaVersion, &t.Error,
			&t.Attempts, &t.StartedAt, &t.FinishedAt); err != nil {
			frows.Close()
			return nil, err
		}
		failed[runID] = append(failed[runID], t)
	}
	if err := frows.Err(); err != nil {
		return nil, err
	}
	for i := range runs {
		runs[i].Counts = counts[runs[i].ID]
		runs[i].Failed = failed[runs[i].ID]
	}
	return runs, nil
}

// listTenants returns run id's tenants after tenant id `after`, in id order.
func listTenants(ctx context.Context, q querier, id int64, state State, after int64, limit int) ([]Tenant, error) {
	rows, err := q.Query(ctx, `SELECT `+tenantColumns+` FROM migration_run_tenant
		WHERE run_id = $1 AND ($2::text = '' OR state = $2) AND organization_id > $3
		ORDER BY organization_id LIMIT $4`, id, state, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
}

// tenantIDs lists run id's tenants in state.
func tenantIDs(ctx context.Context, q querier, id int64, state State) ([]int64, error) {
	rows, err := q.Query(ctx, `SELECT organization_id FROM migration_run_tenant
		WHERE run_id = $1 AND state = $2 ORDER BY organization_id`, id, state)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// tenantOf reads one tenant of a run together with its run.
func tenantOf(ctx context.Context, q querier, runID, orgID int64) (Tenant, Run, error) {
	run, err := scanRun(q.QueryRow(ctx, `SELECT `+runColumns+` FROM migration_run WHERE id = $1`, runID))
	if err != nil {
		return Tenant{}, run, err
	}
	t, err := scanTenant(q.QueryRow(ctx, `SELECT `+tenantColumns+` FROM migration_run_tenant
		WHERE run_id = $1 AND organization_id = $2`, runID, orgID))
	return t, run, err
}

// setOutcome records what became of a running tenant; pending puts it back
// to wait for its turn.
func setOutcome(ctx context.Context, tx pgx.Tx, runID, orgID int64, o outcome) error {
	_, err := tx.Exec(ctx, `UPDATE migration_run_tenant SET state = $3, schema_version = $4, error = NULLIF($5, ''),
			finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
		WHERE run_id = $1 AND organization_id = $2 AND state = 'running'`,
		runID, orgID, o.state, o.version, o.detail)
	return err
}

// retryFailed sends run id's failed tenants back to pending.
func retryFailed(ctx context.Context, tx pgx.Tx, id int64) error {
	_, err := tx.Exec(ctx, `UPDATE migration_run_tenant SET state = 'pending', error = NULL, finished_at = NULL
		WHERE run_id = $1 AND state = 'failed'`, id)
	return err
}
