-- Accounts: the player base. Auth reads and writes these; sessions, refresh
-- tokens, revocations and lockout counters stay in Redis.
CREATE TABLE accounts (
    id            text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('password', 'guest')),
    -- Normalized (NFKC, lower case); NULL for guest accounts.
    username      text UNIQUE,
    -- argon2id PHC string; NULL for guest accounts.
    password_hash text,
    roles         text[] NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CHECK ((kind = 'password') = (username IS NOT NULL AND password_hash IS NOT NULL))
);

-- A guest account's device: SHA-256 hex of the device id (never the id itself).
CREATE TABLE devices (
    device_hash text PRIMARY KEY,
    account_id  text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL
);
CREATE INDEX devices_account ON devices (account_id);

-- Bans, kept as history: a ban is in force while lifted_at is NULL and
-- expires_at is NULL or in the future.
CREATE TABLE bans (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    reason     text NOT NULL,
    banned_by  text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    lifted_at  timestamptz
);
CREATE INDEX bans_account ON bans (account_id);
