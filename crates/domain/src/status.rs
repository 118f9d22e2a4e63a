//! The status a runner shows in the Runners list, derived from its live sessions and the operator's
//! intent (pause, restart). Pure: the server feeds it facts and stores the result.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunnerStatus {
    /// Registered, never connected.
    Pending,
    Running,
    Unknown,
    Stopping,
    Stopped,
    Pausing,
    Paused,
}

impl RunnerStatus {
    pub const ALL: [RunnerStatus; 7] = [
        RunnerStatus::Pending,
        RunnerStatus::Running,
        RunnerStatus::Unknown,
        RunnerStatus::Stopping,
        RunnerStatus::Stopped,
        RunnerStatus::Pausing,
        RunnerStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunnerStatus::Pending => "pending",
            RunnerStatus::Running => "running",
            RunnerStatus::Unknown => "unknown",
            RunnerStatus::Stopping => "stopping",
            RunnerStatus::Stopped => "stopped",
            RunnerStatus::Pausing => "pausing",
            RunnerStatus::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for RunnerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the last session of a runner ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The instance said goodbye (graceful shutdown, restart, drain).
    Graceful { reason: String },
    /// The connection dropped or heartbeats stopped; `reason` says which.
    Lost { reason: String },
}

/// What the status is derived from.
#[derive(Debug, Clone, Default)]
pub struct StatusFacts {
    pub ever_connected: bool,
    pub live_sessions: usize,
    /// Tasks running across live sessions.
    pub running_tasks: u32,
    /// Live sessions told to drain (restart) that have not left yet.
    pub draining_sessions: usize,
    /// The operator paused the runner (by whom, shown in the reason).
    pub paused_by: Option<String>,
    pub last_disconnect: Option<Disconnect>,
    /// The credentials were refreshed with revocation and no instance has come back with the new
    /// ones yet: why, for the reason shown.
    pub credentials_revoked: Option<String>,
}

/// Status and a human reason for it.
pub fn derive_status(f: &StatusFacts) -> (RunnerStatus, String) {
    let plural = |n: usize, what: &str| {
        if n == 1 {
            format!("1 {what}")
        } else {
            format!("{n} {what}s")
        }
    };
    if f.live_sessions == 0 {
        if let Some(reason) = &f.credentials_revoked {
            return (RunnerStatus::Unknown, reason.clone());
        }
        if !f.ever_connected {
            return (
                RunnerStatus::Pending,
                "registered; no instance has connected yet".to_owned(),
            );
        }
        return match &f.last_disconnect {
            Some(Disconnect::Graceful { reason }) => (
                RunnerStatus::Stopped,
                format!("all instances shut down gracefully ({reason})"),
            ),
            Some(Disconnect::Lost { reason }) => (RunnerStatus::Unknown, reason.clone()),
            None => (RunnerStatus::Unknown, "no instance is connected".to_owned()),
        };
    }
    if f.draining_sessions > 0 {
        return (
            RunnerStatus::Stopping,
            format!(
                "{} draining: finishing running tasks before exiting ({} running)",
                plural(f.draining_sessions, "instance"),
                f.running_tasks
            ),
        );
    }
    if let Some(by) = &f.paused_by {
        return if f.running_tasks > 0 {
            (
                RunnerStatus::Pausing,
                format!(
                    "paused by {by}; waiting for {} to finish",
                    plural(f.running_tasks as usize, "running task")
                ),
            )
        } else {
            (
                RunnerStatus::Paused,
                format!("paused by {by}; no new tasks are assigned"),
            )
        };
    }
    (
        RunnerStatus::Running,
        format!("{} connected", plural(f.live_sessions, "instance")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> StatusFacts {
        StatusFacts {
            ever_connected: true,
            live_sessions: 1,
            ..Default::default()
        }
    }

    #[test]
    fn revoked_credentials_show_unknown_until_an_instance_is_back() {
        let revoked = StatusFacts {
            live_sessions: 0,
            credentials_revoked: Some("credentials refreshed".into()),
            last_disconnect: Some(Disconnect::Graceful { reason: "x".into() }),
            ..facts()
        };
        assert_eq!(
            derive_status(&revoked),
            (RunnerStatus::Unknown, "credentials refreshed".to_owned())
        );
        let back = StatusFacts {
            live_sessions: 1,
            ..revoked
        };
        assert_eq!(derive_status(&back).0, RunnerStatus::Running);
    }

    #[test]
    fn lifecycle() {
        let pending = derive_status(&StatusFacts::default());
        assert_eq!(pending.0, RunnerStatus::Pending);
        assert_eq!(derive_status(&facts()).0, RunnerStatus::Running);
        assert_eq!(
            derive_status(&StatusFacts {
                live_sessions: 2,
                ..facts()
            })
            .1,
            "2 instances connected"
        );
        let lost = StatusFacts {
            live_sessions: 0,
            last_disconnect: Some(Disconnect::Lost {
                reason: "connection lost".into(),
            }),
            ..facts()
        };
        assert_eq!(
            derive_status(&lost),
            (RunnerStatus::Unknown, "connection lost".into())
        );
        let gone = StatusFacts {
            live_sessions: 0,
            last_disconnect: Some(Disconnect::Graceful {
                reason: "SIGTERM".into(),
            }),
            ..facts()
        };
        assert_eq!(derive_status(&gone).0, RunnerStatus::Stopped);
    }

    #[test]
    fn pause_and_drain() {
        let paused = StatusFacts {
            paused_by: Some("user:alice".into()),
            ..facts()
        };
        assert_eq!(derive_status(&paused).0, RunnerStatus::Paused);
        let pausing = StatusFacts {
            running_tasks: 2,
            ..paused.clone()
        };
        let (st, reason) = derive_status(&pausing);
        assert_eq!(st, RunnerStatus::Pausing);
        assert!(reason.contains("2 running tasks"), "{reason}");
        let draining = StatusFacts {
            draining_sessions: 1,
            ..paused
        };
        assert_eq!(
            derive_status(&draining).0,
            RunnerStatus::Stopping,
            "restart wins over pause"
        );
        for s in RunnerStatus::ALL {
            assert_eq!(RunnerStatus::parse(s.as_str()), Some(s));
        }
    }
}
