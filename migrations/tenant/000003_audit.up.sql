BEGIN;

-- The tenant's audit log of user management: role changes, deactivations
-- and password changes, written in the transaction of the change. actor_id
-- is the tenant user who acted; NULL with actor_type 'system' when the
-- control plane acted (the owner's password carried over from the core).
-- The triggers refuse UPDATE, DELETE and TRUNCATE.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('user', 'system')),
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

COMMIT;
