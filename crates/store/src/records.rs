//! Rows as the store hands them out and takes them in. Not wire types: the server maps them.

use tether_domain::{
    ClientId, CredentialState, Description, Generation, Platform, Role, RunnerId, RunnerName,
    RunnerStatus, UserId, Username, Verifier,
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
}

#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub runner_id: RunnerId,
    pub runner_name: RunnerName,
    pub client_id: ClientId,
    /// Newest first.
    pub generations: Vec<CredentialRecord>,
}

#[derive(Debug, Clone, Copy)]
pub struct CredentialUse {
    pub runner_id: RunnerId,
    pub generation: Generation,
    pub at_ms: i64,
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

#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub user_id: UserId,
    pub name: String,
    pub verifier: Verifier,
    pub created_at: OffsetDateTime,
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
