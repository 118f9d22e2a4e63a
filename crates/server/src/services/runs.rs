//! Runs: queueing a pipeline on a runner, handing its tasks to instances with free capacity,
//! applying the updates runners send back, cancelling, and marking tasks `lost` when their
//! instance does not come back.
//!
//! Dispatch happens in one background task per control plane, woken by
//! [`crate::events::Event::WorkQueued`] whenever something may have made work startable (a new run, a connected instance, a finished
//! task, a resume). Claiming a task is a conditional update in the store, so a task is never
//! handed out twice even if two dispatch passes overlap.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use tether_domain::{RunId, RunState, RunnerId, TaskId};
use tether_protocol::session::{ServerMessage, TaskAssignment, TaskUpdate, TaskUpdateState};
use tether_store::{
    CancelOutcome, NewRun, ReadyTask, RunFilter, RunRecord, TaskProgress, UpdateOutcome,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::audit::{self, AuditEventExt};
use super::ServiceError;
use crate::events::Event;
use crate::runner_link::Presence;
use crate::services::auth::Caller;
use crate::state::AppState;

/// Runs dispatch passes until the channel closes; pokes that arrive during a pass are coalesced.
pub async fn dispatch_loop(state: AppState, mut rx: mpsc::UnboundedReceiver<RunnerId>) {
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
    for t in state.store.assigned_tasks(Some(runner)).await? {
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
    for task in state.store.ready_tasks(runner, total).await? {
        let Some((instance, slots)) = free
            .iter_mut()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
        else {
            break;
        };
        if !state.store.claim_task(task.task_id, instance, now).await? {
            continue;
        }
        *slots -= 1;
        let (task_id, run_id) = (task.task_id, task.run_id);
        if state
            .link
            .send_to_instance(runner, instance, assignment(task))
        {
            state.metrics.tasks_assigned.inc();
            tracing::info!(runner.id = %runner, run.id = %run_id, task.id = %task_id, instance.id = %instance, "task assigned");
        } else {
            // The session ended between choosing it and sending: put the task back.
            state.store.requeue_task(task_id, instance).await?;
            *slots = 0;
        }
    }
    Ok(())
}

fn assignment(task: ReadyTask) -> ServerMessage {
    ServerMessage::Assign {
        task: TaskAssignment {
            task_id: task.task_id.to_string(),
            run_id: task.run_id.to_string(),
            pipeline: task.pipeline,
            name: task.spec.name.as_str().to_owned(),
            run: task.spec.run,
            env: task.spec.env,
            timeout_seconds: task.spec.timeout_seconds,
        },
    }
}

/// A reconnected instance may have missed an assignment sent just before its connection dropped:
/// send again what it has not confirmed (it ignores task ids it already has), then dispatch.
pub async fn instance_connected(
    state: &AppState,
    runner: RunnerId,
    instance_id: &str,
) -> anyhow::Result<()> {
    for t in state.store.assigned_tasks(Some(runner)).await? {
        if t.instance_id != instance_id || t.last_seq > 0 {
            continue;
        }
        if let Some(task) = state.store.task_assignment(t.task_id).await? {
            state
                .link
                .send_to_instance(runner, instance_id, assignment(task));
        }
    }
    state.events.publish(Event::WorkQueued { runner });
    Ok(())
}

/// Queues a run of `pipeline` on `runner_key`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    pipeline: &str,
    runner_key: &str,
) -> Result<RunRecord, ServiceError> {
    caller.require(tether_domain::Role::Operator)?;
    let p = super::pipelines::find(state, pipeline).await?;
    let runner = super::runners::find(state, runner_key).await?;
    let id = RunId::new();
    let ev = audit::event(caller.actor(), "run.created")
        .runner(runner.id, runner.name.as_str())
        .target(format!("run:{id}"))
        .source_ip(caller.source_ip.clone())
        .detail(json!({"pipeline": p.name.as_str()}));
    let run = NewRun {
        id,
        pipeline: p.name,
        runner_id: runner.id,
        runner_name: runner.name,
        tasks: p.tasks.into_iter().map(|t| (TaskId::new(), t)).collect(),
        created_at: OffsetDateTime::now_utc(),
        created_by: caller.actor(),
    };
    let record = state.store.create_run(run, ev).await?;
    tracing::info!(run.id = %record.id, runner.id = %record.runner_id, pipeline = %record.pipeline, "run queued");
    state.events.publish(Event::WorkQueued {
        runner: record.runner_id,
    });
    Ok(record)
}

pub async fn find(state: &AppState, key: &str) -> Result<RunRecord, ServiceError> {
    let found = match key.parse::<RunId>() {
        Ok(id) => state.store.run_by_id(id).await?,
        Err(_) => None,
    };
    found.ok_or_else(|| ServiceError::NotFound {
        what: "run",
        code: "run_not_found",
        detail: format!("no run with the id '{key}'"),
    })
}

pub async fn list_for_runner(
    state: &AppState,
    runner_key: &str,
    run_state: Option<RunState>,
    limit: u32,
) -> Result<Vec<RunRecord>, ServiceError> {
    let runner = super::runners::find(state, runner_key).await?;
    Ok(state
        .store
        .list_runs(RunFilter {
            runner_id: Some(runner.id),
            state: run_state,
            before: None,
            limit,
        })
        .await?)
}

pub async fn log(state: &AppState, key: &str, offset: u64) -> Result<String, ServiceError> {
    let run = find(state, key).await?;
    Ok(state.store.run_log(run.id, offset).await?)
}

/// Cancels a run: queued tasks at once; a running task's process group is killed by its instance,
/// which then reports it `cancelled`. A task whose instance is not connected is cancelled here.
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    key: &str,
) -> Result<RunRecord, ServiceError> {
    caller.require(tether_domain::Role::Operator)?;
    let run = find(state, key).await?;
    let ev = audit::event(caller.actor(), "run.cancel_requested")
        .runner(run.runner_id, &run.runner_name)
        .target(format!("run:{}", run.id))
        .source_ip(caller.source_ip.clone());
    match state.store.cancel_run(run.id, ev).await? {
        CancelOutcome::AlreadyFinished(s) => {
            return Err(ServiceError::Conflict {
                code: "run_finished",
                detail: format!("run {} already ended: it is {s}", run.id),
            })
        }
        CancelOutcome::Requested { running } => {
            let now = OffsetDateTime::now_utc();
            for t in running {
                let cancel = ServerMessage::Cancel {
                    task_id: t.task_id.to_string(),
                };
                if !state
                    .link
                    .send_to_instance(t.runner_id, &t.instance_id, cancel)
                {
                    let reason = format!(
                        "cancelled by {} while its instance {} was disconnected",
                        caller.actor(),
                        t.instance_id
                    );
                    state
                        .store
                        .end_task(t.task_id, RunState::Cancelled, &reason, now)
                        .await?;
                }
            }
        }
    }
    state.events.publish(Event::WorkQueued {
        runner: run.runner_id,
    });
    find(state, key).await
}

/// Applies one task update from an instance. Returns the message to answer with: `ack` once the
/// update is stored (or known), plus `cancel` when the task was given up on while still running.
pub async fn apply_update(
    state: &AppState,
    runner: RunnerId,
    update: TaskUpdate,
) -> anyhow::Result<Vec<ServerMessage>> {
    let ack = ServerMessage::Ack {
        task_id: update.task_id.clone(),
        seq: update.seq,
    };
    let Ok(task_id) = update.task_id.parse::<TaskId>() else {
        tracing::warn!(runner.id = %runner, "dropping an update for a malformed task id");
        return Ok(vec![ack]);
    };
    let run_state = match update.state {
        TaskUpdateState::Running => RunState::Running,
        TaskUpdateState::Succeeded => RunState::Succeeded,
        TaskUpdateState::Failed => RunState::Failed,
        TaskUpdateState::Cancelled => RunState::Cancelled,
    };
    let progress = TaskProgress {
        task_id,
        seq: update.seq,
        state: run_state,
        log_chunk: update.log_chunk,
        exit_code: update.exit_code,
        reason: update.reason.map(|r| r.chars().take(1000).collect()),
        at: OffsetDateTime::now_utc(),
    };
    let mut reply = vec![ack];
    match state.store.apply_task_update(runner, progress).await? {
        UpdateOutcome::Applied {
            task_final,
            run_final,
        } => {
            if task_final {
                tracing::info!(runner.id = %runner, task.id = %task_id, state = run_state.as_str(),
                    exit_code = ?update.exit_code, "task finished");
                state.events.publish(Event::WorkQueued { runner });
            }
            if let Some(s) = run_final {
                tracing::info!(runner.id = %runner, task.id = %task_id, state = s.as_str(), "run finished");
            }
        }
        UpdateOutcome::AlreadyFinished(s) if !update.state.is_final() => {
            // The control plane gave up on it (cancelled while disconnected, or lost): stop it.
            tracing::info!(runner.id = %runner, task.id = %task_id, state = s.as_str(),
                "an instance still runs a task that already ended here; cancelling it");
            reply.push(ServerMessage::Cancel {
                task_id: update.task_id,
            });
        }
        UpdateOutcome::UnknownTask => {
            tracing::warn!(runner.id = %runner, task.id = %task_id, "dropping an update for a task this runner does not have");
        }
        UpdateOutcome::AlreadyFinished(_) | UpdateOutcome::Duplicate => {}
    }
    Ok(reply)
}

/// An instance refused an assignment (it is draining): queue the task again for another one.
pub async fn rejected(
    state: &AppState,
    runner: RunnerId,
    instance_id: &str,
    task_id: &str,
) -> anyhow::Result<()> {
    if let Ok(task) = task_id.parse::<TaskId>() {
        if state.store.requeue_task(task, instance_id).await? {
            tracing::info!(runner.id = %runner, task.id = %task, instance.id = %instance_id, "instance refused a task; queued again");
        }
    }
    state.events.publish(Event::WorkQueued { runner });
    Ok(())
}

/// Marks `lost` every task whose instance has been gone for `lost_after` (run periodically). An
/// instance not seen since this process started counts as gone since the later of the start and
/// the assignment.
pub async fn sweep_lost(state: &AppState) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let lost_after = state.config.lost_after;
    for t in state.store.assigned_tasks(None).await? {
        let gone_since = match state.link.presence(t.runner_id, &t.instance_id) {
            Presence::Live => continue,
            Presence::GoneSince(at) => at,
            Presence::Unknown => state.started_at.max(t.assigned_at),
        };
        if now - gone_since < lost_after {
            continue;
        }
        let reason = format!(
            "its instance {} has been disconnected for more than {} s",
            t.instance_id,
            lost_after.as_secs()
        );
        if let Some(run) = state
            .store
            .end_task(t.task_id, RunState::Lost, &reason, now)
            .await?
        {
            tracing::warn!(run.id = %run.id, task.id = %t.task_id, instance.id = %t.instance_id, "task lost: {reason}");
            let ev = audit::event("system", "run.lost")
                .runner(run.runner_id, &run.runner_name)
                .target(format!("run:{}", run.id))
                .detail(json!({"task_id": t.task_id.to_string(), "instance_id": t.instance_id}));
            state.store.append_audit(ev).await?;
            state.events.publish(Event::WorkQueued {
                runner: t.runner_id,
            });
        }
    }
    state.link.forget_departed(lost_after * 2);
    // A safety net for pokes lost to a crash mid-pass: a connected runner with work gets a pass.
    let connected: HashSet<RunnerId> = state.link.connected_runners().into_iter().collect();
    for runner in state.store.runners_with_active_runs().await? {
        if connected.contains(&runner) {
            state.events.publish(Event::WorkQueued { runner });
        }
    }
    Ok(())
}
