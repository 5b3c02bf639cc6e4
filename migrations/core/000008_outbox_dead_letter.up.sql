BEGIN;

-- An event the bus keeps refusing while later events go through (it is too
-- large for the stream, say) is set aside instead of blocking every event
-- behind it: attempts counts failed publishes, last_error keeps why, and
-- dead_at marks it set aside. Replay: fix the cause, then
--   UPDATE event_outbox SET dead_at = NULL, attempts = 0 WHERE id = ...;
ALTER TABLE event_outbox
    ADD COLUMN attempts   INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN last_error TEXT,
    ADD COLUMN dead_at    TIMESTAMPTZ;

DROP INDEX event_outbox_pending_idx;
CREATE INDEX event_outbox_pending_idx ON event_outbox (id) WHERE published_at IS NULL AND dead_at IS NULL;

COMMIT;
