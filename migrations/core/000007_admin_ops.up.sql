BEGIN;

-- The audit log: one row per state-changing action, written in the
-- transaction of the change. actor_id is the core user who acted; NULL
-- with actor_type 'system' (background jobs, start-up) or 'anonymous' (an
-- unauthenticated request, such as a sign-up or a failed login). Rows are
-- never changed or removed by the application: the triggers below refuse
-- UPDATE, DELETE and TRUNCATE.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('user', 'system', 'anonymous')),
    actor_id    BIGINT,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    request_id  TEXT,
    client_ip   INET,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    detail      JSONB NOT NULL DEFAULT '{}',
    CONSTRAINT audit_log_actor CHECK ((actor_type = 'user') = (actor_id IS NOT NULL))
);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Organizations per owner: NULL means the deployment's default
-- (OWNER_MAX_ORGANIZATIONS).
ALTER TABLE coreuser ADD COLUMN max_organizations INTEGER CHECK (max_organizations >= 0);

-- Invitations of owners onboarded by a platform admin: stored hashed like
-- verification tokens; a row is single use (used_at). An invited account
-- has no password (password_hash = '') until the invitation is accepted.
CREATE TABLE invitation_token (
    token_hash TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES coreuser (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at    TIMESTAMPTZ
);
CREATE INDEX invitation_token_user_idx ON invitation_token (user_id);

-- Provisioning attempts as the fleet view shows them: which step failed
-- and why, in words fit for an admin (never the raw error).
CREATE TABLE provisioning_attempt (
    id              BIGSERIAL PRIMARY KEY,
    organization_id BIGINT NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    step            TEXT,
    error           TEXT,
    at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX provisioning_attempt_org_idx ON provisioning_attempt (organization_id, id);

COMMIT;
