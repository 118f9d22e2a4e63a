-- tether schema on PostgreSQL: the same tables, columns and rules as the SQLite schema after its
-- migrations 0001–0006 (so one set of row decoders reads both). Ids are text (UUIDv7 sorts in
-- creation order), times are unix epoch milliseconds (UTC), every integer is BIGINT but exit codes.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at    BIGINT NOT NULL
);

-- Personal API tokens, stored only as HMAC verifiers.
CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    verifier   BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

CREATE TABLE runners (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    description         TEXT NOT NULL DEFAULT '',
    platform            TEXT NOT NULL,
    client_id           TEXT NOT NULL UNIQUE,
    created_at          BIGINT NOT NULL,
    created_by          TEXT NOT NULL,
    -- Last derived status, shared by the replicas.
    status              TEXT NOT NULL DEFAULT 'pending',
    status_reason       TEXT NOT NULL DEFAULT 'registered; no instance has connected yet',
    status_since        BIGINT NOT NULL DEFAULT 0,
    last_seen_at        BIGINT,
    runner_version      TEXT,
    -- Operator intent: paused by whom, and until when (NULL: until resumed).
    paused_by           TEXT,
    paused_until        BIGINT,
    -- Bumped in the same transaction as every change to the runner's credentials.
    credentials_version BIGINT NOT NULL DEFAULT 1
);

-- One row per credential generation; only HMAC verifiers, never a secret.
CREATE TABLE credentials (
    runner_id      TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    generation     BIGINT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'revoked')),
    verifier       BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT,
    revoked_by     TEXT,
    last_used_at   BIGINT,
    first_token_at BIGINT,
    -- The newest secret of a refresh, encrypted under a key derived from the master key, kept only
    -- until reveal_until.
    sealed_secret  BYTEA,
    reveal_until   BIGINT,
    PRIMARY KEY (runner_id, generation)
);
-- At most one usable "current" secret per runner, whatever the code above does.
CREATE UNIQUE INDEX credentials_one_active ON credentials (runner_id) WHERE state = 'active';
CREATE INDEX credentials_sealed ON credentials (reveal_until) WHERE sealed_secret IS NOT NULL;
CREATE INDEX credentials_retiring ON credentials (expires_at) WHERE state = 'retiring';

-- Access tokens revoked before their expiry (RFC 7009), kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Append-only: the trigger below refuses any change to a written event.
CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
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

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE pipelines (
    name       TEXT PRIMARY KEY,
    -- JSON array of {name, run, env, timeout_seconds}, validated before it is written.
    tasks      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);

-- A run keeps its own copy of the tasks. runner_id has no foreign key: deleting a runner ends its
-- active runs but keeps their record.
CREATE TABLE runs (
    id                  TEXT PRIMARY KEY,
    pipeline            TEXT NOT NULL,
    runner_id           TEXT NOT NULL,
    runner_name         TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
    reason              TEXT,
    created_at          BIGINT NOT NULL,
    created_by          TEXT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    cancel_requested_by TEXT,
    -- Bytes of log stored so far: the offset of the next chunk.
    log_bytes           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_runner ON runs (runner_id, id);
CREATE INDEX runs_active ON runs (runner_id, id) WHERE state IN ('queued', 'running');

CREATE TABLE run_tasks (
    id              TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx             BIGINT NOT NULL,
    name            TEXT NOT NULL,
    command         TEXT NOT NULL,
    env             TEXT NOT NULL DEFAULT '{}',
    timeout_seconds BIGINT,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
    exit_code       INTEGER,
    reason          TEXT,
    instance_id     TEXT,
    assigned_at     BIGINT,
    started_at      BIGINT,
    finished_at     BIGINT,
    -- Highest update sequence number applied: updates are at-least-once, applied once.
    last_seq        BIGINT NOT NULL DEFAULT 0,
    UNIQUE (run_id, idx)
);
CREATE INDEX run_tasks_running ON run_tasks (instance_id) WHERE state = 'running';

-- A run's combined output, in the order it was produced; start is the chunk's byte position.
CREATE TABLE run_logs (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    start   BIGINT NOT NULL,
    bytes   BIGINT NOT NULL,
    task_id TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    chunk   TEXT NOT NULL,
    PRIMARY KEY (run_id, start)
);

-- Browser sessions of the web UI; only an HMAC of the session id is stored.
CREATE TABLE web_sessions (
    id_hash    BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_by_user ON web_sessions (user_id);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);

-- A fingerprint of each server key, recorded on the first start on this database: every replica
-- must start with the same keys, and one whose keys differ refuses to start.
CREATE TABLE key_fingerprints (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
