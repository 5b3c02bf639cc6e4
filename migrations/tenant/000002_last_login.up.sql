BEGIN;

-- When the user last logged in successfully (the tenant plane sets it on
-- every login); NULL until their first login after this migration. An
-- expand step: code that does not know the column keeps working.
ALTER TABLE tenantuser ADD COLUMN last_login_at TIMESTAMPTZ;

COMMIT;
