//! One task's process: `sh -c <run>` in the workdir and in its own process group, stdout and
//! stderr through one pipe (so their relative order is kept), output batched into `running`
//! updates, then exactly one final update. Timeouts and cancels signal the whole process group,
//! so whatever the shell started dies with it.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};
use tether_protocol::session::{TaskAssignment, TaskUpdate, TaskUpdateState};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

use super::logbuf::LogBuffer;
use super::mask::Masker;
use crate::outbox::Outbox;

pub const CANCEL_REASON: &str = "cancelled by the control plane";
/// Output is sent at least this often while a task writes some.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// The runner's own credential stays out of the tasks it runs (and so out of their logs).
const RUNNER_SECRET_ENV: &str = "OAUTH_CLIENT_SECRET";

/// How long to wait for a task's processes before moving on.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    /// Between SIGTERM (cancel) and SIGKILL.
    pub cancel: Duration,
    /// After the shell exits, for processes it left in the background to close the output pipe.
    pub output: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Self {
            cancel: Duration::from_secs(5),
            output: Duration::from_secs(1),
        }
    }
}

/// Why the runner ended a task itself.
#[derive(Debug, Clone, Copy)]
enum Ending {
    TimedOut(u64),
    Cancelled,
}

#[derive(Debug)]
struct Outcome {
    state: TaskUpdateState,
    exit_code: Option<i32>,
    reason: Option<String>,
}

impl Outcome {
    fn failed(exit_code: Option<i32>, reason: Option<String>) -> Self {
        Self {
            state: TaskUpdateState::Failed,
            exit_code,
            reason,
        }
    }
}

/// Numbers one task's updates 1, 2, 3, ... and publishes them.
struct Reporter<'a> {
    outbox: &'a Outbox,
    task_id: String,
    seq: u64,
    /// The task's secret env values, masked in its log.
    mask: Masker,
}

impl Reporter<'_> {
    fn publish(
        &mut self,
        state: TaskUpdateState,
        log_chunk: Option<String>,
        outcome: Option<&Outcome>,
    ) {
        self.seq += 1;
        self.outbox.publish(TaskUpdate {
            task_id: self.task_id.clone(),
            seq: self.seq,
            state,
            // The outbox names this instance.
            instance_id: None,
            log_chunk,
            exit_code: outcome.and_then(|o| o.exit_code),
            reason: outcome.and_then(|o| o.reason.clone()),
        });
    }

    fn log(&mut self, chunk: Option<String>) {
        let chunk = self.mask.mask(chunk, false);
        if chunk.is_some() {
            self.publish(TaskUpdateState::Running, chunk, None);
        }
    }

    /// The last of the output: nothing is held back any more.
    fn log_end(&mut self, chunk: Option<String>) {
        let chunk = self.mask.mask(chunk, true);
        if chunk.is_some() {
            self.publish(TaskUpdateState::Running, chunk, None);
        }
    }
}

/// Runs `task` to its end and publishes its updates. Never fails: whatever goes wrong becomes
/// the task's final update.
pub(crate) async fn run(
    task: TaskAssignment,
    workdir: &Path,
    grace: Grace,
    outbox: &Outbox,
    cancel: oneshot::Receiver<()>,
) {
    let started = Instant::now();
    let secrets = task
        .secret_env
        .iter()
        .filter_map(|name| task.env.get(name).cloned());
    let mut report = Reporter {
        outbox,
        task_id: task.task_id.clone(),
        seq: 0,
        mask: Masker::new(secrets),
    };
    report.publish(TaskUpdateState::Running, None, None);
    tracing::info!(task.id = %task.task_id, run.id = %task.run_id, task.name = %task.name,
        pipeline = %task.pipeline, "task started");
    let outcome = match spawn(&task, workdir) {
        Ok((child, output)) => supervise(&task, child, output, grace, cancel, &mut report).await,
        Err(e) => Outcome::failed(None, Some(format!("could not start the task: {e}"))),
    };
    tracing::info!(task.id = %task.task_id, run.id = %task.run_id, task.name = %task.name,
        state = ?outcome.state, exit_code = ?outcome.exit_code, reason = outcome.reason.as_deref().unwrap_or(""),
        duration_ms = started.elapsed().as_millis() as u64, "task finished");
    report.publish(outcome.state, None, Some(&outcome));
}

fn spawn(task: &TaskAssignment, workdir: &Path) -> io::Result<(Child, pipe::Receiver)> {
    std::fs::create_dir_all(workdir)?;
    let (reader, writer) = io::pipe()?;
    let mut command = command(task, workdir);
    command.stdout(writer.try_clone()?).stderr(writer);
    let child = command.spawn()?;
    // The command still holds our copies of the pipe's write end; close them, or EOF never comes.
    drop(command);
    let output = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    Ok((child, output))
}

/// `sh -c <run>` with the task's env on top of the runner's, in its own process group.
fn command(task: &TaskAssignment, workdir: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&task.run)
        .env_remove(RUNNER_SECRET_ENV)
        .envs(&task.env)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .process_group(0);
    command
}

async fn supervise(
    task: &TaskAssignment,
    mut child: Child,
    mut output: pipe::Receiver,
    grace: Grace,
    mut cancel: oneshot::Receiver<()>,
    report: &mut Reporter<'_>,
) -> Outcome {
    // The shell leads its own group, so the group id is its pid.
    let group = child.id().and_then(|id| Pid::from_raw(id as i32));
    let signal = |sig: Signal| {
        if let Some(group) = group {
            if let Err(e) = kill_process_group(group, sig) {
                tracing::debug!(task.id = %task.task_id, error = %e, "signalling the task's process group failed");
            }
        }
    };
    // A timeout too large to represent means no timeout.
    let timeout_at = task
        .timeout_seconds
        .and_then(|s| Instant::now().checked_add(Duration::from_secs(s)));
    let mut log = LogBuffer::default();
    let mut buf = vec![0u8; 8192];
    let mut status: Option<io::Result<ExitStatus>> = None;
    let mut output_open = true;
    let mut ending: Option<Ending> = None;
    let mut cancel_armed = true;
    let mut flush_at: Option<Instant> = None;
    let mut kill_at: Option<Instant> = None;
    let mut output_deadline: Option<Instant> = None;
    // Signals are only sent while the shell is not reaped yet: until then its pid, and so the
    // group id, cannot belong to anybody else.
    while output_open || status.is_none() {
        tokio::select! {
            read = output.read(&mut buf), if output_open => match read {
                Ok(0) => output_open = false,
                Ok(n) => {
                    log.push(&buf[..n]);
                    if log.is_full() {
                        report.log(log.take());
                        flush_at = None;
                    } else if flush_at.is_none() {
                        flush_at = Some(Instant::now() + FLUSH_EVERY);
                    }
                }
                Err(e) => {
                    tracing::warn!(task.id = %task.task_id, error = %e, "reading the task's output failed; the rest of it is lost");
                    output_open = false;
                }
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited);
                output_deadline = Some(Instant::now() + grace.output);
            }
            () = at(flush_at) => {
                report.log(log.take());
                flush_at = None;
            }
            () = at(timeout_at), if ending.is_none() && status.is_none() => {
                signal(Signal::KILL);
                ending = task.timeout_seconds.map(Ending::TimedOut);
            }
            cancelled = &mut cancel, if cancel_armed && ending.is_none() && status.is_none() => {
                cancel_armed = false;
                if cancelled.is_ok() {
                    signal(Signal::TERM);
                    ending = Some(Ending::Cancelled);
                    kill_at = Some(Instant::now() + grace.cancel);
                }
            }
            () = at(kill_at), if status.is_none() => {
                signal(Signal::KILL);
                kill_at = None;
            }
            () = at(output_deadline), if output_open => {
                tracing::info!(task.id = %task.task_id, "the task exited but a process it left in the background keeps its output open; not waiting for it");
                output_open = false;
            }
        }
    }
    // All output goes out before the final update.
    report.log_end(log.finish());
    outcome(ending, status)
}

fn outcome(ending: Option<Ending>, status: Option<io::Result<ExitStatus>>) -> Outcome {
    match (ending, status) {
        (Some(Ending::TimedOut(secs)), _) => {
            Outcome::failed(None, Some(format!("timed out after {secs} s")))
        }
        (Some(Ending::Cancelled), _) => Outcome {
            state: TaskUpdateState::Cancelled,
            exit_code: None,
            reason: Some(CANCEL_REASON.to_owned()),
        },
        (None, Some(Ok(status))) => match (status.code(), status.signal()) {
            (Some(0), _) => Outcome {
                state: TaskUpdateState::Succeeded,
                exit_code: Some(0),
                reason: None,
            },
            (Some(code), _) => Outcome::failed(Some(code), None),
            (None, Some(sig)) => Outcome::failed(None, Some(format!("killed by signal {sig}"))),
            (None, None) => {
                Outcome::failed(None, Some("the task ended without an exit status".into()))
            }
        },
        (None, Some(Err(e))) => {
            Outcome::failed(None, Some(format!("lost track of the task's process: {e}")))
        }
        (None, None) => Outcome::failed(None, Some("lost track of the task's process".into())),
    }
}

/// Sleeps until `deadline`, or forever when there is none (keeps `select!` arms uniform).
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_secret_is_not_passed_to_tasks() {
        let task = TaskAssignment {
            task_id: "t".into(),
            run_id: "r".into(),
            pipeline: "p".into(),
            name: "n".into(),
            run: "true".into(),
            env: [("A".to_owned(), "1".to_owned())].into(),
            secret_env: Vec::new(),
            timeout_seconds: None,
        };
        let command = command(&task, Path::new("/tmp"));
        let envs: Vec<_> = command.as_std().get_envs().collect();
        assert!(envs.contains(&(RUNNER_SECRET_ENV.as_ref(), None)));
        assert!(envs.contains(&("A".as_ref(), Some("1".as_ref()))));
    }
}
