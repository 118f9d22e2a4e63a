//! Runs the tasks the control plane assigns: admission (capacity, ids already seen), one tokio
//! task per task, cancels, and the running count that heartbeats, metrics and draining read.
//! Tasks belong to the agent, not to a session: they keep running across reconnects. How one
//! task's process is run and reported lives in `process`.

mod logbuf;
mod mask;
mod process;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tether_protocol::session::TaskAssignment;
use tokio::sync::{oneshot, watch};

pub use process::{Grace, CANCEL_REASON};

use crate::metrics::RunnerMetrics;
use crate::outbox::Outbox;

/// What [`Executor::start`] did with an assignment.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Started,
    /// This process already ran, runs or spooled this task id (the control plane re-sends
    /// assignments after a reconnect): nothing to do.
    AlreadyKnown,
    /// Not started; tell the control plane why (`reject`).
    Rejected(String),
}

#[derive(Debug, Clone)]
pub struct Executor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    workdir: PathBuf,
    max_tasks: usize,
    grace: Grace,
    outbox: Arc<Outbox>,
    metrics: Arc<RunnerMetrics>,
    state: Mutex<State>,
    running: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct State {
    /// Running tasks and the way to cancel each (taken by the first cancel).
    running: HashMap<String, Option<oneshot::Sender<()>>>,
    /// Every task id this process has run or found in the spool.
    known: HashSet<String>,
}

impl Executor {
    /// Task ids already in the outbox's spool count as known: they are never run again.
    pub fn new(
        workdir: PathBuf,
        max_tasks: u32,
        grace: Grace,
        outbox: Arc<Outbox>,
        metrics: Arc<RunnerMetrics>,
    ) -> Self {
        let state = State {
            running: HashMap::new(),
            known: outbox.task_ids().into_iter().collect(),
        };
        Self {
            shared: Arc::new(Shared {
                workdir,
                max_tasks: max_tasks as usize,
                grace,
                outbox,
                metrics,
                state: Mutex::new(state),
                running: watch::Sender::new(0),
            }),
        }
    }

    /// Starts `task` unless its id is known or the instance is full. Needs a tokio runtime.
    pub fn start(&self, task: TaskAssignment) -> Admission {
        let mut state = self.shared.lock();
        if state.known.contains(&task.task_id) {
            tracing::debug!(task.id = %task.task_id, "ignoring an assignment this instance already has");
            return Admission::AlreadyKnown;
        }
        if state.running.len() >= self.shared.max_tasks {
            tracing::warn!(task.id = %task.task_id, max_tasks = self.shared.max_tasks,
                "rejecting an assignment: this instance already runs as many tasks as it may");
            return Admission::Rejected(format!(
                "this instance already runs {} tasks (TETHER_MAX_TASKS)",
                self.shared.max_tasks
            ));
        }
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let task_id = task.task_id.clone();
        state.known.insert(task_id.clone());
        state.running.insert(task_id.clone(), Some(cancel_tx));
        self.shared.count(&state);
        drop(state);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // Unregisters the task however this future ends, so draining cannot hang on it.
            let _done = Done(shared.clone(), task_id);
            process::run(
                task,
                &shared.workdir,
                shared.grace,
                &shared.outbox,
                cancel_rx,
            )
            .await;
        });
        Admission::Started
    }

    /// True if this process ran, runs or spooled `task_id`.
    pub fn knows(&self, task_id: &str) -> bool {
        self.shared.lock().known.contains(task_id)
    }

    /// Cancels a running task (SIGTERM, then SIGKILL after the grace period). False if this
    /// instance does not run it.
    pub fn cancel(&self, task_id: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(cancel) = state.running.get_mut(task_id) else {
            return false;
        };
        if let Some(tx) = cancel.take() {
            tracing::info!(task.id = %task_id, "cancelling a task at the control plane's request");
            let _ = tx.send(());
        }
        true
    }

    /// Cancels every running task (the runner was deleted: nobody wants their results).
    pub fn cancel_all(&self) -> usize {
        let mut state = self.shared.lock();
        let mut n = 0;
        for cancel in state.running.values_mut() {
            if let Some(tx) = cancel.take() {
                let _ = tx.send(());
                n += 1;
            }
        }
        n
    }

    /// How many tasks run now.
    pub fn running(&self) -> usize {
        *self.shared.running.borrow()
    }

    /// Follows the running count (changes when a task starts or ends).
    pub fn watch_running(&self) -> watch::Receiver<usize> {
        self.shared.running.subscribe()
    }

    /// Resolves once no task runs.
    pub async fn wait_idle(&self) {
        let _ = self.watch_running().wait_for(|n| *n == 0).await;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the running count; called with the state locked so counts never go backwards.
    fn count(&self, state: &State) {
        let n = state.running.len();
        self.metrics.set_active_tasks(n as u32);
        self.running.send_replace(n);
    }
}

struct Done(Arc<Shared>, String);

impl Drop for Done {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running.remove(&self.1);
        self.0.count(&state);
    }
}
