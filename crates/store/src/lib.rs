//! Storage for tether: capability traits the server depends on, and their two implementations:
//! SQLite (embedded, the default) and PostgreSQL (for several control-plane replicas).
//! Every method that changes state takes the audit event describing the change and writes both in
//! one transaction, so the audit trail can never disagree with the data.
//!
//! Errors: backends map their errors into [`StoreError`]; callers never see a driver type.
//!
//! Concurrency: no method may rely on a single writer. Several control-plane processes may call
//! any method at once, so each method that reads and then writes says what it needs under
//! "Isolation:" — which row it locks (or which conditional update decides) so that two concurrent
//! calls serialise correctly at READ COMMITTED. SQLite meets every note with its one write
//! transaction at a time; another backend meets them with the row locks named. Methods without
//! a note are single statements or inserts whose constraints decide.

mod error;
pub mod postgres;
mod records;
mod rows;
pub mod sqlite;
mod task_update;
mod url;

use async_trait::async_trait;
use tether_domain::{
    ApiTokenId, ClientId, Generation, PipelineName, Role, RunId, RunState, RunnerId, RunnerName,
    TaskId, UserId, Username, Verifier,
};
use time::OffsetDateTime;

pub use error::{Conflict, StoreError};
pub use records::*;
pub use task_update::truncation_note;
pub use url::{DatabaseUrl, PoolSettings};

pub type StoreResult<T> = Result<T, StoreError>;

/// The most rows [`ReplicaStore::sessions_elsewhere`] returns in one call.
pub const SESSIONS_LISTED: usize = 10_000;

/// Makes the audit event of a change from the change's outcome; called inside the change's
/// transaction, so the event records what the transaction did (the caller decides what it says).
pub type AuditOf<'a, T> = &'a (dyn for<'e> Fn(&'e T) -> NewAuditEvent + Send + Sync);

/// Opens the store a database URL names, applying pending migrations. The only place that knows
/// which backend a URL means.
pub async fn open(
    url: &DatabaseUrl,
    settings: &PoolSettings,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(match url.backend() {
        url::Backend::Sqlite => {
            std::sync::Arc::new(sqlite::SqliteStore::open_url(url.expose()).await?)
        }
        url::Backend::Postgres => {
            std::sync::Arc::new(postgres::PostgresStore::open(url, settings).await?)
        }
    })
}

/// The embedded default: SQLite in the file `path` (created if missing).
pub async fn open_file(path: &std::path::Path) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(sqlite::SqliteStore::open(path).await?))
}

/// A migration error as one line for the operator (both backends run sqlx's migrator).
fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::VersionMismatch(v) => StoreError::Corrupt(format!(
            "database migration {v} was applied from a different file than this build has (it was \
             edited after it landed); restore the original migration file"
        )),
        sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::Corrupt(format!(
            "the database has migration {v}, which this build does not know: it was written by a \
             newer tether; run that version (or newer) instead"
        )),
        other => StoreError::Backend(Box::new(other)),
    }
}

#[async_trait]
pub trait RunnerStore: Send + Sync {
    /// Creates the runner with its first credential generation.
    async fn create_runner(
        &self,
        new: NewRunner,
        audit: NewAuditEvent,
    ) -> StoreResult<RunnerRecord>;
    /// Runners in creation order, strictly after `after`.
    async fn list_runners(
        &self,
        after: Option<RunnerId>,
        limit: u32,
    ) -> StoreResult<Vec<RunnerRecord>>;
    async fn runner_by_id(&self, id: RunnerId) -> StoreResult<Option<RunnerRecord>>;
    async fn runner_by_name(&self, name: &RunnerName) -> StoreResult<Option<RunnerRecord>>;
    /// Deletes the runner and, with it, every credential generation; its queued and running runs
    /// end as [`tether_domain::RunEnd::runner_deleted`]. False if it did not exist.
    /// Isolation: the delete locks the runner row first, and `create_run` locks it for share, so a
    /// concurrent run for it either commits before (and is ended here) or fails with `NotFound`.
    async fn delete_runner(&self, id: RunnerId, audit: NewAuditEvent) -> StoreResult<bool>;
    /// Records a runner's newly derived status (not audited: it changes with every connection).
    /// With `unless_live_elsewhere` (a replica whose own view has no session of the runner), the
    /// status is not written while another live replica holds an open session of it: that replica's
    /// view wins. Isolation: the runner row is locked before the sessions are looked at, and a
    /// replica records a session before the status it causes, so of a disconnect on one replica
    /// and a connect on another the connect's status is the one that stays.
    async fn save_runner_status(
        &self,
        id: RunnerId,
        status: &PersistedStatus,
        unless_live_elsewhere: Option<&LiveElsewhere>,
    ) -> StoreResult<()>;
    /// After a control-plane restart no session is live: every runner that looked connected becomes
    /// `unknown` with `reason`. Returns how many changed. Only for a control plane that is the
    /// only process serving its database: with several replicas, the others still hold sessions.
    async fn reset_live_statuses(&self, reason: &str, at: OffsetDateTime) -> StoreResult<u64>;
    /// Sets (`Some((by, until))`) or clears (`None`) the operator's pause. False if no such runner.
    async fn set_paused(
        &self,
        id: RunnerId,
        pause: Option<(String, Option<OffsetDateTime>)>,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Runners whose timed pause ended at or before `now`.
    async fn pauses_due(&self, now: OffsetDateTime) -> StoreResult<Vec<(RunnerId, RunnerName)>>;
}

#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// The runner a client id belongs to and all its credential generations.
    async fn client_by_id(&self, client_id: &ClientId) -> StoreResult<Option<ClientRecord>>;
    /// Records when generations were last used (flushed in batches from memory).
    async fn record_credential_use(&self, uses: &[CredentialUse]) -> StoreResult<()>;
    /// Marks the first access token issued to a generation. Returns false (and writes no audit
    /// event) if one was already recorded. Isolation: a conditional update (`first_token_at IS
    /// NULL`) decides which of two concurrent calls records it.
    async fn record_first_token(
        &self,
        runner_id: RunnerId,
        generation: Generation,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Remembers a revoked access token until `expires_at`.
    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<()>;
    /// Whether the access token `jti` was revoked (and would not have expired yet at `now`).
    async fn access_token_revoked(&self, jti: &str, now: OffsetDateTime) -> StoreResult<bool>;
    /// Revoked access tokens (`jti`, expiry) not yet expired at `now`.
    async fn revoked_access_tokens(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(String, OffsetDateTime)>>;
    /// Forgets revoked access tokens that expired at or before `now` (run periodically). Returns
    /// how many.
    async fn purge_revoked_access_tokens(&self, now: OffsetDateTime) -> StoreResult<u64>;
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the first admin and their token, only if no user exists yet. False if users exist.
    /// Isolation: two processes starting at once on an empty database must not both create an
    /// admin: the check and the insert are one statement or under a table lock.
    async fn bootstrap_admin(
        &self,
        admin: NewUser,
        token: NewApiToken,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    async fn create_user(&self, new: NewUser, audit: NewAuditEvent) -> StoreResult<UserRecord>;
    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<UserRecord>>;
    async fn create_api_token(&self, new: NewApiToken, audit: NewAuditEvent) -> StoreResult<()>;
    /// The owner of the API token with this verifier, and the token's id, unless it expired at
    /// or before `now`.
    async fn user_by_token(
        &self,
        verifier: &Verifier,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(UserRecord, ApiTokenId)>>;
    /// A user's API tokens, oldest first (expired ones included, until revoked).
    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiTokenRecord>>;
    /// Deletes one of a user's API tokens. False (and no audit event) if the user has no such
    /// token.
    async fn revoke_api_token(
        &self,
        user: UserId,
        token: ApiTokenId,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Records when tokens were last used (batched by the caller); a time older than the one
    /// stored is ignored, a token revoked meanwhile is skipped.
    async fn record_api_token_use(&self, uses: &[(ApiTokenId, OffsetDateTime)]) -> StoreResult<()>;
    /// Deletes a user with their API tokens and web sessions, refusing to delete the last admin.
    /// Isolation: as [`UserStore::set_user_role`], the admin rows are locked before they are
    /// counted.
    async fn delete_user(
        &self,
        username: &Username,
        audit: NewAuditEvent,
    ) -> StoreResult<UserDeletion>;
    /// Every user, by username.
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Changes a user's role, refusing to demote the last admin. Isolation: the admin rows are
    /// locked before they are counted, so two concurrent demotions cannot both see another admin.
    async fn set_user_role(
        &self,
        username: &Username,
        role: Role,
        audit: NewAuditEvent,
    ) -> StoreResult<RoleChange>;
    /// Replaces a user's password hash and ends their web sessions and API tokens. False if no
    /// such user.
    async fn set_user_password(
        &self,
        username: &Username,
        password_hash: &str,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
}

/// Replicas (control-plane processes) and the runner sessions each holds, so that replicas on one
/// database agree on which runners are connected. Liveness is per replica, refreshed in one write
/// of one row per heartbeat interval, whatever the number of sessions: an open session is live
/// while its replica is (the replica itself closes the sessions whose heartbeats stop), so session
/// rows are written when a session opens, re-authenticates or closes, never per heartbeat.
#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// Records that `replica` (started at `started_at`), and with it every session it holds open,
    /// is alive at `now`: one row, whatever the number of sessions.
    async fn replica_alive(
        &self,
        replica: &str,
        started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    /// A session opened on `replica`.
    async fn session_opened(&self, replica: &str, session: &NewSession) -> StoreResult<()>;
    /// Session `session_id` of `replica` re-authenticated with `generation` at `at`.
    async fn session_reauthenticated(
        &self,
        replica: &str,
        session_id: u64,
        generation: Generation,
        at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// The open sessions of `runners` held by replicas other than `except` that were seen at or
    /// after `live_after`, ordered by runner, then connection time. At most [`SESSIONS_LISTED`]
    /// rows per call.
    async fn sessions_elsewhere(
        &self,
        runners: &[RunnerId],
        except: &str,
        live_after: OffsetDateTime,
    ) -> StoreResult<Vec<SharedSession>>;
    /// A session of `replica` ended at `at`.
    async fn session_closed(
        &self,
        replica: &str,
        session_id: u64,
        at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// `replica` is gone (it stopped, or it is this process's previous life, restarted with the
    /// same id): its open sessions end at `ended_at` and its row goes. Each runner it held a session
    /// of (open or already closed) that is left without an open session on a replica seen at or
    /// after `live_after`, and still shows a connected status, becomes `unknown` with `reason`;
    /// those runners are returned. Isolation: as in `expire_replicas`.
    async fn replica_gone(
        &self,
        replica: &str,
        ended_at: OffsetDateTime,
        live_after: OffsetDateTime,
        now: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<RunnerId>>;
    /// Closes the open sessions of every replica not seen since `dead_before` (at the time it was
    /// last seen) and forgets those replicas. Each runner left without an open session on a live
    /// replica becomes `unknown` with `reason`; those runners are returned. Isolation: one
    /// conditional delete per replica decides which process expires it; each runner row is locked
    /// before its remaining sessions are counted, as in `save_runner_status`.
    async fn expire_replicas(
        &self,
        dead_before: OffsetDateTime,
        now: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<RunnerId>>;
    /// Where `instance_id` of `runner` is, as far as replicas other than `except` recorded it:
    /// live (an open session on a replica seen at or after `live_after`), gone since its last
    /// session closed, or never seen.
    async fn instance_presence(
        &self,
        runner: RunnerId,
        instance_id: &str,
        except: &str,
        live_after: OffsetDateTime,
    ) -> StoreResult<SharedPresence>;
    /// Forgets closed sessions that ended before `before`. Returns how many.
    async fn purge_closed_sessions(&self, before: OffsetDateTime) -> StoreResult<u64>;
}

/// Browser sessions of the web UI, looked up by the verifier of the id the cookie carries.
#[async_trait]
pub trait WebSessionStore: Send + Sync {
    async fn create_web_session(&self, new: NewWebSession, audit: NewAuditEvent)
        -> StoreResult<()>;
    /// The session and its user, unless it expired at or before `now`.
    async fn web_session(
        &self,
        verifier: &Verifier,
        now: OffsetDateTime,
    ) -> StoreResult<Option<WebSessionRecord>>;
    /// Ends a session (logout). False if it did not exist; then nothing is audited.
    async fn delete_web_session(
        &self,
        verifier: &Verifier,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Deletes sessions that expired at or before `now`. Returns how many.
    async fn purge_web_sessions(&self, now: OffsetDateTime) -> StoreResult<u64>;
    /// Refused logins of `username` from `source_ip` (`""`: unknown) in the window that began at or
    /// after `window_start`: how many, and when the window began.
    async fn login_failures(
        &self,
        username: &str,
        source_ip: &str,
        window_start: OffsetDateTime,
    ) -> StoreResult<Option<(u32, OffsetDateTime)>>;
    /// Counts one more refused login at `at`; a count whose window began before `window_start`
    /// starts again at 1. Returns the new count. Isolation: one upsert, so concurrent failures on
    /// several replicas are all counted.
    async fn record_login_failure(
        &self,
        username: &str,
        source_ip: &str,
        at: OffsetDateTime,
        window_start: OffsetDateTime,
    ) -> StoreResult<u32>;
    /// A successful login forgets the pair's failures.
    async fn clear_login_failures(&self, username: &str, source_ip: &str) -> StoreResult<()>;
    /// Forgets counts whose window began before `before`. Returns how many.
    async fn purge_login_failures(&self, before: OffsetDateTime) -> StoreResult<u64>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<()>;
    /// Newest first.
    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditRecord>>;
}

/// Pipelines: named task lists that runs are made from.
#[async_trait]
pub trait PipelineStore: Send + Sync {
    /// Creates or replaces a pipeline (keeping its creation time).
    async fn put_pipeline(
        &self,
        pipeline: PipelineRecord,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRecord>;
    /// All pipelines by name.
    async fn list_pipelines(&self) -> StoreResult<Vec<PipelineRecord>>;
    async fn pipeline_by_name(&self, name: &PipelineName) -> StoreResult<Option<PipelineRecord>>;
    /// False if it did not exist. Runs keep their own copy of the tasks.
    async fn delete_pipeline(&self, name: &PipelineName, audit: NewAuditEvent)
        -> StoreResult<bool>;
}

/// Runs: a pipeline's tasks queued on one runner. A run's tasks go `queued` → `running` (claimed
/// by one instance, see [`TaskQueue`]) → a final state; a run ends when a task fails, is cancelled
/// or lost, or the last one succeeds.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// `NotFound` if the runner does not exist (any more).
    async fn create_run(&self, run: NewRun, audit: NewAuditEvent) -> StoreResult<RunRecord>;
    async fn run_by_id(&self, id: RunId) -> StoreResult<Option<RunRecord>>;
    /// Newest first.
    async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<RunRecord>>;
    /// At most `limit` bytes of the run's log from byte `offset` on (fewer to end on a character
    /// boundary; empty past the end), and the log's whole length so far.
    async fn run_log(&self, id: RunId, offset: u64, limit: u64) -> StoreResult<LogPage>;
    /// Cancels a run: queued tasks at once; running ones are returned to be killed. Isolation: the
    /// run row is locked first, so a cancel and the last task's final update serialise (the run
    /// ends once).
    async fn cancel_run(&self, id: RunId, audit: NewAuditEvent) -> StoreResult<CancelOutcome>;
}

/// The task queue: ready tasks of a runner, claims by instances, and the updates they report.
#[async_trait]
pub trait TaskQueue: Send + Sync {
    /// Runners with at least one queued or running run.
    async fn runners_with_active_runs(&self) -> StoreResult<Vec<RunnerId>>;
    /// Tasks ready to start on a runner, oldest run first.
    async fn ready_tasks(&self, runner_id: RunnerId, limit: u32) -> StoreResult<Vec<ReadyTask>>;
    /// What to send an instance to run a task (to assign it again after a reconnect).
    async fn task_assignment(&self, task: TaskId) -> StoreResult<Option<ReadyTask>>;
    /// Tasks assigned and not finished, of one runner or of all.
    async fn assigned_tasks(&self, runner_id: Option<RunnerId>) -> StoreResult<Vec<AssignedTask>>;
    /// Assigns a queued task to an instance. False if it is no longer queued (someone else took it,
    /// or the run was cancelled). Isolation: a conditional update (`state = 'queued'`) decides
    /// which of two concurrent claims wins; the loser changes nothing.
    async fn claim_task(
        &self,
        task: TaskId,
        instance_id: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Puts a task the instance refused back in the queue, if it has not started.
    async fn requeue_task(&self, task: TaskId, instance_id: &str) -> StoreResult<bool>;
    /// Applies one update from an instance of a runner, idempotently by `seq`, only if the task
    /// is running on that instance and `seq` is the next one; a final update may end the run (as
    /// [`tether_domain::RunEnd::after_task`] says). The run's log keeps at most `max_log_bytes`
    /// (the rule is in `task_update`). Isolation: the task row and its run row are locked before
    /// `last_seq` and the log offset are read, so two deliveries of one update (a resend racing
    /// the original) apply it once and log chunks never overlap.
    async fn apply_task_update(
        &self,
        runner_id: RunnerId,
        update: TaskProgress,
        max_log_bytes: u64,
    ) -> StoreResult<UpdateOutcome>;
    /// Ends an unfinished task (and its run) without the runner: `Lost`, or `Cancelled` when the
    /// instance is gone. Returns the run if the task was unfinished. Isolation: the task row is
    /// locked while its state is checked, so a late update from the runner and this call do not
    /// both end it.
    async fn end_task(
        &self,
        task: TaskId,
        state: RunState,
        reason: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Option<RunRecord>>;
}

/// Credential rotation: refresh, reveal, ending an overlap. Each change is one transaction with its
/// audit event, so a crash leaves either the old or the new state, never a runner without exactly
/// one active generation.
#[async_trait]
pub trait RotationStore: Send + Sync {
    /// Makes a new active generation. The previous active one is revoked or retiring (per mode);
    /// any older retiring one is revoked; older sealed secrets are deleted; the runner's
    /// credentials version is bumped; `audit` makes the event recorded with it from the outcome.
    /// `NotFound` if the runner does not exist. Isolation: the runner row is locked before the
    /// active generation is read, so concurrent refreshes of one runner run one after the other
    /// (the second sees the first's generation as the previous one); the partial unique index
    /// "one active generation per runner" is the last line of defence.
    async fn refresh_credentials(
        &self,
        new: NewGeneration,
        audit: AuditOf<'_, Refreshed>,
    ) -> StoreResult<Refreshed>;
    /// The newest generation's sealed secret while it may still be revealed (a pure read: the
    /// periodic [`RotationStore::purge_sealed_secrets`] deletes closed ones).
    async fn sealed_secret(
        &self,
        runner: RunnerId,
        now: OffsetDateTime,
    ) -> StoreResult<Option<SealedSecret>>;
    /// Deletes every sealed secret whose window closed. Returns how many.
    async fn purge_sealed_secrets(&self, now: OffsetDateTime) -> StoreResult<u64>;
    /// Ends an overlap early: retiring generations become revoked `at` by `by`. Returns them
    /// (none: no overlap, and the version is unchanged), with the event `audit` makes from that
    /// recorded in the same transaction. `NotFound` if the runner does not exist. Isolation: the
    /// runner row is locked first (as in a refresh), so the outcome's version is the one this
    /// change produced.
    async fn revoke_retiring(
        &self,
        runner: RunnerId,
        at: OffsetDateTime,
        by: &str,
        audit: AuditOf<'_, RetiringRevoked>,
    ) -> StoreResult<RetiringRevoked>;
    /// Retiring generations whose grace ended at `now` become revoked, each with the audit event
    /// `audit` makes for it, in the same transaction. Isolation: one conditional update (`state =
    /// 'retiring'`) picks the generations, so when two processes sweep at once each generation is
    /// expired, bumped and audited by exactly one of them.
    async fn expire_retiring(
        &self,
        now: OffsetDateTime,
        audit: AuditOf<'_, ExpiredGeneration>,
    ) -> StoreResult<Vec<ExpiredGeneration>>;
}

/// How replicas on one database tell each other what changed: a broadcast of short text payloads
/// to every listener (PostgreSQL `NOTIFY`). Delivery is at most once and only while a listener is
/// connected; a listener learns that it may have missed some (and must resync) from
/// [`EventListener::recv`].
#[async_trait]
pub trait EventChannel: Send + Sync + std::fmt::Debug {
    /// Sends `payload` to every listener, this process's included.
    async fn send(&self, payload: &str) -> StoreResult<()>;
    /// Opens a listening connection.
    async fn listen(&self) -> StoreResult<Box<dyn EventListener>>;
}

#[async_trait]
pub trait EventListener: Send {
    /// The next payload; `Ok(None)` when the connection was lost (payloads sent meanwhile are
    /// missed: open a new listener and resync). Cancel-safe.
    async fn recv(&mut self) -> StoreResult<Option<String>>;
}

/// Everything the control plane needs from its database.
#[async_trait]
pub trait Store:
    RunnerStore
    + CredentialStore
    + RotationStore
    + UserStore
    + WebSessionStore
    + AuditStore
    + PipelineStore
    + RunStore
    + TaskQueue
    + ReplicaStore
    + std::fmt::Debug
{
    /// Whether several processes may serve this database at once (PostgreSQL), or this process is
    /// its only user (embedded SQLite).
    fn shared(&self) -> bool {
        false
    }
    /// The channel replicas exchange events on; `None` for a database only one process uses.
    fn event_channel(&self) -> Option<std::sync::Arc<dyn EventChannel>> {
        None
    }
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Records the fingerprint of each named key not recorded yet (`(name, fingerprint)`), and
    /// returns what the database has for each of them: on the first start the given ones, later
    /// those of the first start. Isolation: insert-if-absent, then read; of two processes starting
    /// at once with different keys, one records its own and the other reads them back.
    async fn key_fingerprints(
        &self,
        given: &[(String, String)],
        at: OffsetDateTime,
    ) -> StoreResult<Vec<(String, String)>>;
}
