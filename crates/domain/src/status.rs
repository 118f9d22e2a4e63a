//! The status a runner shows in the Runners list.

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
}

impl fmt::Display for RunnerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
