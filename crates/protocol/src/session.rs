//! The runner session protocol: JSON text frames over the WebSocket at `/runner/v1/connect`,
//! tagged by `type`. The runner opens with `hello`; the server answers `welcome`.

use serde::{Deserialize, Serialize};

/// Version of this protocol, sent in `hello`. The server refuses versions it does not speak.
pub const PROTOCOL_VERSION: u32 = 1;

/// Path of the session endpoint.
pub const CONNECT_PATH: &str = "/runner/v1/connect";

/// WebSocket close codes the server uses, so the runner can tell the operator why.
pub mod close_code {
    /// The runner's credentials were revoked (refresh, deletion of a generation).
    pub const CREDENTIALS_REVOKED: u16 = 4401;
    /// The access token expired without a `reauth`.
    pub const TOKEN_EXPIRED: u16 = 4402;
    /// The runner was deleted in the control plane.
    pub const RUNNER_DELETED: u16 = 4403;
    /// The runner broke the protocol (bad first message, unsupported version, unparsable frame).
    pub const PROTOCOL_ERROR: u16 = 4400;
    /// No heartbeat for three intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4408;
    /// Another connection with the same instance id replaced this one.
    pub const SUPERSEDED: u16 = 4409;
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerMessage {
    Hello {
        protocol: u32,
        runner_version: String,
        /// Unique per process; lets the server tell instances of one runner apart.
        instance_id: String,
        hostname: String,
        platform: String,
        /// How many tasks this instance runs at once.
        capacity: u32,
    },
    Heartbeat {
        running_tasks: u32,
    },
    /// Moves the open session to a newer access token (renewal, or a new credential generation).
    Reauth {
        access_token: String,
    },
    /// The instance is shutting down on purpose.
    Goodbye {
        reason: String,
    },
}

impl std::fmt::Debug for RunnerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunnerMessage::Hello {
                instance_id,
                protocol,
                ..
            } => f
                .debug_struct("Hello")
                .field("protocol", protocol)
                .field("instance_id", instance_id)
                .finish_non_exhaustive(),
            RunnerMessage::Heartbeat { running_tasks } => f
                .debug_struct("Heartbeat")
                .field("running_tasks", running_tasks)
                .finish(),
            RunnerMessage::Reauth { .. } => f.write_str("Reauth([redacted])"),
            RunnerMessage::Goodbye { reason } => {
                f.debug_struct("Goodbye").field("reason", reason).finish()
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        session_id: String,
        heartbeat_seconds: u64,
    },
    /// The re-authentication was accepted; the session now uses `generation`.
    Reauthenticated { generation: u32, expires_at: i64 },
    /// Stop taking work, finish what is running, say goodbye and exit (pause/restart).
    Drain { reason: String },
    /// The control plane refused the session or a message; the connection closes next.
    Error { code: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let hello = RunnerMessage::Hello {
            protocol: 1,
            runner_version: "0.1.0".into(),
            instance_id: "i-1".into(),
            hostname: "h".into(),
            platform: "local".into(),
            capacity: 20,
        };
        let json = serde_json::to_value(&hello).expect("json");
        assert_eq!(json["type"], "hello");
        assert_eq!(json["instance_id"], "i-1");
        let back: RunnerMessage = serde_json::from_value(json).expect("parse");
        assert_eq!(back, hello);
        let hb: RunnerMessage =
            serde_json::from_str(r#"{"type":"heartbeat","running_tasks":2}"#).expect("parse");
        assert_eq!(hb, RunnerMessage::Heartbeat { running_tasks: 2 });
        let drain = serde_json::to_string(&ServerMessage::Drain {
            reason: "restart".into(),
        })
        .expect("json");
        assert_eq!(drain, r#"{"type":"drain","reason":"restart"}"#);
    }

    #[test]
    fn reauth_never_debug_prints_the_token() {
        let m = RunnerMessage::Reauth {
            access_token: "secret-token".into(),
        };
        assert!(!format!("{m:?}").contains("secret-token"));
    }
}
