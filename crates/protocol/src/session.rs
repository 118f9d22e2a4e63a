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
    /// The runner broke the protocol (bad first message, unsupported version, unparsable frame,
    /// an update of a task not running on that instance, an update `seq` that is not the next).
    pub const PROTOCOL_ERROR: u16 = 4400;
    /// No heartbeat for three intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4408;
    /// Another connection with the same instance id replaced this one.
    pub const SUPERSEDED: u16 = 4409;
    /// The runner already has as many live sessions on this replica as it may
    /// (`--max-sessions-per-runner`); a reconnect of one of its instances is still accepted.
    pub const TOO_MANY_SESSIONS: u16 = 4429;
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
        /// Where it reads its client secret: `env`, `file` or `aws_secrets_manager`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_source: Option<String>,
        /// Whether it picks up a new secret by itself (re-reads its source) or needs a restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hot_reload: Option<bool>,
        /// The secret file's path, for a `file` source (never the secret).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_file: Option<String>,
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
    /// Progress of an assigned task: at-least-once, numbered per task from 1; the server applies
    /// each `seq` once and answers `ack`. The first update (`running`) says the task started.
    TaskUpdate(TaskUpdate),
    /// The instance stopped taking new work (SIGTERM, or a `drain`): it finishes what it runs,
    /// then says goodbye.
    Draining {
        reason: String,
    },
    /// The instance will not run this assignment (it is draining); the server queues it again.
    Reject {
        task_id: String,
        reason: String,
    },
}

/// The state a task reports. `running` while it runs; the others are final.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskUpdateState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskUpdateState {
    pub fn is_final(self) -> bool {
        !matches!(self, TaskUpdateState::Running)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskUpdate {
    pub task_id: String,
    /// 1, 2, 3, ... per task, in the order the runner produced them. The server stores an update
    /// only if its task is running on the instance that ran it (`instance_id`, else the
    /// session's) and `seq` is the last stored + 1; a
    /// `seq` already stored is acknowledged again (a spool replay); anything else ends the
    /// session with [`close_code::PROTOCOL_ERROR`].
    pub seq: u64,
    pub state: TaskUpdateState,
    /// The instance that ran the task. A runner process replaying updates a previous process
    /// left in its spool names that process's instance, which the task is assigned to; absent:
    /// the instance of this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Combined stdout and stderr produced since the previous update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_chunk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why a final state was reached when the exit code alone does not say (timeout, cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One task handed to an instance: a shell command run in the runner's workdir.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskAssignment {
    pub task_id: String,
    pub run_id: String,
    pub pipeline: String,
    pub name: String,
    /// Executed with `sh -c`.
    pub run: String,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The names of `env` entries that are secrets: the runner masks their values in the task's
    /// log (`***`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Killed (process group) and failed after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// Task environments may carry credentials of the customer's own systems: keep them out of logs.
impl std::fmt::Debug for TaskAssignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskAssignment")
            .field("task_id", &self.task_id)
            .field("run_id", &self.run_id)
            .field("pipeline", &self.pipeline)
            .field("name", &self.name)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("timeout_seconds", &self.timeout_seconds)
            .finish_non_exhaustive()
    }
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
            RunnerMessage::TaskUpdate(u) => f
                .debug_struct("TaskUpdate")
                .field("task_id", &u.task_id)
                .field("seq", &u.seq)
                .field("state", &u.state)
                .field("log_bytes", &u.log_chunk.as_ref().map_or(0, String::len))
                .finish_non_exhaustive(),
            RunnerMessage::Draining { reason } => {
                f.debug_struct("Draining").field("reason", reason).finish()
            }
            RunnerMessage::Reject { task_id, reason } => f
                .debug_struct("Reject")
                .field("task_id", task_id)
                .field("reason", reason)
                .finish(),
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
    /// Run this task. Sent again after a reconnect if no update arrived: the runner ignores a
    /// task id it already has.
    Assign { task: TaskAssignment },
    /// Kill the task's process group and report it `cancelled`.
    Cancel { task_id: String },
    /// Updates of `task_id` up to and including `seq` are stored: drop them from the spool.
    Ack { task_id: String, seq: u64 },
    /// A newer credential generation exists and the older one still works for a while (overlap
    /// rotation): re-read the secret source and, once it holds the new secret, `reauth` on this
    /// session with a token of the new generation.
    CredentialsRotated { generation: u32 },
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
            secret_source: Some("file".into()),
            hot_reload: Some(true),
            secret_file: Some("/run/secrets/client_secret".into()),
        };
        let json = serde_json::to_value(&hello).expect("json");
        assert_eq!(json["secret_source"], "file");
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
    fn task_messages_round_trip() {
        let update: RunnerMessage = serde_json::from_str(
            r#"{"type":"task_update","task_id":"t1","seq":3,"state":"failed","exit_code":2}"#,
        )
        .expect("parse");
        assert_eq!(
            update,
            RunnerMessage::TaskUpdate(TaskUpdate {
                task_id: "t1".into(),
                seq: 3,
                state: TaskUpdateState::Failed,
                instance_id: None,
                log_chunk: None,
                exit_code: Some(2),
                reason: None,
            })
        );
        let assign = ServerMessage::Assign {
            task: TaskAssignment {
                task_id: "t1".into(),
                run_id: "r1".into(),
                pipeline: "p".into(),
                name: "build".into(),
                run: "make".into(),
                env: [("TOKEN".to_owned(), "hunter2".to_owned())].into(),
                secret_env: vec!["TOKEN".to_owned()],
                timeout_seconds: Some(5),
            },
        };
        let json = serde_json::to_value(&assign).expect("json");
        assert_eq!(json["type"], "assign");
        assert_eq!(json["task"]["env"]["TOKEN"], "hunter2");
        assert!(!format!("{assign:?}").contains("hunter2"));
        let ack = serde_json::to_string(&ServerMessage::Ack {
            task_id: "t1".into(),
            seq: 3,
        })
        .expect("json");
        assert_eq!(ack, r#"{"type":"ack","task_id":"t1","seq":3}"#);
    }

    #[test]
    fn reauth_never_debug_prints_the_token() {
        let m = RunnerMessage::Reauth {
            access_token: "secret-token".into(),
        };
        assert!(!format!("{m:?}").contains("secret-token"));
    }
}
