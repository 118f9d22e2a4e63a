//! The dispatch engine: hands ready tasks to connected instances with free capacity. One loop
//! per control plane runs the passes; [`Dispatcher`], an events subscriber, wakes it for a runner
//! whenever work may have become startable (a new run, a connected instance, a finished task, a
//! resume). Claiming a task is a conditional update in the store, so a task is never handed out
//! twice even if two passes (or two replicas) overlap.

use std::collections::{HashMap, HashSet};

use tether_domain::{EnvValue, RunState, RunnerId, TaskId};
use tether_protocol::session::{ServerMessage, TaskAssignment};
use tether_store::ReadyTask;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::events::Event;
use crate::services::StoreContext as _;
use crate::state::AppState;

/// Wakes the dispatch loop for a runner.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<RunnerId>,
}

impl Dispatcher {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<RunnerId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn poke(&self, runner: RunnerId) {
        let _ = self.tx.send(runner);
    }
}

impl crate::events::Subscriber for Dispatcher {
    fn deliver(&self, event: &crate::events::Event, _: &mut crate::events::Delivered) {
        use crate::events::Event;
        match event {
            Event::WorkQueued { runner } => self.poke(*runner),
            Event::PauseChanged {
                runner,
                paused_by: None,
            } => self.poke(runner.id),
            _ => {}
        }
    }
}

/// Runs dispatch passes until the channel closes; pokes that arrive during a pass are coalesced.
pub async fn run(state: AppState, mut rx: mpsc::UnboundedReceiver<RunnerId>) {
    while let Some(first) = rx.recv().await {
        let mut due = HashSet::from([first]);
        while let Ok(more) = rx.try_recv() {
            due.insert(more);
        }
        for runner in due {
            if let Err(e) = dispatch(&state, runner).await {
                tracing::error!(error = format!("{e:#}"), runner.id = %runner, "dispatching tasks failed");
            }
        }
    }
}

/// Hands ready tasks of one runner to its instances, each up to its capacity.
async fn dispatch(state: &AppState, runner: RunnerId) -> anyhow::Result<()> {
    let targets = state.link.dispatch_targets(runner);
    if targets.is_empty() {
        return Ok(());
    }
    let mut busy: HashMap<String, u32> = HashMap::new();
    for t in state
        .store
        .assigned_tasks(Some(runner))
        .await
        .op("assigned_tasks")?
    {
        *busy.entry(t.instance_id).or_default() += 1;
    }
    let mut free: Vec<(String, u32)> = targets
        .into_iter()
        .map(|t| {
            let used = busy.get(&t.instance_id).copied().unwrap_or(0);
            (t.instance_id, t.capacity.saturating_sub(used))
        })
        .collect();
    let total: u32 = free.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    for task in state
        .store
        .ready_tasks(runner, total)
        .await
        .op("ready_tasks")?
    {
        let Some((instance, slots)) = free
            .iter_mut()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
        else {
            break;
        };
        if !state
            .store
            .claim_task(task.task_id, instance, now)
            .await
            .op("claim_task")?
        {
            continue;
        }
        *slots -= 1;
        let (task_id, run_id) = (task.task_id, task.run_id);
        let Some(message) = assignment_or_fail(state, task).await? else {
            *slots += 1;
            continue;
        };
        if state.link.send_to_instance(runner, instance, message) {
            state.metrics.tasks_assigned.inc();
            tracing::info!(runner.id = %runner, run.id = %run_id, task.id = %task_id, instance.id = %instance, "task assigned");
        } else {
            // The session ended between choosing it and sending: put the task back.
            state
                .store
                .requeue_task(task_id, instance)
                .await
                .op("requeue_task")?;
            *slots = 0;
        }
    }
    Ok(())
}

/// The `assign` message for `task`, its secret environment values opened. A secret that does
/// not open (sealed under another master key, or altered) fails the task, saying so: it cannot
/// run as defined, and no secret is sent in any other form.
async fn assignment_or_fail(
    state: &AppState,
    task: ReadyTask,
) -> anyhow::Result<Option<ServerMessage>> {
    let mut env = std::collections::BTreeMap::new();
    let mut secret_env = Vec::new();
    for (name, value) in task.spec.env {
        let plain = match value {
            EnvValue::Plain(v) => v,
            EnvValue::Sealed(sealed) => match state.sealer.open_env(&name, &sealed) {
                Some(v) => {
                    secret_env.push(name.clone());
                    v
                }
                None => {
                    let reason = format!(
                        "the secret environment value {name} could not be decrypted (was the master key changed?); define it again"
                    );
                    tracing::error!(task.id = %task.task_id, env = %name, "{reason}");
                    state
                        .store
                        .end_task(
                            task.task_id,
                            RunState::Failed,
                            &reason,
                            OffsetDateTime::now_utc(),
                        )
                        .await
                        .op("end_task")?;
                    return Ok(None);
                }
            },
        };
        env.insert(name, plain);
    }
    Ok(Some(ServerMessage::Assign {
        task: TaskAssignment {
            task_id: task.task_id.to_string(),
            run_id: task.run_id.to_string(),
            pipeline: task.pipeline,
            name: task.spec.name.as_str().to_owned(),
            run: task.spec.run,
            env,
            secret_env,
            timeout_seconds: task.spec.timeout_seconds,
        },
    }))
}

/// A reconnected instance may have missed an assignment sent just before its connection dropped:
/// send again what it has not confirmed (it ignores task ids it already has), then dispatch.
pub async fn instance_connected(
    state: &AppState,
    runner: RunnerId,
    instance_id: &str,
) -> anyhow::Result<()> {
    for t in state
        .store
        .assigned_tasks(Some(runner))
        .await
        .op("assigned_tasks")?
    {
        if t.instance_id != instance_id || t.last_seq > 0 {
            continue;
        }
        if let Some(task) = state
            .store
            .task_assignment(t.task_id)
            .await
            .op("task_assignment")?
        {
            if let Some(message) = assignment_or_fail(state, task).await? {
                state.link.send_to_instance(runner, instance_id, message);
            }
        }
    }
    state.events.publish(Event::WorkQueued { runner }).await;
    Ok(())
}

/// An instance refused an assignment (it is draining): queue the task again for another one.
pub async fn rejected(
    state: &AppState,
    runner: RunnerId,
    instance_id: &str,
    task: TaskId,
) -> anyhow::Result<()> {
    if state
        .store
        .requeue_task(task, instance_id)
        .await
        .op("requeue_task")?
    {
        tracing::info!(runner.id = %runner, task.id = %task, instance.id = %instance_id, "instance refused a task; queued again");
    }
    state.events.publish(Event::WorkQueued { runner }).await;
    Ok(())
}
