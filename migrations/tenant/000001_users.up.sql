BEGIN;

CREATE TABLE tenantuser (
    id            BIGSERIAL PRIMARY KEY,
    email         VARCHAR(255) NOT NULL UNIQUE,
    password_hash VARCHAR(128) NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    role          TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    display_name  VARCHAR(100),
    bio           VARCHAR(1000),
    avatar_url    VARCHAR(2048),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  TIMESTAMPTZ,
    -- Bumped on deactivation and password change: access tokens carry it,
    -- so older tokens stop working at once.
    token_version INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT tenantuser_email_lower CHECK (email = lower(email))
);

CREATE TABLE refresh_token (
    id         BIGSERIAL PRIMARY KEY,
    family_id  UUID NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES tenantuser (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX refresh_token_family_idx ON refresh_token (family_id);
CREATE INDEX refresh_token_user_idx ON refresh_token (user_id);

COMMIT;
