-- tether schema v1. Times are unix epoch milliseconds (UTC).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at    INTEGER NOT NULL
);

-- Personal API tokens, stored only as HMAC verifiers.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    verifier     BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

CREATE TABLE runners (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    platform    TEXT NOT NULL,
    client_id   TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    -- Last derived status, kept so it survives a control-plane restart and is shared by replicas.
    status         TEXT NOT NULL DEFAULT 'pending',
    status_reason  TEXT NOT NULL DEFAULT 'registered; no instance has connected yet',
    status_since   INTEGER NOT NULL DEFAULT 0,
    last_seen_at   INTEGER,
    runner_version TEXT,
    -- Operator intent: paused by whom, and until when (NULL: until resumed).
    paused_by      TEXT,
    paused_until   INTEGER
);

-- One row per credential generation; only HMAC verifiers, never a secret.
CREATE TABLE credentials (
    runner_id      TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    generation     INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'revoked')),
    verifier       BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,
    last_used_at   INTEGER,
    first_token_at INTEGER,
    PRIMARY KEY (runner_id, generation)
);
-- At most one usable "current" secret per runner, whatever the code above does.
CREATE UNIQUE INDEX credentials_one_active ON credentials (runner_id) WHERE state = 'active';

-- Access tokens revoked before their expiry (RFC 7009), kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

-- Append-only: the triggers below refuse any change to a written event.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    runner_id   TEXT,
    runner_name TEXT,
    target      TEXT,
    source_ip   TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_by_runner_id ON audit_events (runner_id, id);
CREATE INDEX audit_events_by_runner_name ON audit_events (runner_name, id);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
