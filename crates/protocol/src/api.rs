//! `/api/v1` request and response bodies.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRunnerRequest {
    pub name: String,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A runner as the API shows it. Never carries a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runner {
    pub id: String,
    pub name: String,
    pub description: String,
    pub platform: String,
    pub status: String,
    pub status_reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub status_since: OffsetDateTime,
    pub client_id: String,
    pub credential_generation: u32,
    pub instances: Vec<Instance>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paused_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    /// Version of the runner software last seen connected.
    pub runner_version: Option<String>,
    /// Who paused the runner (`user:<name>`), if it is paused.
    pub paused_by: Option<String>,
    /// How the runner's token requests have been going.
    #[serde(default)]
    pub auth_health: AuthHealth,
    /// Where the newest credential generation stands among the live instances.
    #[serde(default)]
    pub credential_rollout: CredentialRollout,
    /// The file the runner reads its client secret from, as its instances (or its last session)
    /// said: where `apply-credentials --platform local` writes a new one.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// Where a runner's newest credential generation stands among its live instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialRollout {
    /// The newest (active) generation.
    pub generation: u32,
    pub instances_on_newest: usize,
    pub instances_on_older: usize,
    /// Until when an older generation is still accepted (zero-downtime overlap), if one is.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retiring_until: Option<OffsetDateTime>,
    /// `applied` (every live instance is on the newest generation), `waiting` (no live instance
    /// is on it yet, or some are still on a revoked one) or `overlap` (an older one is still accepted).
    pub state: String,
    /// Since when every live instance has been on the newest generation (`applied` only).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub applied_since: Option<OffsetDateTime>,
    /// One line for people: "applied: 2 instances on generation 3 since …",
    /// "overlap: 2 instances on the old secret, expires in 59 min".
    pub summary: String,
}

/// Token requests of a runner's client id, as the control plane saw them since it started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthHealth {
    /// Refused token requests since the last successful one.
    pub failed_token_requests: u64,
    /// Why the last refused request was refused (`wrong_secret`, `malformed_secret`).
    pub last_failure_reason: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_failure_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    /// One line for people: "3 failed token requests since 12:04: wrong client secret; the secret
    /// was refreshed at 12:03 by user:alice".
    pub summary: String,
}

/// One live process of a runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub instance_id: String,
    pub hostname: String,
    #[serde(with = "time::serde::rfc3339")]
    pub connected_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_heartbeat_at: OffsetDateTime,
    pub credential_generation: u32,
    /// When the instance moved to its credential generation (connected or re-authenticated).
    #[serde(with = "time::serde::rfc3339")]
    pub generation_since: OffsetDateTime,
    pub running_tasks: u32,
    /// Where it reads its client secret: `env`, `file` or `aws_secrets_manager` (absent: the
    /// runner did not say; older runners don't).
    #[serde(default)]
    pub secret_source: Option<String>,
    /// Whether it picks up a new secret by itself (file and Secrets Manager sources) or needs a
    /// restart with the new value (`env`).
    #[serde(default)]
    pub hot_reload: Option<bool>,
    /// The file it reads its secret from, for a `file` source.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// A runner's OAuth client credentials. Returned unasked only when the runner is created.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedRunner {
    #[serde(flatten)]
    pub runner: Runner,
    pub credentials: ClientCredentials,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerList {
    pub runners: Vec<Runner>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct CreateUserRequest {
    pub username: String,
    pub password: String,
    pub role: String,
}

impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("role", &self.role)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Every user (`GET /api/v1/users`, admins only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<User>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub name: String,
    /// Seconds until the token stops working (60 to 31,622,400, a year); absent: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A personal API token, shown once when created.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    /// Names the token to revoke it (`DELETE /api/v1/users/{username}/tokens/{id}`).
    pub id: String,
    pub name: String,
    pub username: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// An API token as listed (its value is never shown again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenInfo {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it last authenticated a call (written in batches, so up to the server's flush
    /// interval late); `null`: never.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A user's API tokens, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<ApiTokenInfo>,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"[redacted]")
            .field("name", &self.name)
            .field("username", &self.username)
            .finish()
    }
}

/// Who the caller is (`GET /api/v1/me`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Me {
    pub username: String,
    pub role: String,
    /// The id of the API token this call came with (`tether logout` revokes it).
    #[serde(default)]
    pub token_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub runner: Option<String>,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// One step of a pipeline: a shell command the runner executes in its workdir.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PipelineTask {
    pub name: String,
    pub run: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, EnvValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// A task's environment value: a string, or a secret. A secret is given as
/// `{"secret": "<value>"}`, kept encrypted, passed only to the task, and shown back as
/// `{"secret": true}`: its value never leaves the control plane again except to the runner.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret { secret: SecretValue },
}

/// What a secret environment entry carries: its value (in a request), or `true` (in an answer).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SecretValue {
    Value(String),
    Hidden(bool),
}

/// Values may be credentials: `Debug` shows only which kind.
impl std::fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Plain(..)",
            Self::Secret { .. } => "Secret(..)",
        })
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

impl EnvValue {
    /// A plain value.
    pub fn plain(v: impl Into<String>) -> Self {
        Self::Plain(v.into())
    }
}

/// Environment values may be credentials of the customer's systems: `Debug` shows only the keys.
impl std::fmt::Debug for PipelineTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineTask")
            .field("name", &self.name)
            .field("run", &self.run)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// `PUT /api/v1/pipelines/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutPipelineRequest {
    pub tasks: Vec<PipelineTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    pub tasks: Vec<PipelineTask>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineList {
    pub pipelines: Vec<Pipeline>,
}

/// `POST /api/v1/pipelines/{name}/runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRunRequest {
    /// Runner id or name.
    pub runner: String,
}

/// Run and task states: `queued`, `running`, `succeeded`, `failed`, `cancelled`, `lost`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub pipeline: String,
    /// The runner's name.
    pub runner: String,
    pub runner_id: String,
    pub state: String,
    /// Why the run ended as it did (or why it waits), in words.
    pub reason: Option<String>,
    pub tasks: Vec<RunTask>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunTask {
    pub name: String,
    pub state: String,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// The instance that ran (or runs) it.
    pub instance_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<Run>,
}

/// `POST /api/v1/runners/{runner}/credentials/refresh`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// Must be exactly `refresh`.
    #[serde(default)]
    pub confirm: Option<String>,
    /// `revoke` (default): the old secret stops working now and sessions using it are closed.
    /// `overlap`: both work until `grace_seconds` have passed (zero-downtime rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
    /// Refresh even while runs are in progress on the runner.
    #[serde(default)]
    pub force: bool,
    /// Part of a rotation (`POST /api/v1/runners/{runner}/rotations`): its audit event says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
}

/// `POST /api/v1/runners/{runner}/credentials/revoke-previous`; the body may be left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevokePreviousRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
}

/// What `revoke-previous` did, with the credentials as they are now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokePreviousResponse {
    #[serde(flatten)]
    pub credentials: Credentials,
    /// Generations revoked now (empty: there was no older generation still accepted).
    pub revoked_generations: Vec<u32>,
    /// Live sessions on them that were closed.
    pub sessions_closed: usize,
    /// One line: "revoked generation 1; 2 sessions on it were closed".
    pub summary: String,
}

/// `POST /api/v1/runners/{runner}/rotations`: one step of a rotation driven by a client (the CLI's
/// `rotate`), so the audit log shows the rotation as one story. `started` opens a rotation and
/// returns its id; later steps name it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RotationStepRequest {
    /// `started`, `secret_written`, `deployment_forced`, `instances_moved`, `completed` or `failed`.
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    /// Facts about the step (names, counts, never a secret); an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationStep {
    pub rotation_id: String,
    pub step: String,
}

/// The new credentials, returned once (and again by `reveal` until `reveal_until`).
#[derive(Clone, Serialize, Deserialize)]
pub struct RefreshResponse {
    pub client_id: String,
    pub client_secret: String,
    pub generation: u32,
    /// The generation that was active before this refresh.
    pub previous_generation: u32,
    pub mode: String,
    #[serde(with = "time::serde::rfc3339")]
    pub reveal_until: OffsetDateTime,
    /// Overlap mode: when the previous generation stops working.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub previous_expires_at: Option<OffsetDateTime>,
    /// Sessions closed because their credentials were revoked.
    pub sessions_closed: usize,
}

impl std::fmt::Debug for RefreshResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshResponse")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("generation", &self.generation)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/runners/{runner}/credentials/reveal`.
#[derive(Clone, Serialize, Deserialize)]
pub struct RevealResponse {
    pub client_id: String,
    pub client_secret: String,
    pub generation: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub reveal_until: OffsetDateTime,
}

impl std::fmt::Debug for RevealResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealResponse")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// `GET /api/v1/runners/{runner}/credentials`: never a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub client_id: String,
    /// Newest first.
    pub generations: Vec<CredentialGeneration>,
    /// Until when the newest secret can be revealed, if it still can.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub reveal_until: Option<OffsetDateTime>,
    /// When the secret was last refreshed and by whom (none before the first refresh).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_refreshed_at: Option<OffsetDateTime>,
    pub last_refreshed_by: Option<String>,
    /// Where the newest generation stands among the live instances.
    #[serde(default)]
    pub credential_rollout: CredentialRollout,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialGeneration {
    pub generation: u32,
    /// `active`, `retiring` (still accepted until `expires_at`) or `revoked`.
    pub state: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it stopped working, and who stopped it (`user:<name>`, or `system` when its grace
    /// period ended); revoked generations only.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub revoked_by: Option<String>,
    /// Live instance sessions authenticated with this generation right now.
    pub sessions: usize,
}
