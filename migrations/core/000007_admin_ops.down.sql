BEGIN;
DROP TABLE IF EXISTS provisioning_attempt;
DROP TABLE IF EXISTS invitation_token;
ALTER TABLE coreuser DROP COLUMN IF EXISTS max_organizations;
DROP TABLE IF EXISTS audit_log;
DROP FUNCTION IF EXISTS audit_log_append_only();
COMMIT;
