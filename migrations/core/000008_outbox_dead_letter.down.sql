BEGIN;
DROP INDEX IF EXISTS event_outbox_pending_idx;
ALTER TABLE event_outbox DROP COLUMN IF EXISTS attempts, DROP COLUMN IF EXISTS last_error, DROP COLUMN IF EXISTS dead_at;
CREATE INDEX event_outbox_pending_idx ON event_outbox (id) WHERE published_at IS NULL;
COMMIT;
