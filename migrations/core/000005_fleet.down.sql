BEGIN;
DROP TABLE IF EXISTS migration_run_tenant;
DROP TABLE IF EXISTS migration_run;
COMMIT;
