BEGIN;

-- One row per tenant. The tenant's database and login role are named
-- tenant_<id>; db_* hold where and how the tenant plane connects, with the
-- role's password encrypted by the control plane (AES-256-GCM) so that a
-- dump of this table does not reveal it.
CREATE TABLE organization (
    id              BIGSERIAL PRIMARY KEY,
    name            VARCHAR(100) NOT NULL,
    owner_id        BIGINT NOT NULL REFERENCES coreuser (id) ON DELETE RESTRICT,
    status          TEXT NOT NULL DEFAULT 'provisioning'
                    CHECK (status IN ('provisioning', 'ready', 'failed', 'suspended', 'deleting', 'deleted')),
    status_detail   TEXT,
    schema_version  INTEGER NOT NULL DEFAULT 0,
    db_host         TEXT,
    db_port         INTEGER,
    db_name         TEXT,
    db_user         TEXT,
    db_password_enc BYTEA,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    ready_at        TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX organization_owner_idx ON organization (owner_id, id);
CREATE INDEX organization_status_idx ON organization (status, id);

-- Transactional outbox: events are written in the transaction that changes
-- the state they announce, and relayed to JetStream in id order. A row is
-- marked published only after JetStream acknowledged it.
CREATE TABLE event_outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    payload      JSON NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX event_outbox_pending_idx ON event_outbox (id) WHERE published_at IS NULL;
CREATE INDEX event_outbox_published_idx ON event_outbox (published_at) WHERE published_at IS NOT NULL;

COMMIT;
