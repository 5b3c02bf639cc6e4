BEGIN;

-- A migration run moves a set of tenant databases to one schema version
-- (services/control-plane/internal/fleet, docs/migrations.md).
CREATE TABLE migration_run (
    id             BIGSERIAL PRIMARY KEY,
    status         TEXT NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'paused', 'completed', 'completed_with_failures', 'cancelled')),
    target_version INTEGER NOT NULL CHECK (target_version >= 1),
    canary         INTEGER NOT NULL CHECK (canary >= 0),
    concurrency    INTEGER NOT NULL CHECK (concurrency >= 1),
    on_error       TEXT NOT NULL CHECK (on_error IN ('continue', 'pause')),
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ
);
-- One run in progress (running or paused) at a time, across replicas.
CREATE UNIQUE INDEX migration_run_in_progress_idx ON migration_run ((TRUE)) WHERE status IN ('running', 'paused');

-- The tenants of a run. A row is pending until its job is enqueued, running
-- while a job exists for it, then done, skipped (already at the target, or
-- no longer ready or suspended) or failed (parked with its error until the
-- run is resumed). server is where the tenant's database lives: concurrency
-- is bounded per server.
CREATE TABLE migration_run_tenant (
    run_id          BIGINT NOT NULL REFERENCES migration_run (id) ON DELETE CASCADE,
    organization_id BIGINT NOT NULL REFERENCES organization (id),
    canary          BOOLEAN NOT NULL,
    server          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'skipped', 'failed')),
    from_version    INTEGER NOT NULL,
    schema_version  INTEGER NOT NULL,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    PRIMARY KEY (run_id, organization_id)
);
CREATE INDEX migration_run_tenant_state_idx ON migration_run_tenant (run_id, state, server, organization_id);

COMMIT;
