BEGIN;

-- A tenant caught in the middle of a move stays on its source server.
UPDATE organization SET status = 'ready' WHERE status = 'moving';
DROP INDEX IF EXISTS organization_db_server_idx;
ALTER TABLE organization
    DROP CONSTRAINT organization_status_check,
    ADD CONSTRAINT organization_status_check
        CHECK (status IN ('provisioning', 'ready', 'failed', 'suspended', 'deleting', 'deleted')),
    DROP COLUMN IF EXISTS move_error,
    DROP COLUMN IF EXISTS move_frozen_at,
    DROP COLUMN IF EXISTS move_to_server_id,
    DROP COLUMN IF EXISTS db_server_id;
DROP TABLE IF EXISTS db_server;

COMMIT;
