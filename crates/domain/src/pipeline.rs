//! Pipelines, runs and their states. A pipeline is an ordered list of tasks (shell commands); a run
//! executes one pipeline's tasks, in order, on one runner. Validation lives here so the API, the CLI
//! and the store agree on what a valid pipeline is.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::{ParseError, RunnerName};

/// Most tasks one pipeline may have.
pub const MAX_TASKS: usize = 100;
/// Longest shell command of one task.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Longest task timeout: one week.
pub const MAX_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;

/// A pipeline's unique name: the same DNS-label rule as runner names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineName(String);

impl PipelineName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        RunnerName::parse(s).map(|n| Self(n.as_str().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's name within its pipeline: 1-63 of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskName(String);

impl TaskName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > 63 {
            return Err(ParseError::new("must be 1 to 63 characters long"));
        }
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if !s.bytes().all(ok) {
            return Err(ParseError::new(
                "may contain only lowercase letters a-z, digits 0-9, '-' and '_'",
            ));
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(ParseError::new("must start with a letter or digit"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's environment value: given in the clear, or a secret, kept only sealed (encrypted with
/// the control plane's master key) and opened only to hand the task to its runner. `Debug` never
/// shows either.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvValue {
    Plain(String),
    /// The sealed value, base64.
    Sealed(String),
}

impl EnvValue {
    pub fn is_secret(&self) -> bool {
        matches!(self, Self::Sealed(_))
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Plain(..)",
            Self::Sealed(_) => "Sealed(..)",
        })
    }
}

/// One validated task. `env` values are never printed by `Debug`: they may be credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: TaskName,
    pub run: String,
    pub env: BTreeMap<String, EnvValue>,
    pub timeout_seconds: Option<u64>,
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("name", &self.name)
            .field("run", &self.run)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// A task as submitted, before validation.
#[derive(Debug, Clone)]
pub struct RawTask<'a> {
    pub name: &'a str,
    pub run: &'a str,
    pub env: &'a BTreeMap<String, EnvValue>,
    pub timeout_seconds: Option<u64>,
}

/// A field of a pipeline definition that failed validation, named the way the API's JSON names it
/// (`tasks`, `tasks[2].name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub error: ParseError,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            error: ParseError::new(reason),
        }
    }
}

/// Validates a pipeline's task list: 1 to [`MAX_TASKS`] tasks with unique names, non-blank commands,
/// environment names that a shell accepts, and timeouts from 1 s to a week.
pub fn parse_tasks(raw: &[RawTask<'_>]) -> Result<Vec<TaskSpec>, FieldError> {
    if raw.is_empty() {
        return Err(FieldError::new("tasks", "must list at least one task"));
    }
    if raw.len() > MAX_TASKS {
        return Err(FieldError::new(
            "tasks",
            format!("may list at most {MAX_TASKS} tasks"),
        ));
    }
    let mut seen = HashSet::new();
    let mut tasks = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let at = |f: &str| format!("tasks[{i}].{f}");
        let name = TaskName::parse(t.name).map_err(|error| FieldError {
            field: at("name"),
            error,
        })?;
        if !seen.insert(name.clone()) {
            return Err(FieldError::new(
                at("name"),
                format!("'{name}' is used by an earlier task; task names must be unique"),
            ));
        }
        if t.run.trim().is_empty() {
            return Err(FieldError::new(
                at("run"),
                "must be a non-empty shell command",
            ));
        }
        if t.run.len() > MAX_COMMAND_BYTES || t.run.contains('\0') {
            return Err(FieldError::new(
                at("run"),
                format!("must be at most {MAX_COMMAND_BYTES} bytes with no NUL character"),
            ));
        }
        for (k, v) in t.env {
            if !is_env_name(k) {
                return Err(FieldError::new(
                    format!("tasks[{i}].env.{k}"),
                    "is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                ));
            }
            let bad = match v {
                EnvValue::Plain(v) => v.contains('\0'),
                EnvValue::Sealed(v) => v.is_empty(),
            };
            if bad {
                return Err(FieldError::new(
                    format!("tasks[{i}].env.{k}"),
                    "must not contain a NUL character",
                ));
            }
        }
        if let Some(s) = t.timeout_seconds {
            if s == 0 || s > MAX_TIMEOUT_SECONDS {
                return Err(FieldError::new(
                    at("timeout_seconds"),
                    format!("must be from 1 to {MAX_TIMEOUT_SECONDS} seconds"),
                ));
            }
        }
        tasks.push(TaskSpec {
            name,
            run: t.run.to_owned(),
            env: t.env.clone(),
            timeout_seconds: t.timeout_seconds,
        });
    }
    Ok(tasks)
}

fn is_env_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The state of a run, and of each of its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Waiting for the runner (not connected, paused, busy, or an earlier task still runs).
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The instance running it disappeared and did not come back within `lost_after`.
    Lost,
}

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                ParseError::new(
                    "must be one of queued, running, succeeded, failed, cancelled, lost",
                )
            })
    }

    /// Final states never change again.
    pub fn is_final(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ends, and what each of its tasks that never started says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    pub state: RunState,
    pub reason: String,
    /// The reason given to its tasks still queued (they are cancelled).
    pub not_run: String,
}

/// A task's end as its runner reported it.
#[derive(Debug, Clone, Copy)]
pub struct TaskEnd<'a> {
    pub task: &'a str,
    pub state: RunState,
    pub exit_code: Option<i32>,
    pub reason: Option<&'a str>,
}

impl TaskEnd<'_> {
    /// "task 'build' failed with exit code 2", "task 'test' failed: timed out after 5 s".
    pub fn describe(&self) -> String {
        let (name, state) = (self.task, self.state.as_str());
        match (self.reason, self.exit_code) {
            (Some(r), _) => format!("task '{name}' {state}: {r}"),
            (None, Some(code)) => format!("task '{name}' {state} with exit code {code}"),
            (None, None) => format!("task '{name}' {state}"),
        }
    }
}

impl RunEnd {
    /// The run was cancelled by `by` (an actor) and none of its tasks runs any more.
    pub fn cancelled_by(by: &str) -> Self {
        Self {
            state: RunState::Cancelled,
            reason: format!("cancelled by {by}"),
            not_run: format!("not run: the run was cancelled by {by}"),
        }
    }

    /// Its runner was deleted: running and queued tasks alike are cancelled.
    pub fn runner_deleted() -> Self {
        let reason = "the runner was deleted".to_owned();
        Self {
            state: RunState::Cancelled,
            not_run: reason.clone(),
            reason,
        }
    }

    /// The control plane ended one of its tasks in `state` (lost: its instance did not come back)
    /// and the run ends with it.
    pub fn task_ended_by_control_plane(task: &str, state: RunState, reason: &str) -> Self {
        Self::from_task(&TaskEnd {
            task,
            state,
            exit_code: None,
            reason: Some(reason),
        })
    }

    /// What a task's end means for its run. `None`: the run goes on (the task succeeded and more
    /// are queued, and nobody asked to cancel it). A failure ends the run at once; a cancel request
    /// made meanwhile turns anything but a failure into a cancellation.
    pub fn after_task(
        end: &TaskEnd<'_>,
        cancel_requested_by: Option<&str>,
        more_queued: bool,
    ) -> Option<Self> {
        match (end.state, cancel_requested_by) {
            (RunState::Succeeded, None) if more_queued => None,
            (RunState::Succeeded, None) => Some(Self {
                state: RunState::Succeeded,
                reason: "every task succeeded".to_owned(),
                not_run: String::new(),
            }),
            (RunState::Failed, _) | (_, None) => Some(Self::from_task(end)),
            (_, Some(by)) => Some(Self::cancelled_by(by)),
        }
    }

    fn from_task(end: &TaskEnd<'_>) -> Self {
        let what = end.describe();
        Self {
            state: end.state,
            not_run: format!("not run: {what}"),
            reason: what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(name: &'a str, run: &'a str, env: &'a BTreeMap<String, EnvValue>) -> RawTask<'a> {
        RawTask {
            name,
            run,
            env,
            timeout_seconds: None,
        }
    }

    #[test]
    fn task_lists_are_validated_with_the_field_named() {
        let env = BTreeMap::new();
        let ok = parse_tasks(&[raw("build", "make", &env), raw("test_1", "make test", &env)])
            .expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(parse_tasks(&[]).expect_err("empty").field, "tasks");
        let dup = parse_tasks(&[raw("a", "true", &env), raw("a", "true", &env)]).expect_err("dup");
        assert_eq!(dup.field, "tasks[1].name");
        assert!(dup.error.0.contains("unique"), "{dup:?}");
        assert_eq!(
            parse_tasks(&[raw("Bad Name", "true", &env)])
                .expect_err("name")
                .field,
            "tasks[0].name"
        );
        assert_eq!(
            parse_tasks(&[raw("a", "  ", &env)]).expect_err("run").field,
            "tasks[0].run"
        );
        let bad_env: BTreeMap<String, EnvValue> =
            [("1X".to_owned(), EnvValue::Plain("v".to_owned()))].into();
        assert_eq!(
            parse_tasks(&[raw("a", "true", &bad_env)])
                .expect_err("env")
                .field,
            "tasks[0].env.1X"
        );
        let mut t = raw("a", "true", &env);
        t.timeout_seconds = Some(0);
        assert_eq!(
            parse_tasks(&[t]).expect_err("timeout").field,
            "tasks[0].timeout_seconds"
        );
    }

    #[test]
    fn env_values_are_not_debug_printed() {
        let env: BTreeMap<String, EnvValue> = [
            ("TOKEN".to_owned(), EnvValue::Plain("hunter2".to_owned())),
            (
                "KEY".to_owned(),
                EnvValue::Sealed("c2VhbGVkLWh1bnRlcjI=".to_owned()),
            ),
        ]
        .into();
        let t = parse_tasks(&[raw("a", "true", &env)]).expect("valid");
        let shown = format!("{t:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("hunter2") && !shown.contains("c2VhbGVk"),
            "{shown}"
        );
    }

    #[test]
    fn states_round_trip_and_know_what_is_final() {
        for s in RunState::ALL {
            assert_eq!(RunState::parse(s.as_str()), Ok(s));
        }
        assert!(RunState::parse("done").is_err());
        assert!(!RunState::Queued.is_final() && !RunState::Running.is_final());
        assert!(RunState::Lost.is_final() && RunState::Succeeded.is_final());
    }
    fn end<'a>(state: RunState, exit_code: Option<i32>, reason: Option<&'a str>) -> TaskEnd<'a> {
        TaskEnd {
            task: "build",
            state,
            exit_code,
            reason,
        }
    }

    #[test]
    fn a_run_ends_when_its_last_task_succeeds_or_any_task_fails() {
        let ok = end(RunState::Succeeded, Some(0), None);
        assert_eq!(RunEnd::after_task(&ok, None, true), None);
        let done = RunEnd::after_task(&ok, None, false).expect("ends");
        assert_eq!(
            (done.state, done.reason.as_str()),
            (RunState::Succeeded, "every task succeeded")
        );
        let failed =
            RunEnd::after_task(&end(RunState::Failed, Some(2), None), None, true).expect("ends");
        assert_eq!(failed.state, RunState::Failed);
        assert_eq!(failed.reason, "task 'build' failed with exit code 2");
        assert_eq!(
            failed.not_run,
            "not run: task 'build' failed with exit code 2"
        );
        let timed_out = end(RunState::Failed, None, Some("timed out after 5 s"));
        assert_eq!(
            timed_out.describe(),
            "task 'build' failed: timed out after 5 s"
        );
    }

    #[test]
    fn a_cancel_request_wins_over_anything_but_a_failure() {
        let ok = end(RunState::Succeeded, Some(0), None);
        let cancelled = RunEnd::after_task(&ok, Some("user:alice"), true).expect("ends");
        assert_eq!(cancelled, RunEnd::cancelled_by("user:alice"));
        assert_eq!(cancelled.reason, "cancelled by user:alice");
        let killed = RunEnd::after_task(
            &end(RunState::Cancelled, None, None),
            Some("user:alice"),
            false,
        )
        .expect("ends");
        assert_eq!(killed.state, RunState::Cancelled);
        let failed = RunEnd::after_task(
            &end(RunState::Failed, Some(1), None),
            Some("user:alice"),
            false,
        )
        .expect("ends");
        assert_eq!(failed.state, RunState::Failed);
        let lost =
            RunEnd::task_ended_by_control_plane("build", RunState::Lost, "its instance went away");
        assert_eq!(lost.reason, "task 'build' lost: its instance went away");
        assert_eq!(RunEnd::runner_deleted().not_run, "the runner was deleted");
    }
}
