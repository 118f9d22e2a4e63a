//! Events as replicas send them to each other: one line of JSON per event, well under
//! PostgreSQL's notification limit. A wire event names what changed (ids, the credentials version
//! the change committed, the generations involved); the receiving replica reads whatever records
//! its subscribers need from the database before it delivers, so no replica acts on another's
//! view of a row.

use serde::{Deserialize, Serialize};
use tether_domain::{ClientId, CredentialsVersion, Generation, RunnerId};
use tether_store::{from_ms, to_ms, Store};

use super::{CredentialChange, Event};

/// One message on the channel: who sent it, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending replica (a replica skips its own: it delivered them already).
    pub origin: String,
    #[serde(flatten)]
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    CredentialsChanged {
        runner: String,
        version: i64,
        change: Change,
    },
    RunnerDeleted {
        runner: String,
        client_id: String,
    },
    AccessTokenRevoked {
        jti: String,
        expires_at: i64,
    },
    WorkQueued {
        runner: String,
    },
    PauseChanged {
        runner: String,
        paused_by: Option<String>,
    },
    DrainRequested {
        runner: String,
        reason: String,
    },
    /// Sent by the database itself, in the transaction that bumped a runner's credentials
    /// version (migration `0003_commit_notifications`): the floor under `CredentialsChanged`,
    /// which the changing replica sends only after its commit. The receiver re-reads the runner's
    /// credentials and applies them as they are.
    CredentialsCommitted {
        runner: String,
        version: i64,
    },
    /// Sent by the database when a runner's status was written (migration
    /// `0004_session_details`).
    StatusChanged {
        runner: String,
    },
    /// A listener's probe of its own round trip (see `replicated`); carries no change.
    Ping {
        seq: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Change {
    Revoked {
        active: u32,
        reason: String,
        at_ms: i64,
        by: String,
    },
    Rotated {
        active: u32,
        at_ms: i64,
        by: String,
    },
    RetiringRevoked {
        accepted_from: u32,
    },
}

impl Message {
    pub fn of(event: &Event) -> Self {
        match event {
            Event::CredentialsChanged {
                runner,
                version,
                change,
            } => Message::CredentialsChanged {
                runner: runner.id.to_string(),
                version: version.0,
                change: match change {
                    CredentialChange::Revoked {
                        active,
                        reason,
                        at,
                        by,
                    } => Change::Revoked {
                        active: active.0,
                        reason: clip(reason),
                        at_ms: to_ms(*at),
                        by: by.clone(),
                    },
                    CredentialChange::Rotated { active, at, by } => Change::Rotated {
                        active: active.0,
                        at_ms: to_ms(*at),
                        by: by.clone(),
                    },
                    CredentialChange::RetiringRevoked { accepted_from } => {
                        Change::RetiringRevoked {
                            accepted_from: accepted_from.0,
                        }
                    }
                },
            },
            Event::RunnerDeleted { runner, client_id } => Message::RunnerDeleted {
                runner: runner.to_string(),
                client_id: client_id.as_str().to_owned(),
            },
            Event::AccessTokenRevoked { jti, expires_at } => Message::AccessTokenRevoked {
                jti: jti.clone(),
                expires_at: *expires_at,
            },
            Event::WorkQueued { runner } => Message::WorkQueued {
                runner: runner.to_string(),
            },
            Event::PauseChanged { runner, paused_by } => Message::PauseChanged {
                runner: runner.id.to_string(),
                paused_by: paused_by.clone(),
            },
            Event::DrainRequested { runner, reason } => Message::DrainRequested {
                runner: runner.to_string(),
                reason: clip(reason),
            },
            Event::StatusChanged { runner } => Message::StatusChanged {
                runner: runner.id.to_string(),
            },
        }
    }

    /// The event to deliver here, reading from `store` the records it carries. `Ok(None)`: nothing
    /// to deliver (a ping, or a runner deleted meanwhile — its deletion is an event of its own).
    /// A message that does not parse is an error (a replica of another version, or a bug).
    pub async fn into_event(self, store: &dyn Store) -> Result<Option<Event>, WireError> {
        Ok(Some(match self {
            Message::Ping { .. } => return Ok(None),
            Message::CredentialsCommitted { runner, .. } => {
                let Some(record) = store.runner_by_id(parse_runner(&runner)?).await? else {
                    return Ok(None);
                };
                return Ok(recheck(store, record).await?);
            }
            Message::CredentialsChanged {
                runner,
                version,
                change,
            } => {
                let Some(record) = store.runner_by_id(parse_runner(&runner)?).await? else {
                    return Ok(None);
                };
                Event::CredentialsChanged {
                    runner: std::sync::Arc::new(record),
                    version: CredentialsVersion(version),
                    change: match change {
                        Change::Revoked {
                            active,
                            reason,
                            at_ms,
                            by,
                        } => CredentialChange::Revoked {
                            active: Generation(active),
                            reason,
                            at: from_ms(at_ms),
                            by,
                        },
                        Change::Rotated { active, at_ms, by } => CredentialChange::Rotated {
                            active: Generation(active),
                            at: from_ms(at_ms),
                            by,
                        },
                        Change::RetiringRevoked { accepted_from } => {
                            CredentialChange::RetiringRevoked {
                                accepted_from: Generation(accepted_from),
                            }
                        }
                    },
                }
            }
            Message::RunnerDeleted { runner, client_id } => Event::RunnerDeleted {
                runner: parse_runner(&runner)?,
                client_id: ClientId::parse(&client_id)
                    .map_err(|e| WireError::Invalid(format!("client_id: {e}")))?,
            },
            Message::AccessTokenRevoked { jti, expires_at } => {
                Event::AccessTokenRevoked { jti, expires_at }
            }
            Message::WorkQueued { runner } => Event::WorkQueued {
                runner: parse_runner(&runner)?,
            },
            Message::PauseChanged { runner, paused_by } => {
                let Some(record) = store.runner_by_id(parse_runner(&runner)?).await? else {
                    return Ok(None);
                };
                Event::PauseChanged {
                    runner: std::sync::Arc::new(record),
                    paused_by,
                }
            }
            Message::DrainRequested { runner, reason } => Event::DrainRequested {
                runner: parse_runner(&runner)?,
                reason,
            },
            Message::StatusChanged { runner } => {
                let Some(record) = store.runner_by_id(parse_runner(&runner)?).await? else {
                    return Ok(None);
                };
                Event::StatusChanged {
                    runner: std::sync::Arc::new(record),
                }
            }
        }))
    }
}

/// The runner's credentials as the database has them now, as an event that makes this replica
/// apply them: its cache drops what is older than their version, and sessions on generations no
/// longer accepted are closed. `None` when the runner has no credentials (deleted meanwhile: its
/// deletion is an event of its own). Delivering it twice, or after the detailed event of the same
/// change, changes nothing more.
pub async fn recheck(
    store: &dyn Store,
    runner: tether_store::RunnerRecord,
) -> Result<Option<Event>, tether_store::StoreError> {
    let Some(client) = store.client_by_id(&runner.client_id).await? else {
        return Ok(None);
    };
    let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
    let accepted_from = client
        .generations
        .iter()
        .filter(|g| {
            g.state
                .accepts(g.expires_at.map(|t| t.unix_timestamp()), now_s)
        })
        .map(|g| g.generation)
        .min()
        // Nothing accepted any more: every session goes; a later generation may connect.
        .or_else(|| client.generations.iter().map(|g| g.generation.next()).max());
    let Some(accepted_from) = accepted_from else {
        return Ok(None);
    };
    Ok(Some(Event::CredentialsChanged {
        runner: std::sync::Arc::new(runner),
        version: client.version,
        change: CredentialChange::RetiringRevoked { accepted_from },
    }))
}

/// Free text travels at most this long, so every message fits a notification.
const MAX_TEXT: usize = 1_000;

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

fn parse_runner(text: &str) -> Result<RunnerId, WireError> {
    text.parse()
        .map_err(|e| WireError::Invalid(format!("runner: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed event: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] tether_store::StoreError),
}

impl Envelope {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Result<Self, WireError> {
        serde_json::from_str(text).map_err(|e| WireError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_stays_far_under_the_payload_limit() {
        let long = clip(&"é".repeat(5_000));
        assert_eq!(long.chars().count(), MAX_TEXT);
        let messages = [
            Message::CredentialsChanged {
                runner: RunnerId::new().to_string(),
                version: 7,
                change: Change::Revoked {
                    active: 3,
                    reason: long.clone(),
                    at_ms: 1,
                    by: "user:alice".into(),
                },
            },
            Message::RunnerDeleted {
                runner: RunnerId::new().to_string(),
                client_id: ClientId::generate().as_str().to_owned(),
            },
            Message::AccessTokenRevoked {
                jti: "j".into(),
                expires_at: 9,
            },
            Message::PauseChanged {
                runner: RunnerId::new().to_string(),
                paused_by: Some("user:bob".into()),
            },
            Message::DrainRequested {
                runner: RunnerId::new().to_string(),
                reason: long,
            },
            Message::CredentialsCommitted {
                runner: RunnerId::new().to_string(),
                version: 12,
            },
            Message::StatusChanged {
                runner: RunnerId::new().to_string(),
            },
            Message::Ping { seq: 4 },
        ];
        for message in messages {
            let envelope = Envelope {
                origin: "replica-a".into(),
                message,
            };
            let text = envelope.encode();
            assert!(
                text.len() < tether_store::postgres::events::MAX_PAYLOAD,
                "{} bytes",
                text.len()
            );
            assert_eq!(Envelope::decode(&text).expect("decodes"), envelope);
        }
        assert!(Envelope::decode("{\"origin\":\"x\",\"kind\":\"nonsense\"}").is_err());
    }
}
