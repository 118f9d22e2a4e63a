//! Runs: queueing a pipeline on a runner, applying the updates runners send back, cancelling,
//! and marking tasks `lost` when their instance does not come back. Handing tasks to instances
//! is the dispatch engine's (the `dispatch` module), woken by the [`Event::WorkQueued`] these publish.

use std::collections::HashSet;

use serde_json::json;
use tether_domain::{RunId, RunState, RunnerId, RunnerRef, TaskId};
use tether_protocol::session::ServerMessage;
use tether_store::{CancelOutcome, NewRun, RunFilter, RunRecord, TaskProgress, UpdateOutcome};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::ServiceError;
use crate::events::Event;
use crate::runner_link::Presence;
use crate::services::auth::Caller;
use crate::services::StoreContext as _;
use crate::state::AppState;

/// Queues a run of `pipeline` on `runner_key`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    pipeline: &str,
    runner_key: &RunnerRef,
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
    let record = state.store.create_run(run, ev).await.op("create_run")?;
    tracing::info!(run.id = %record.id, runner.id = %record.runner_id, pipeline = %record.pipeline, "run queued");
    state
        .events
        .publish(Event::WorkQueued {
            runner: record.runner_id,
        })
        .await;
    Ok(record)
}

pub async fn find(state: &AppState, key: &str) -> Result<RunRecord, ServiceError> {
    let found = match key.parse::<RunId>() {
        Ok(id) => state.store.run_by_id(id).await.op("run_by_id")?,
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
    runner_key: &RunnerRef,
    run_state: Option<RunState>,
    limit: u32,
) -> Result<Vec<RunRecord>, ServiceError> {
    let runner = super::runners::find(state, runner_key).await?;
    state
        .store
        .list_runs(RunFilter {
            runner_id: Some(runner.id),
            state: run_state,
            before: None,
            limit,
        })
        .await
        .op("list_runs")
}

/// At most `limit` bytes of a run's log from byte `offset` on, and its whole length so far.
pub async fn log(
    state: &AppState,
    key: &str,
    offset: u64,
    limit: u64,
) -> Result<tether_store::LogPage, ServiceError> {
    let run = find(state, key).await?;
    state
        .store
        .run_log(run.id, offset, limit)
        .await
        .op("run_log")
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
    match state.store.cancel_run(run.id, ev).await.op("cancel_run")? {
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
                        .await
                        .op("end_task")?;
                }
            }
        }
    }
    state
        .events
        .publish(Event::WorkQueued {
            runner: run.runner_id,
        })
        .await;
    find(state, key).await
}

/// What the instance that sent a task update should do next with the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterUpdate {
    /// Go on (or, for a final update, nothing more): the update is stored, or was already.
    Continue,
    /// Stop running it: the control plane gave up on it (cancelled while disconnected, or lost).
    Stop,
    /// A protocol error: the update is refused (not stored, not acknowledged) and the session
    /// ends, saying why.
    Refuse(String),
}

/// Applies one task update from an instance of `runner`. Once this returns the update is stored
/// (or known), so the edge may acknowledge it; an error means it was not, and must not be.
pub async fn apply_update(
    state: &AppState,
    runner: RunnerId,
    mut update: TaskProgress,
) -> anyhow::Result<AfterUpdate> {
    let (task_id, reported, exit_code) = (update.task_id, update.state, update.exit_code);
    let instance = update.instance_id.clone();
    update.reason = update.reason.map(|r| r.chars().take(1000).collect());
    match state
        .store
        .apply_task_update(runner, update, state.config.max_log_bytes_per_run)
        .await
        .op("apply_task_update")?
    {
        UpdateOutcome::Applied {
            task_final,
            run_final,
            log_truncated,
        } => {
            if log_truncated {
                tracing::info!(runner.id = %runner, task.id = %task_id,
                    max_bytes = state.config.max_log_bytes_per_run,
                    "a run's log reached its limit; its later output is not kept");
            }
            if task_final {
                tracing::info!(runner.id = %runner, task.id = %task_id, state = reported.as_str(),
                    exit_code = ?exit_code, "task finished");
                state.events.publish(Event::WorkQueued { runner }).await;
            }
            if let Some(s) = run_final {
                tracing::info!(runner.id = %runner, task.id = %task_id, state = s.as_str(), "run finished");
            }
            Ok(AfterUpdate::Continue)
        }
        UpdateOutcome::AlreadyFinished(s) if !reported.is_final() => {
            tracing::info!(runner.id = %runner, task.id = %task_id, state = s.as_str(),
                "an instance still runs a task that already ended here; cancelling it");
            Ok(AfterUpdate::Stop)
        }
        UpdateOutcome::UnknownTask => {
            tracing::warn!(runner.id = %runner, task.id = %task_id, "dropping an update for a task this runner does not have");
            Ok(AfterUpdate::Continue)
        }
        UpdateOutcome::NotAssigned => Ok(AfterUpdate::Refuse(format!(
            "task {task_id} is not running on instance {}",
            instance.chars().take(64).collect::<String>()
        ))),
        UpdateOutcome::OutOfOrder { expected } => Ok(AfterUpdate::Refuse(format!(
            "task {task_id}: expected update seq {expected}"
        ))),
        UpdateOutcome::AlreadyFinished(_) | UpdateOutcome::Duplicate => Ok(AfterUpdate::Continue),
    }
}

/// Marks `lost` every task whose instance has been gone for `lost_after` (run periodically). An
/// instance not seen since this process started counts as gone since the later of the start and
/// the assignment.
pub async fn sweep_lost(state: &AppState) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let lost_after = state.config.lost_after;
    for t in state
        .store
        .assigned_tasks(None)
        .await
        .op("assigned_tasks")?
    {
        let here = match state.link.presence(t.runner_id, &t.instance_id) {
            Presence::Live => continue,
            Presence::GoneSince(at) => Some(at),
            Presence::Unknown => None,
        };
        // Another replica may hold (or have held) the instance's session.
        let live_after = now - state.config.heartbeat * 3;
        let elsewhere = state
            .store
            .instance_presence(t.runner_id, &t.instance_id, &state.replica_id, live_after)
            .await
            .op("instance_presence")?;
        let gone_since = match (here, elsewhere) {
            (_, tether_store::SharedPresence::Live) => continue,
            (Some(a), tether_store::SharedPresence::GoneSince(b)) => a.max(b),
            (Some(a), tether_store::SharedPresence::Unknown) => a,
            (None, tether_store::SharedPresence::GoneSince(b)) => b,
            (None, tether_store::SharedPresence::Unknown) => state.started_at.max(t.assigned_at),
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
            .await
            .op("end_task")?
        {
            tracing::warn!(run.id = %run.id, task.id = %t.task_id, instance.id = %t.instance_id, "task lost: {reason}");
            let ev = audit::event("system", "run.lost")
                .runner(run.runner_id, &run.runner_name)
                .target(format!("run:{}", run.id))
                .detail(json!({"task_id": t.task_id.to_string(), "instance_id": t.instance_id}));
            state.store.append_audit(ev).await.op("append_audit")?;
            state
                .events
                .publish(Event::WorkQueued {
                    runner: t.runner_id,
                })
                .await;
        }
    }
    state.link.forget_departed(lost_after * 2);
    // A safety net for pokes lost to a crash mid-pass: a connected runner with work gets a pass.
    let connected: HashSet<RunnerId> = state.link.connected_runners().into_iter().collect();
    for runner in state
        .store
        .runners_with_active_runs()
        .await
        .op("runners_with_active_runs")?
    {
        if connected.contains(&runner) {
            state.events.publish(Event::WorkQueued { runner }).await;
        }
    }
    Ok(())
}
