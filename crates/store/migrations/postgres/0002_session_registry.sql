-- Which control-plane process (replica) holds which runner session, so replicas on one database
-- agree on whether a runner is connected. A replica records itself in `replicas` and refreshes
-- last_seen_at every heartbeat interval; a session row is written when the session opens and
-- marked closed when it ends (kept a while, for "how long has this instance been gone"). A
-- replica whose last_seen_at lapsed is dead: the others close its sessions. Times are epoch ms.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

CREATE TABLE runner_sessions (
    replica_id        TEXT NOT NULL,
    session_id        BIGINT NOT NULL,
    runner_id         TEXT NOT NULL REFERENCES runners (id) ON DELETE CASCADE,
    instance_id       TEXT NOT NULL,
    generation        BIGINT NOT NULL,
    connected_at      BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL,
    closed_at         BIGINT,
    PRIMARY KEY (replica_id, session_id)
);
CREATE INDEX runner_sessions_by_runner ON runner_sessions (runner_id, instance_id);
CREATE INDEX runner_sessions_open ON runner_sessions (replica_id) WHERE closed_at IS NULL;

-- Refused logins per (username, source address) within the current window, so that a lockout on
-- one replica holds on all of them. source_ip is '' when unknown.
CREATE TABLE login_failures (
    username   TEXT NOT NULL,
    source_ip  TEXT NOT NULL,
    failures   BIGINT NOT NULL,
    first_at   BIGINT NOT NULL,
    PRIMARY KEY (username, source_ip)
);
CREATE INDEX login_failures_by_age ON login_failures (first_at);
