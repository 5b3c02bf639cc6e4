BEGIN;

-- The identity of this deployment: one row, written by the control plane on
-- its first start (a random id, or DEPLOYMENT_ID). Tenant database and role
-- names carry it, and every database and role the control plane creates is
-- tagged with it, so that deployments sharing a Postgres server (staging and
-- production, two developers, a restored backup) never take each other's
-- objects. A core database restored from a backup keeps its deployment id.
CREATE TABLE deployment (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    id         TEXT NOT NULL CHECK (id ~ '^[a-z][a-z0-9]{0,15}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMIT;
