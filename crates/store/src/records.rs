//! Rows as the store hands them out and takes them in. Not wire types: the server maps them.

use tether_domain::{
    ApiTokenId, ClientId, CredentialState, CredentialsVersion, Description, Generation,
    PipelineName, Platform, Role, RunId, RunState, RunnerId, RunnerName, RunnerStatus, TaskId,
    TaskSpec, UserId, Username, Verifier,
};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct NewRunner {
    pub id: RunnerId,
    pub name: RunnerName,
    pub description: Description,
    pub platform: Platform,
    pub client_id: ClientId,
    pub verifier: Verifier,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub struct RunnerRecord {
    pub id: RunnerId,
    pub name: RunnerName,
    pub description: Description,
    pub platform: Platform,
    pub client_id: ClientId,
    /// The active generation.
    pub generation: Generation,
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub status: PersistedStatus,
    pub paused_by: Option<String>,
    pub paused_until: Option<OffsetDateTime>,
    /// Until when the retiring (previous) generation is still accepted, if one is.
    pub retiring_until: Option<OffsetDateTime>,
}

/// The last derived status of a runner as written by the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedStatus {
    pub status: RunnerStatus,
    pub reason: String,
    pub since: OffsetDateTime,
    pub last_seen_at: Option<OffsetDateTime>,
    pub runner_version: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CredentialRecord {
    pub generation: Generation,
    pub state: CredentialState,
    pub verifier: Verifier,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub first_token_at: Option<OffsetDateTime>,
    pub created_by: String,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    /// Who revoked it: `user:<name>`, or `system` when its grace period ended.
    pub revoked_by: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub runner_id: RunnerId,
    pub runner_name: RunnerName,
    pub client_id: ClientId,
    /// The version of the credential set these generations were read at (one snapshot).
    pub version: CredentialsVersion,
    /// Newest first.
    pub generations: Vec<CredentialRecord>,
}

#[derive(Debug, Clone, Copy)]
pub struct CredentialUse {
    pub runner_id: RunnerId,
    pub generation: Generation,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub username: Username,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub role: Role,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub username: Username,
    pub password_hash: String,
    pub role: Role,
    pub created_at: OffsetDateTime,
}

/// What an admin's role change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Changed,
    NoSuchUser,
    /// Refused: it would leave no admin. Nothing was written.
    LastAdmin,
}

/// A browser session of the web UI. The session id itself is never stored, only its verifier.
#[derive(Clone)]
pub struct NewWebSession {
    pub verifier: Verifier,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for NewWebSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebSession")
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A live web session with its user as they are now (a role change applies at the next request).
#[derive(Debug, Clone)]
pub struct WebSessionRecord {
    pub user: UserRecord,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub id: ApiTokenId,
    pub user_id: UserId,
    pub name: String,
    pub verifier: Verifier,
    pub created_at: OffsetDateTime,
    /// `None`: valid until revoked.
    pub expires_at: Option<OffsetDateTime>,
}

/// An API token as its owner sees it (never its value or verifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    pub id: ApiTokenId,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    /// Kept to within the flush interval (uses are written in batches).
    pub last_used_at: Option<OffsetDateTime>,
}

/// What deleting a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDeletion {
    Deleted,
    NoSuchUser,
    /// Refused: the user is the only admin.
    LastAdmin,
}

#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub runner_id: Option<RunnerId>,
    pub runner_name: Option<String>,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub runner_id: Option<String>,
    pub runner_name: Option<String>,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// A runner id or name.
    pub runner: Option<String>,
    /// Only events with an id below this (paging, newest first).
    pub before_id: Option<i64>,
    pub limit: u32,
}

pub fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[derive(Debug, Clone)]
pub struct PipelineRecord {
    pub name: PipelineName,
    pub tasks: Vec<TaskSpec>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: RunId,
    pub pipeline: PipelineName,
    pub runner_id: RunnerId,
    pub runner_name: RunnerName,
    /// In execution order, each with the id the runner will see.
    pub tasks: Vec<(TaskId, TaskSpec)>,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: RunId,
    pub pipeline: String,
    pub runner_id: RunnerId,
    pub runner_name: String,
    pub state: RunState,
    pub reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub cancel_requested_by: Option<String>,
    pub tasks: Vec<RunTaskRecord>,
}

#[derive(Debug, Clone)]
pub struct RunTaskRecord {
    pub id: TaskId,
    pub name: String,
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub instance_id: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub runner_id: Option<RunnerId>,
    pub state: Option<RunState>,
    /// Only runs with an id below this (paging, newest first).
    pub before: Option<RunId>,
    pub limit: u32,
}

/// A task whose turn has come: the first queued task of an active run with nothing running.
#[derive(Debug, Clone)]
pub struct ReadyTask {
    pub task_id: TaskId,
    pub run_id: RunId,
    pub pipeline: String,
    pub spec: TaskSpec,
}

/// A task assigned to an instance and not finished.
#[derive(Debug, Clone)]
pub struct AssignedTask {
    pub task_id: TaskId,
    pub run_id: RunId,
    pub runner_id: RunnerId,
    pub instance_id: String,
    pub assigned_at: OffsetDateTime,
    /// Updates applied so far; 0 means the runner has not confirmed the start.
    pub last_seq: u64,
}

/// One update of a task as the runner reported it.
#[derive(Debug, Clone)]
pub struct TaskProgress {
    pub task_id: TaskId,
    /// The instance whose session sent it.
    pub instance_id: String,
    pub seq: u64,
    /// `Running`, or the final state reached.
    pub state: RunState,
    pub log_chunk: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub at: OffsetDateTime,
}

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// No such task on this runner: acknowledged and dropped.
    UnknownTask,
    /// Already applied (a replay): acknowledged, nothing changed.
    Duplicate,
    /// The task had already ended (lost, cancelled); the update is dropped.
    AlreadyFinished(RunState),
    /// The task is not running on the instance that sent it (still queued, or another
    /// instance's): refused, nothing changed.
    NotAssigned,
    /// `seq` is neither stored already nor the next one (`expected`): refused, nothing changed.
    OutOfOrder { expected: u64 },
    Applied {
        /// The task reached a final state with this update.
        task_final: bool,
        /// The run reached this final state with this update.
        run_final: Option<RunState>,
        /// This update's chunk took the run's log to its limit: it was cut, and later output of
        /// the run is not kept.
        log_truncated: bool,
    },
}

/// A page of a run's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub text: String,
    /// Bytes of log stored for the run so far.
    pub total_bytes: u64,
}

/// What a cancel request changed.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The run had already ended in this state.
    AlreadyFinished(RunState),
    /// Cancelled at once (nothing was running), or waiting for these running tasks to be killed.
    Requested { running: Vec<AssignedTask> },
}

/// What a refresh does to the generation that was active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationMode {
    /// Revoked at once (the seed guide's behaviour).
    Revoke,
    /// Still accepted until this time: zero-downtime rotation.
    Overlap { expires_at: OffsetDateTime },
}

#[derive(Clone)]
pub struct NewGeneration {
    pub runner_id: RunnerId,
    pub verifier: Verifier,
    /// The plaintext secret, encrypted by the caller; kept until `reveal_until`.
    pub sealed_secret: Vec<u8>,
    pub reveal_until: OffsetDateTime,
    pub mode: RotationMode,
    pub at: OffsetDateTime,
    pub created_by: String,
}

impl std::fmt::Debug for NewGeneration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewGeneration")
            .field("runner_id", &self.runner_id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The outcome of a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub generation: Generation,
    pub previous: Generation,
    /// Generations that stopped working with this refresh.
    pub revoked: Vec<Generation>,
    /// The runner's credentials version after the change.
    pub version: CredentialsVersion,
}

/// The outcome of ending an overlap early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiringRevoked {
    /// Generations that stopped working (none: there was no overlap, and nothing changed).
    pub revoked: Vec<Generation>,
    /// The runner's credentials version after the change.
    pub version: CredentialsVersion,
}

#[derive(Clone)]
pub struct SealedSecret {
    pub generation: Generation,
    pub sealed: Vec<u8>,
    pub reveal_until: OffsetDateTime,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("generation", &self.generation)
            .field("reveal_until", &self.reveal_until)
            .finish_non_exhaustive()
    }
}

/// A retiring generation whose grace period ended.
#[derive(Debug, Clone)]
pub struct ExpiredGeneration {
    pub runner_id: RunnerId,
    pub runner_name: RunnerName,
    pub client_id: ClientId,
    pub generation: Generation,
    /// The runner's credentials version after the change.
    pub version: CredentialsVersion,
}

/// "Not if another live replica holds a session": the replica asking, and the oldest liveness
/// that still counts.
#[derive(Debug, Clone)]
pub struct LiveElsewhere {
    pub replica: String,
    pub live_after: OffsetDateTime,
}

/// A runner session as the registry records it.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: u64,
    pub runner_id: RunnerId,
    pub instance_id: String,
    pub hostname: String,
    pub generation: Generation,
    pub connected_at: OffsetDateTime,
    /// Where the instance reads its secret, whether it reloads it by itself, and from which file
    /// (as it said in its hello).
    pub secret_source: Option<String>,
    pub hot_reload: Option<bool>,
    pub secret_file: Option<String>,
}

/// An open session another replica holds, as the registry has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSession {
    pub replica_id: String,
    pub runner_id: RunnerId,
    pub instance_id: String,
    pub hostname: String,
    pub generation: Generation,
    /// When the session moved to `generation`.
    pub generation_since: OffsetDateTime,
    pub connected_at: OffsetDateTime,
    /// When its replica last confirmed it (the replica's heartbeat, not the instance's).
    pub last_heartbeat_at: OffsetDateTime,
    /// Tasks of the runner running on this instance, as the database has them.
    pub running_tasks: u32,
    pub secret_source: Option<String>,
    pub hot_reload: Option<bool>,
    pub secret_file: Option<String>,
}

/// Where an instance is connected, across replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedPresence {
    /// An open session on a live replica.
    Live,
    /// Its most recent session (on any replica) ended then; a dead replica's session counts as
    /// ended when that replica was last seen.
    GoneSince(OffsetDateTime),
    /// No replica recorded a session of it.
    Unknown,
}
