BEGIN;

CREATE TABLE coreuser (
    id            BIGSERIAL PRIMARY KEY,
    email         VARCHAR(255) NOT NULL UNIQUE,
    password_hash VARCHAR(128) NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    is_verified   BOOLEAN NOT NULL DEFAULT FALSE,
    is_owner      BOOLEAN NOT NULL DEFAULT FALSE,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  TIMESTAMPTZ,
    CONSTRAINT coreuser_email_lower CHECK (email = lower(email))
);

-- Verification tokens are stored hashed; a row is single use (used_at).
CREATE TABLE verification_token (
    token_hash TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES coreuser (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at    TIMESTAMPTZ
);
CREATE INDEX verification_token_user_idx ON verification_token (user_id);

CREATE TABLE refresh_token (
    id         BIGSERIAL PRIMARY KEY,
    family_id  UUID NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES coreuser (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX refresh_token_family_idx ON refresh_token (family_id);
CREATE INDEX refresh_token_user_idx ON refresh_token (user_id);

COMMIT;
