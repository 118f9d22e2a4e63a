-- Pipelines, runs, their tasks and logs. Times are unix epoch milliseconds (UTC).

CREATE TABLE pipelines (
    name       TEXT PRIMARY KEY,
    -- JSON array of {name, run, env, timeout_seconds}, validated before it is written.
    tasks      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);

-- A run keeps its own copy of the tasks, so editing or deleting the pipeline never changes history.
-- runner_id has no foreign key: deleting a runner cancels its active runs but keeps their record.
CREATE TABLE runs (
    id                  TEXT PRIMARY KEY, -- UUIDv7: sorts in creation order
    pipeline            TEXT NOT NULL,
    runner_id           TEXT NOT NULL,
    runner_name         TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
    reason              TEXT,
    created_at          INTEGER NOT NULL,
    created_by          TEXT NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    cancel_requested_by TEXT,
    -- Bytes of log stored so far: the offset of the next chunk.
    log_bytes           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_runner ON runs (runner_id, id);
CREATE INDEX runs_active ON runs (runner_id, id) WHERE state IN ('queued', 'running');

CREATE TABLE run_tasks (
    id              TEXT PRIMARY KEY, -- the task id the runner sees
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,
    name            TEXT NOT NULL,
    command         TEXT NOT NULL,
    env             TEXT NOT NULL DEFAULT '{}',
    timeout_seconds INTEGER,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
    exit_code       INTEGER,
    reason          TEXT,
    instance_id     TEXT,
    assigned_at     INTEGER,
    started_at      INTEGER,
    finished_at     INTEGER,
    -- Highest update sequence number applied: updates are at-least-once, applied once.
    last_seq        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, idx)
);
CREATE INDEX run_tasks_running ON run_tasks (instance_id) WHERE state = 'running';

-- A run's combined output, in the order it was produced; start is the chunk's byte position.
CREATE TABLE run_logs (
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    start   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    chunk   TEXT NOT NULL,
    PRIMARY KEY (run_id, start)
);
