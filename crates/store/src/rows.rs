//! Rows as both backends read them, and their conversion to records. The two schemas have the same
//! tables and columns (text ids, epoch-millisecond `BIGINT`/`INTEGER` times, JSON as text), so one
//! `FromRow` struct per query shape decodes a SQLite and a PostgreSQL row alike; what a backend
//! keeps to itself is its SQL, its locking and its error mapping.
//!
//! Every conversion checks what it parses: a stored value that no longer parses is
//! [`StoreError::Corrupt`] (a bug or tampering), never a panic.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tether_domain::pipeline::{parse_tasks, RawTask};
use tether_domain::{
    ClientId, CredentialState, CredentialsVersion, Description, EnvValue, Generation, PipelineName,
    Platform, Role, RunState, RunnerName, RunnerStatus, TaskSpec, Username, Verifier,
};

use crate::{
    from_ms, AssignedTask, AuditRecord, ClientRecord, CredentialRecord, PersistedStatus,
    PipelineRecord, ReadyTask, RunRecord, RunTaskRecord, RunnerRecord, StoreError, StoreResult,
    UserRecord, WebSessionRecord,
};

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Parses a stored id (or any `FromStr` value), naming the column if it does not parse.
pub(crate) fn parse<T: std::str::FromStr>(column: &str, text: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| corrupt(column, e))
}

fn generation(column: &str, n: i64) -> StoreResult<Generation> {
    u32::try_from(n)
        .map(Generation)
        .map_err(|_| corrupt(column, format!("generation {n} out of range")))
}

fn state(column: &str, text: &str) -> StoreResult<RunState> {
    RunState::parse(text).map_err(|e| corrupt(column, e))
}

fn opt_time(ms: Option<i64>) -> Option<time::OffsetDateTime> {
    ms.map(from_ms)
}

/// The runner columns every runner query selects (`r` is the runners table).
pub(crate) const RUNNER_COLUMNS: &str = "r.id, r.name, r.description, r.platform, r.client_id, r.created_at, r.created_by,
     r.status, r.status_reason, r.status_since, r.last_seen_at, r.runner_version, r.paused_by, r.paused_until,
     (SELECT c.generation FROM credentials c WHERE c.runner_id = r.id AND c.state = 'active') AS generation,
     (SELECT MAX(c.expires_at) FROM credentials c WHERE c.runner_id = r.id AND c.state = 'retiring') AS retiring_until";

#[derive(sqlx::FromRow)]
pub(crate) struct RunnerRow {
    id: String,
    name: String,
    description: String,
    platform: String,
    client_id: String,
    created_at: i64,
    created_by: String,
    status: String,
    status_reason: String,
    status_since: i64,
    last_seen_at: Option<i64>,
    runner_version: Option<String>,
    paused_by: Option<String>,
    paused_until: Option<i64>,
    generation: Option<i64>,
    retiring_until: Option<i64>,
}

impl TryFrom<RunnerRow> for RunnerRecord {
    type Error = StoreError;
    fn try_from(r: RunnerRow) -> StoreResult<Self> {
        Ok(RunnerRecord {
            id: parse("runners.id", &r.id)?,
            name: RunnerName::parse(&r.name).map_err(|e| corrupt("runners.name", e))?,
            description: Description::parse(&r.description)
                .map_err(|e| corrupt("runners.description", e))?,
            platform: Platform::parse(&r.platform).map_err(|e| corrupt("runners.platform", e))?,
            client_id: ClientId::parse(&r.client_id)
                .map_err(|e| corrupt("runners.client_id", e))?,
            generation: generation("credentials.generation", r.generation.unwrap_or(0))?,
            created_at: from_ms(r.created_at),
            created_by: r.created_by,
            status: PersistedStatus {
                status: RunnerStatus::parse(&r.status)
                    .ok_or_else(|| corrupt("runners.status", "unknown status"))?,
                reason: r.status_reason,
                since: from_ms(r.status_since).max(from_ms(r.created_at)),
                last_seen_at: opt_time(r.last_seen_at),
                runner_version: r.runner_version,
            },
            paused_by: r.paused_by,
            paused_until: opt_time(r.paused_until),
            retiring_until: opt_time(r.retiring_until),
        })
    }
}

/// `(id, name)` of a runner.
pub(crate) fn runner_ref(
    id: &str,
    name: &str,
) -> StoreResult<(tether_domain::RunnerId, RunnerName)> {
    Ok((
        parse("runners.id", id)?,
        RunnerName::parse(name).map_err(|e| corrupt("runners.name", e))?,
    ))
}

/// The query of [`ClientRow`]: a client's runner and all its generations, newest first. `$1` is
/// the client id.
pub(crate) const CLIENT_SELECT: &str =
    "SELECT r.id, r.name, r.credentials_version, c.generation, c.state, c.verifier, c.created_at,
            c.expires_at, c.first_token_at, c.created_by, c.last_used_at, c.revoked_at, c.revoked_by
     FROM runners r JOIN credentials c ON c.runner_id = r.id
     WHERE r.client_id = $1 ORDER BY c.generation DESC";

#[derive(sqlx::FromRow)]
pub(crate) struct ClientRow {
    id: String,
    name: String,
    credentials_version: i64,
    generation: i64,
    state: String,
    verifier: Vec<u8>,
    created_at: i64,
    expires_at: Option<i64>,
    first_token_at: Option<i64>,
    created_by: String,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
}

/// Assembles a client from its rows (one per generation); `None` if there are none.
pub(crate) fn client_from_rows(
    client_id: &ClientId,
    rows: Vec<ClientRow>,
) -> StoreResult<Option<ClientRecord>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let (runner_id, runner_name) = runner_ref(&first.id, &first.name)?;
    let version = CredentialsVersion(first.credentials_version);
    let generations = rows
        .into_iter()
        .map(|row| {
            Ok(CredentialRecord {
                generation: generation("credentials.generation", row.generation)?,
                state: CredentialState::parse(&row.state)
                    .map_err(|e| corrupt("credentials.state", e))?,
                verifier: Verifier::from_slice(&row.verifier)
                    .ok_or_else(|| corrupt("credentials.verifier", "wrong length"))?,
                created_at: from_ms(row.created_at),
                expires_at: opt_time(row.expires_at),
                first_token_at: opt_time(row.first_token_at),
                created_by: row.created_by,
                last_used_at: opt_time(row.last_used_at),
                revoked_at: opt_time(row.revoked_at),
                revoked_by: row.revoked_by,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(ClientRecord {
        runner_id,
        runner_name,
        client_id: client_id.clone(),
        version,
        generations,
    }))
}

/// A generation number as stored (`BIGINT`) back to the domain's.
pub(crate) fn generations(column: &str, stored: Vec<i64>) -> StoreResult<Vec<Generation>> {
    let mut out = stored
        .into_iter()
        .map(|n| generation(column, n))
        .collect::<StoreResult<Vec<_>>>()?;
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn one_generation(column: &str, stored: i64) -> StoreResult<Generation> {
    generation(column, stored)
}

pub(crate) const USER_COLUMNS: &str = "u.id, u.username, u.password_hash, u.role, u.created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    username: String,
    password_hash: String,
    role: String,
    created_at: i64,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;
    fn try_from(u: UserRow) -> StoreResult<Self> {
        Ok(UserRecord {
            id: parse("users.id", &u.id)?,
            username: Username::parse(&u.username).map_err(|e| corrupt("users.username", e))?,
            password_hash: u.password_hash,
            role: Role::parse(&u.role).map_err(|e| corrupt("users.role", e))?,
            created_at: from_ms(u.created_at),
        })
    }
}

/// The query of [`TokenUserRow`]: `$1` the token's verifier, `$2` now (ms).
pub(crate) const TOKEN_USER_SELECT: &str =
    "SELECT u.id, u.username, u.password_hash, u.role, u.created_at, t.id AS token_id
     FROM api_tokens t JOIN users u ON u.id = t.user_id
     WHERE t.verifier = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)";

#[derive(sqlx::FromRow)]
pub(crate) struct TokenUserRow {
    #[sqlx(flatten)]
    user: UserRow,
    token_id: String,
}

impl TryFrom<TokenUserRow> for (UserRecord, tether_domain::ApiTokenId) {
    type Error = StoreError;
    fn try_from(r: TokenUserRow) -> StoreResult<Self> {
        Ok((r.user.try_into()?, parse("api_tokens.id", &r.token_id)?))
    }
}

/// A user's tokens: `$1` the user id.
pub(crate) const API_TOKENS_SELECT: &str =
    "SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens
     WHERE user_id = $1 ORDER BY created_at, id";

#[derive(sqlx::FromRow)]
pub(crate) struct ApiTokenRow {
    id: String,
    name: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TryFrom<ApiTokenRow> for crate::ApiTokenRecord {
    type Error = StoreError;
    fn try_from(r: ApiTokenRow) -> StoreResult<Self> {
        Ok(crate::ApiTokenRecord {
            id: parse("api_tokens.id", &r.id)?,
            name: r.name,
            created_at: from_ms(r.created_at),
            expires_at: r.expires_at.map(from_ms),
            last_used_at: r.last_used_at.map(from_ms),
        })
    }
}

/// Records one use of a token: `$1` the time (ms), `$2` the token id.
pub(crate) const API_TOKEN_USED: &str = "UPDATE api_tokens SET last_used_at = $1
     WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)";

/// The query of [`WebSessionRow`]: `$1` the session id's verifier, `$2` now (ms).
pub(crate) const WEB_SESSION_SELECT: &str =
    "SELECT u.id, u.username, u.password_hash, u.role, u.created_at,
            s.created_at AS session_created_at, s.expires_at
     FROM web_sessions s JOIN users u ON u.id = s.user_id
     WHERE s.id_hash = $1 AND s.expires_at > $2";

#[derive(sqlx::FromRow)]
pub(crate) struct WebSessionRow {
    #[sqlx(flatten)]
    user: UserRow,
    session_created_at: i64,
    expires_at: i64,
}

impl TryFrom<WebSessionRow> for WebSessionRecord {
    type Error = StoreError;
    fn try_from(s: WebSessionRow) -> StoreResult<Self> {
        Ok(WebSessionRecord {
            user: s.user.try_into()?,
            created_at: from_ms(s.session_created_at),
            expires_at: from_ms(s.expires_at),
        })
    }
}

/// The audit query: `$1` a runner id or name (or NULL), `$2` before this id (or NULL), `$3` limit.
pub(crate) const AUDIT_SELECT: &str =
    "SELECT id, at, actor, action, runner_id, runner_name, target, source_ip, detail
     FROM audit_events
     WHERE ($1 IS NULL OR runner_id = $1 OR runner_name = $1)
       AND ($2 IS NULL OR id < $2)
     ORDER BY id DESC LIMIT $3";

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    runner_id: Option<String>,
    runner_name: Option<String>,
    target: Option<String>,
    source_ip: Option<String>,
    detail: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(a: AuditRow) -> Self {
        AuditRecord {
            id: a.id,
            at: from_ms(a.at),
            actor: a.actor,
            action: a.action,
            runner_id: a.runner_id,
            runner_name: a.runner_name,
            target: a.target,
            source_ip: a.source_ip,
            detail: serde_json::from_str(&a.detail).unwrap_or(Value::Null),
        }
    }
}

/// A pipeline's tasks as stored (a JSON array).
pub(crate) fn tasks_to_json(tasks: &[TaskSpec]) -> String {
    Value::Array(
        tasks
            .iter()
            .map(|t| {
                json!({"name": t.name.as_str(), "run": t.run, "env": env_value(&t.env), "timeout_seconds": t.timeout_seconds})
            })
            .collect(),
    )
    .to_string()
}

fn tasks_from_json(text: &str) -> StoreResult<Vec<TaskSpec>> {
    #[derive(serde::Deserialize)]
    struct Stored {
        name: String,
        run: String,
        #[serde(default)]
        env: BTreeMap<String, StoredEnv>,
        timeout_seconds: Option<u64>,
    }
    let stored: Vec<Stored> =
        serde_json::from_str(text).map_err(|e| corrupt("pipelines.tasks", e))?;
    let envs: Vec<BTreeMap<String, EnvValue>> =
        stored.iter().map(|t| env_from_stored(&t.env)).collect();
    let raw: Vec<RawTask<'_>> = stored
        .iter()
        .zip(&envs)
        .map(|(t, env)| RawTask {
            name: &t.name,
            run: &t.run,
            env,
            timeout_seconds: t.timeout_seconds,
        })
        .collect();
    parse_tasks(&raw).map_err(|e| corrupt("pipelines.tasks", format!("{}: {}", e.field, e.error)))
}

pub(crate) const PIPELINE_COLUMNS: &str = "name, tasks, created_at, updated_at, updated_by";

#[derive(sqlx::FromRow)]
pub(crate) struct PipelineRow {
    name: String,
    tasks: String,
    created_at: i64,
    updated_at: i64,
    updated_by: String,
}

impl TryFrom<PipelineRow> for PipelineRecord {
    type Error = StoreError;
    fn try_from(p: PipelineRow) -> StoreResult<Self> {
        Ok(PipelineRecord {
            name: PipelineName::parse(&p.name).map_err(|e| corrupt("pipelines.name", e))?,
            tasks: tasks_from_json(&p.tasks)?,
            created_at: from_ms(p.created_at),
            updated_at: from_ms(p.updated_at),
            updated_by: p.updated_by,
        })
    }
}

pub(crate) const RUN_COLUMNS: &str =
    "id, pipeline, runner_id, runner_name, state, reason, created_at, created_by,
     started_at, finished_at, cancel_requested_by";

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) id: String,
    pipeline: String,
    runner_id: String,
    runner_name: String,
    state: String,
    reason: Option<String>,
    created_at: i64,
    created_by: String,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    cancel_requested_by: Option<String>,
}

impl RunRow {
    pub(crate) fn into_record(self, tasks: Vec<RunTaskRecord>) -> StoreResult<RunRecord> {
        Ok(RunRecord {
            id: parse("runs.id", &self.id)?,
            pipeline: self.pipeline,
            runner_id: parse("runs.runner_id", &self.runner_id)?,
            runner_name: self.runner_name,
            state: state("runs.state", &self.state)?,
            reason: self.reason,
            created_at: from_ms(self.created_at),
            created_by: self.created_by,
            started_at: opt_time(self.started_at),
            finished_at: opt_time(self.finished_at),
            cancel_requested_by: self.cancel_requested_by,
            tasks,
        })
    }

    /// The run's state, for a caller that decides before it assembles the record.
    pub(crate) fn state(&self) -> StoreResult<RunState> {
        state("runs.state", &self.state)
    }
}

/// A run's tasks in execution order: `$1` the run id.
pub(crate) const TASKS_SELECT: &str =
    "SELECT id, name, state, exit_code, reason, instance_id, started_at, finished_at
     FROM run_tasks WHERE run_id = $1 ORDER BY idx";

#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: String,
    name: String,
    state: String,
    exit_code: Option<i32>,
    reason: Option<String>,
    instance_id: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl TryFrom<TaskRow> for RunTaskRecord {
    type Error = StoreError;
    fn try_from(t: TaskRow) -> StoreResult<Self> {
        Ok(RunTaskRecord {
            id: parse("run_tasks.id", &t.id)?,
            name: t.name,
            state: state("run_tasks.state", &t.state)?,
            exit_code: t.exit_code,
            reason: t.reason,
            instance_id: t.instance_id,
            started_at: opt_time(t.started_at),
            finished_at: opt_time(t.finished_at),
        })
    }
}

/// Tasks assigned to an instance and not finished; callers append `AND …` conditions.
pub(crate) const ASSIGNED_SELECT: &str =
    "SELECT t.id, t.run_id, r.runner_id, t.instance_id, t.assigned_at, t.last_seq
     FROM run_tasks t JOIN runs r ON r.id = t.run_id WHERE t.state = 'running'";

#[derive(sqlx::FromRow)]
pub(crate) struct AssignedRow {
    id: String,
    run_id: String,
    runner_id: String,
    instance_id: Option<String>,
    assigned_at: Option<i64>,
    last_seq: i64,
}

impl TryFrom<AssignedRow> for AssignedTask {
    type Error = StoreError;
    fn try_from(a: AssignedRow) -> StoreResult<Self> {
        Ok(AssignedTask {
            task_id: parse("run_tasks.id", &a.id)?,
            run_id: parse("run_tasks.run_id", &a.run_id)?,
            runner_id: parse("runs.runner_id", &a.runner_id)?,
            instance_id: a.instance_id.unwrap_or_default(),
            assigned_at: from_ms(a.assigned_at.unwrap_or(0)),
            last_seq: u64::try_from(a.last_seq).unwrap_or(0),
        })
    }
}

/// What an instance needs to run a task; callers append the `WHERE` clause.
pub(crate) const READY_SELECT: &str =
    "SELECT t.id, t.run_id, r.pipeline, t.name, t.command, t.env, t.timeout_seconds
     FROM runs r JOIN run_tasks t ON t.run_id = r.id";

/// The conditions of a ready task of runner `$1` (its run's first queued task, none running), oldest
/// run first, at most `$2`.
pub(crate) const READY_WHERE: &str =
    "WHERE r.runner_id = $1 AND r.state IN ('queued', 'running') AND r.cancel_requested_by IS NULL
       AND t.state = 'queued'
       AND t.idx = (SELECT MIN(q.idx) FROM run_tasks q WHERE q.run_id = r.id AND q.state = 'queued')
       AND NOT EXISTS (SELECT 1 FROM run_tasks b WHERE b.run_id = r.id AND b.state = 'running')
     ORDER BY r.id LIMIT $2";

#[derive(sqlx::FromRow)]
pub(crate) struct ReadyRow {
    id: String,
    run_id: String,
    pipeline: String,
    name: String,
    command: String,
    env: String,
    timeout_seconds: Option<i64>,
}

impl TryFrom<ReadyRow> for ReadyTask {
    type Error = StoreError;
    fn try_from(r: ReadyRow) -> StoreResult<Self> {
        let stored: BTreeMap<String, StoredEnv> =
            serde_json::from_str(&r.env).map_err(|e| corrupt("run_tasks.env", e))?;
        let env = env_from_stored(&stored);
        let spec = parse_tasks(&[RawTask {
            name: &r.name,
            run: &r.command,
            env: &env,
            timeout_seconds: r.timeout_seconds.and_then(|s| u64::try_from(s).ok()),
        }])
        .map_err(|e| corrupt("run_tasks", format!("{}: {}", e.field, e.error)))?
        .pop()
        .ok_or_else(|| corrupt("run_tasks", "empty task"))?;
        Ok(ReadyTask {
            task_id: parse("run_tasks.id", &r.id)?,
            run_id: parse("run_tasks.run_id", &r.run_id)?,
            pipeline: r.pipeline,
            spec,
        })
    }
}

/// A task's env as stored (a JSON object).
pub(crate) fn env_to_json(env: &BTreeMap<String, EnvValue>) -> String {
    env_value(env).to_string()
}

/// An env map as stored: a plain value as a string, a secret as `{"sealed": "<base64>"}` (rows
/// from before secrets are all strings, and read the same).
fn env_value(env: &BTreeMap<String, EnvValue>) -> Value {
    Value::Object(
        env.iter()
            .map(|(k, v)| {
                let v = match v {
                    EnvValue::Plain(p) => Value::String(p.clone()),
                    EnvValue::Sealed(s) => json!({ "sealed": s }),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StoredEnv {
    Plain(String),
    Sealed { sealed: String },
}

fn env_from_stored(stored: &BTreeMap<String, StoredEnv>) -> BTreeMap<String, EnvValue> {
    stored
        .iter()
        .map(|(k, v)| {
            let v = match v {
                StoredEnv::Plain(p) => EnvValue::Plain(p.clone()),
                StoredEnv::Sealed { sealed } => EnvValue::Sealed(sealed.clone()),
            };
            (k.clone(), v)
        })
        .collect()
}

/// What an update needs to know about its task and run before it applies.
#[derive(sqlx::FromRow)]
pub(crate) struct UpdateTargetRow {
    pub(crate) run_id: String,
    pub(crate) name: String,
    state: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) last_seq: i64,
    pub(crate) cancel_requested_by: Option<String>,
    pub(crate) log_bytes: i64,
}

impl UpdateTargetRow {
    pub(crate) fn state(&self) -> StoreResult<RunState> {
        state("run_tasks.state", &self.state)
    }
}

/// Joins a run's log chunks (`(start, chunk)`, in order) from byte `offset` on, at most `limit`
/// bytes of them, ending on a character boundary (one character more than `limit` when it is
/// smaller than the first one, so a reader always moves on). An offset inside a character (a
/// client that counted wrongly) resumes at the next one.
pub(crate) fn assemble_log(offset: i64, limit: u64, chunks: Vec<(i64, String)>) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out = String::new();
    for (start, chunk) in chunks {
        let skip = usize::try_from(offset.saturating_sub(start)).unwrap_or(0);
        let from = (skip..=chunk.len())
            .find(|&i| chunk.is_char_boundary(i))
            .unwrap_or(chunk.len());
        let rest = &chunk[from..];
        let room = limit.saturating_sub(out.len());
        if rest.len() <= room {
            out.push_str(rest);
            continue;
        }
        let mut end = room;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 && out.is_empty() {
            end = rest.chars().next().map_or(0, char::len_utf8);
        }
        out.push_str(&rest[..end]);
        break;
    }
    out
}

/// The pending-pause query result: runners whose timed pause is due.
pub(crate) fn runner_refs(
    rows: Vec<(String, String)>,
) -> StoreResult<Vec<(tether_domain::RunnerId, RunnerName)>> {
    rows.iter().map(|(id, name)| runner_ref(id, name)).collect()
}

/// Counts a refused login: `$1` username, `$2` source address, `$3` now, `$4` the oldest window
/// start that still counts (an older window starts again at 1).
pub(crate) const LOGIN_FAILURE_UPSERT: &str =
    "INSERT INTO login_failures (username, source_ip, failures, first_at) VALUES ($1, $2, 1, $3)
     ON CONFLICT (username, source_ip) DO UPDATE SET
         failures = CASE WHEN login_failures.first_at < $4 THEN 1 ELSE login_failures.failures + 1 END,
         first_at = CASE WHEN login_failures.first_at < $4 THEN $3 ELSE login_failures.first_at END
     RETURNING failures";

/// `(failures, first_at)` of a pair whose window is still open: `$1` username, `$2` address, `$3`
/// the oldest window start that still counts.
pub(crate) const LOGIN_FAILURES_SELECT: &str =
    "SELECT failures, first_at FROM login_failures WHERE username = $1 AND source_ip = $2 AND first_at >= $3";

pub(crate) fn login_failures(row: Option<(i64, i64)>) -> Option<(u32, time::OffsetDateTime)> {
    row.map(|(n, at)| (u32::try_from(n).unwrap_or(u32::MAX), from_ms(at)))
}

/// Records a session that opened: `$1` replica, `$2` session, `$3` runner, `$4` instance, `$5`
/// generation, `$6` connected at, `$7` hostname, `$8` secret source, `$9` hot reload, `$10` secret
/// file. A runner deleted meanwhile has no sessions to record.
pub(crate) const SESSION_OPENED_INSERT: &str =
    "INSERT INTO runner_sessions (replica_id, session_id, runner_id, instance_id, generation,
                                  connected_at, last_heartbeat_at, generation_since, hostname,
                                  secret_source, hot_reload, secret_file)
     SELECT $1, $2, $3, $4, $5, $6, $6, $6, $7, $8, $9, $10
     WHERE EXISTS (SELECT 1 FROM runners WHERE id = $3)
     ON CONFLICT (replica_id, session_id) DO NOTHING";

/// `$1` replica, `$2` session, `$3` generation, `$4` when.
pub(crate) const SESSION_REAUTH_UPDATE: &str =
    "UPDATE runner_sessions SET generation_since = $4, generation = $3
     WHERE replica_id = $1 AND session_id = $2 AND closed_at IS NULL AND generation <> $3";

/// Open sessions of live replicas other than `$2` (seen at or after `$3`), for the runners
/// `runner_filter` selects from `$1`, at most `$4` rows. A session's last heartbeat is its
/// replica's last liveness record (sessions are not written per heartbeat), or when it opened.
pub(crate) fn sessions_elsewhere_sql(runner_filter: &str) -> String {
    format!(
        "SELECT s.replica_id, s.runner_id, s.instance_id, s.hostname, s.generation,
                COALESCE(s.generation_since, s.connected_at) AS generation_since, s.connected_at,
                CASE WHEN p.last_seen_at > s.last_heartbeat_at THEN p.last_seen_at
                     ELSE s.last_heartbeat_at END AS last_heartbeat_at, s.secret_source, s.hot_reload, s.secret_file,
                (SELECT count(*) FROM run_tasks t JOIN runs r ON r.id = t.run_id
                 WHERE r.runner_id = s.runner_id AND t.instance_id = s.instance_id
                   AND t.state = 'running') AS running_tasks
         FROM runner_sessions s JOIN replicas p ON p.id = s.replica_id
         WHERE s.runner_id IN ({runner_filter}) AND s.closed_at IS NULL AND s.replica_id <> $2
           AND p.last_seen_at >= $3
         ORDER BY s.runner_id, s.connected_at, s.instance_id
         LIMIT $4"
    )
}

#[derive(sqlx::FromRow)]
pub(crate) struct SharedSessionRow {
    replica_id: String,
    runner_id: String,
    instance_id: String,
    hostname: String,
    generation: i64,
    generation_since: i64,
    connected_at: i64,
    last_heartbeat_at: i64,
    secret_source: Option<String>,
    hot_reload: Option<bool>,
    secret_file: Option<String>,
    running_tasks: i64,
}

impl TryFrom<SharedSessionRow> for crate::SharedSession {
    type Error = StoreError;
    fn try_from(r: SharedSessionRow) -> StoreResult<Self> {
        Ok(crate::SharedSession {
            replica_id: r.replica_id,
            runner_id: parse("runner_sessions.runner_id", &r.runner_id)?,
            instance_id: r.instance_id,
            hostname: r.hostname,
            generation: generation("runner_sessions.generation", r.generation)?,
            generation_since: from_ms(r.generation_since),
            connected_at: from_ms(r.connected_at),
            last_heartbeat_at: from_ms(r.last_heartbeat_at),
            running_tasks: u32::try_from(r.running_tasks).unwrap_or(u32::MAX),
            secret_source: r.secret_source,
            hot_reload: r.hot_reload,
            secret_file: r.secret_file,
        })
    }
}

/// The sessions of one instance recorded by replicas other than this one: `$1` runner, `$2`
/// instance, `$3` this replica.
pub(crate) const PRESENCE_SELECT: &str =
    "SELECT s.closed_at, s.last_heartbeat_at, p.last_seen_at AS replica_seen_at
     FROM runner_sessions s LEFT JOIN replicas p ON p.id = s.replica_id
     WHERE s.runner_id = $1 AND s.instance_id = $2 AND s.replica_id <> $3";

#[derive(sqlx::FromRow)]
pub(crate) struct PresenceRow {
    closed_at: Option<i64>,
    last_heartbeat_at: i64,
    replica_seen_at: Option<i64>,
}

/// Live if a session is open on a replica seen at or after `live_after`; otherwise gone since the
/// latest end (a session of a dead replica ended when it was last seen).
pub(crate) fn presence(
    rows: Vec<PresenceRow>,
    live_after: time::OffsetDateTime,
) -> crate::SharedPresence {
    let live_after = crate::to_ms(live_after);
    let mut gone: Option<i64> = None;
    for r in rows {
        let ended = match (r.closed_at, r.replica_seen_at) {
            (Some(closed), _) => closed,
            (None, Some(seen)) if seen >= live_after => return crate::SharedPresence::Live,
            (None, Some(seen)) => seen,
            (None, None) => r.last_heartbeat_at,
        };
        gone = Some(gone.map_or(ended, |g| g.max(ended)));
    }
    gone.map_or(crate::SharedPresence::Unknown, |ms| {
        crate::SharedPresence::GoneSince(from_ms(ms))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_offset_inside_a_character_resumes_at_the_next_one() {
        let chunks = vec![(0, "ab".to_owned()), (2, "é!".to_owned())];
        assert_eq!(assemble_log(0, 100, chunks.clone()), "abé!");
        assert_eq!(assemble_log(3, 100, chunks.clone()), "!");
        assert_eq!(assemble_log(2, 100, chunks), "é!");
    }

    #[test]
    fn a_log_page_stops_at_its_limit_on_a_character_boundary_and_always_moves_on() {
        let chunks = vec![(0, "ab".to_owned()), (2, "é!".to_owned())];
        assert_eq!(assemble_log(0, 2, chunks.clone()), "ab");
        // "abé" is 4 bytes: a limit of 3 stops before the character.
        assert_eq!(assemble_log(0, 3, chunks.clone()), "ab");
        assert_eq!(assemble_log(0, 4, chunks.clone()), "abé");
        // A limit smaller than the first character still returns that character.
        assert_eq!(assemble_log(2, 1, chunks), "é");
    }

    #[test]
    fn a_generation_out_of_range_is_corrupt_not_a_panic() {
        assert!(matches!(
            one_generation("credentials.generation", -1),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            one_generation("credentials.generation", 7).expect("valid"),
            Generation(7)
        );
    }
}
