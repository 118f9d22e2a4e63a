//! Registering, finding and deleting runners.

use std::sync::Arc;

use serde_json::json;
use tether_domain::{
    ClientId, ClientSecret, Description, Platform, Role, Rollout, RolloutState, RunnerId,
    RunnerName, RunnerRef,
};
use tether_store::{Conflict, NewRunner, PersistedStatus, RunnerRecord, StoreError};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::{rfc3339, ServiceError};
use crate::events::Event;
use crate::services::auth::Caller;
use crate::services::StoreContext as _;
use crate::state::AppState;

#[derive(Debug)]
pub struct NewRunnerInput {
    pub name: RunnerName,
    pub platform: Platform,
    pub description: Description,
}

/// Registers a runner with credential generation 1. The plaintext secret is returned exactly once.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    input: NewRunnerInput,
) -> Result<(RunnerRecord, ClientSecret), ServiceError> {
    caller.require(Role::Operator)?;
    register(state, &caller.actor(), caller.source_ip.clone(), input).await
}

/// Registers a runner on behalf of `actor` (a user, or `system` for the `--dev` local runner).
pub async fn register(
    state: &AppState,
    actor: &str,
    source_ip: Option<String>,
    input: NewRunnerInput,
) -> Result<(RunnerRecord, ClientSecret), ServiceError> {
    let secret = ClientSecret::generate();
    let new = NewRunner {
        id: RunnerId::new(),
        name: input.name,
        description: input.description,
        platform: input.platform,
        client_id: ClientId::generate(),
        verifier: state.pepper.verifier(secret.expose()),
        created_at: OffsetDateTime::now_utc(),
        created_by: actor.to_owned(),
    };
    let ev = audit::event(actor, "runner.created")
        .runner(new.id, new.name.as_str())
        .source_ip(source_ip)
        .detail(json!({"platform": new.platform.as_str(), "client_id": new.client_id.as_str(), "generation": 1}));
    let name = new.name.clone();
    match state.store.create_runner(new, ev).await {
        Ok(record) => {
            tracing::info!(runner.id = %record.id, runner.name = %record.name, "runner created");
            Ok((record, secret))
        }
        Err(StoreError::Conflict(Conflict::RunnerName)) => Err(ServiceError::Conflict {
            code: "runner_name_taken",
            detail: format!("a runner named '{name}' already exists"),
        }),
        Err(e) => Err(e).op("create_runner"),
    }
}

pub async fn list(
    state: &AppState,
    after: Option<RunnerId>,
    limit: u32,
) -> Result<Vec<RunnerRecord>, ServiceError> {
    state
        .store
        .list_runners(after, limit)
        .await
        .op("list_runners")
}

/// Finds a runner by id or by unique name.
pub async fn find(state: &AppState, key: &RunnerRef) -> Result<RunnerRecord, ServiceError> {
    let found = match key {
        RunnerRef::Id(id) => state.store.runner_by_id(*id).await.op("runner_by_id")?,
        RunnerRef::Name(name) => state
            .store
            .runner_by_name(name)
            .await
            .op("runner_by_name")?,
    };
    found.ok_or_else(|| not_found(&key.to_string()))
}

/// The answer for a runner that does not exist (or a key that cannot name one).
pub fn not_found(key: &str) -> ServiceError {
    ServiceError::NotFound {
        what: "runner",
        code: "runner_not_found",
        detail: format!("no runner with the id or name '{key}'"),
    }
}

/// The runner `key` names: an id, or a name. A key that is neither names no runner (not found,
/// like a name nobody has).
pub fn parse_ref(key: &str) -> Result<RunnerRef, ServiceError> {
    RunnerRef::parse(key).map_err(|_| not_found(key))
}

/// Deletes a runner; its credentials stop working at once.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
) -> Result<(), ServiceError> {
    caller.require(Role::Operator)?;
    let runner = find(state, key).await?;
    let ev = audit::event(caller.actor(), "runner.deleted")
        .runner(runner.id, runner.name.as_str())
        .source_ip(caller.source_ip.clone())
        .detail(json!({"client_id": runner.client_id.as_str()}));
    let deleted = state
        .store
        .delete_runner(runner.id, ev)
        .await
        .op("delete_runner")?;
    let closed = state
        .events
        .publish(Event::RunnerDeleted {
            runner: runner.id,
            client_id: runner.client_id.clone(),
        })
        .await
        .sessions_closed;
    if !closed.is_empty() {
        tracing::info!(runner.id = %runner.id, sessions = closed.len(), "closed sessions of deleted runner");
    }
    if !deleted {
        return Err(not_found(&key.to_string()));
    }
    tracing::info!(runner.id = %runner.id, runner.name = %runner.name, "runner deleted");
    Ok(())
}

/// Stops assigning new work to the runner; running tasks finish. `until` resumes it automatically.
pub async fn pause(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
    until: Option<OffsetDateTime>,
) -> Result<RunnerRecord, ServiceError> {
    caller.require(Role::Operator)?;
    let runner = find(state, key).await?;
    let ev = audit::event(caller.actor(), "runner.paused")
        .runner(runner.id, runner.name.as_str())
        .source_ip(caller.source_ip.clone())
        .detail(json!({"until": until.map(rfc3339)}));
    state
        .store
        .set_paused(runner.id, Some((caller.actor(), until)), ev)
        .await
        .op("set_paused")?;
    state
        .events
        .publish(Event::PauseChanged {
            runner: Arc::new(runner),
            paused_by: Some(caller.actor()),
        })
        .await;
    find(state, key).await
}

pub async fn resume(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
) -> Result<RunnerRecord, ServiceError> {
    caller.require(Role::Operator)?;
    let runner = find(state, key).await?;
    let ev = audit::event(caller.actor(), "runner.resumed")
        .runner(runner.id, runner.name.as_str())
        .source_ip(caller.source_ip.clone());
    state
        .store
        .set_paused(runner.id, None, ev)
        .await
        .op("set_paused")?;
    state
        .events
        .publish(Event::PauseChanged {
            runner: Arc::new(runner),
            paused_by: None,
        })
        .await;
    find(state, key).await
}

/// Tells every live instance to drain and exit, so its orchestrator starts a replacement.
pub async fn restart(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
) -> Result<(RunnerRecord, usize), ServiceError> {
    caller.require(Role::Operator)?;
    let runner = find(state, key).await?;
    let drained = state
        .events
        .publish(Event::DrainRequested {
            runner: runner.id,
            reason: format!("restart requested by {}", caller.actor()),
        })
        .await
        .instances_told;
    if drained == 0 {
        return Err(ServiceError::Conflict {
            code: "no_live_instances",
            detail: format!(
                "runner '{}' has no connected instance to restart; start it in your infrastructure",
                runner.name
            ),
        });
    }
    let ev = audit::event(caller.actor(), "runner.restart_requested")
        .runner(runner.id, runner.name.as_str())
        .source_ip(caller.source_ip.clone())
        .detail(json!({"instances": drained}));
    state.store.append_audit(ev).await.op("append_audit")?;
    Ok((runner, drained))
}

/// Resumes runners whose timed pause has ended (run periodically).
pub async fn resume_due(state: &AppState) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    for (id, name) in state.store.pauses_due(now).await.op("pauses_due")? {
        let ev = audit::event("system", "runner.resumed")
            .runner(id, name.as_str())
            .detail(json!({"reason": "pause period ended"}));
        state
            .store
            .set_paused(id, None, ev)
            .await
            .op("set_paused")?;
        match state.store.runner_by_id(id).await.op("runner_by_id")? {
            Some(runner) => {
                state
                    .events
                    .publish(Event::PauseChanged {
                        runner: Arc::new(runner),
                        paused_by: None,
                    })
                    .await;
            }
            // Deleted meanwhile: nothing to resume.
            None => continue,
        }
        tracing::info!(runner.id = %id, runner.name = %name, "pause period ended; runner resumed");
    }
    Ok(())
}

/// A runner as the control plane sees it now: its live sessions on this replica and on the others
/// (else the last status written to the store), and where its newest credential generation stands
/// among them. The one read model the API, the web pages and the live updates use.
#[derive(Debug, Clone)]
pub struct LiveRunner {
    pub record: RunnerRecord,
    pub status: PersistedStatus,
    /// Every connected instance, on whichever replica holds its session.
    pub instances: Vec<crate::runner_link::Instance>,
    pub rollout: Rollout,
    /// Since when every live instance has been on the newest generation (applied only).
    pub applied_since: Option<OffsetDateTime>,
    /// The file the runner reads its secret from: the one its live instances all name, else the
    /// one its last session named.
    pub secret_file: Option<String>,
}

/// [`live_all`] of one runner.
pub async fn live(state: &AppState, record: RunnerRecord) -> Result<LiveRunner, ServiceError> {
    let mut all = live_all(state, vec![record]).await?;
    all.pop()
        .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("a runner went missing")))
}

/// The live view of each runner, in the order given. With replicas, one read of the session
/// registry finds the instances the other replicas hold.
pub async fn live_all(
    state: &AppState,
    records: Vec<RunnerRecord>,
) -> Result<Vec<LiveRunner>, ServiceError> {
    let mut elsewhere: std::collections::HashMap<RunnerId, Vec<crate::runner_link::Instance>> =
        Default::default();
    if state.store.shared() && !records.is_empty() {
        let ids: Vec<RunnerId> = records.iter().map(|r| r.id).collect();
        let live_after = OffsetDateTime::now_utc() - state.config.heartbeat * 3;
        for s in state
            .store
            .sessions_elsewhere(&ids, &state.replica_id, live_after)
            .await
            .op("sessions_elsewhere")?
        {
            elsewhere
                .entry(s.runner_id)
                .or_default()
                .push(crate::runner_link::Instance {
                    instance_id: s.instance_id,
                    hostname: s.hostname,
                    connected_at: s.connected_at,
                    last_heartbeat_at: s.last_heartbeat_at,
                    credential_generation: s.generation,
                    generation_since: s.generation_since,
                    running_tasks: s.running_tasks,
                    secret_source: s.secret_source,
                    hot_reload: s.hot_reload,
                    secret_file: s.secret_file,
                });
        }
    }
    Ok(records
        .into_iter()
        .map(|r| {
            let others = elsewhere.remove(&r.id).unwrap_or_default();
            assemble(state, r, others)
        })
        .collect())
}

/// Joins what this replica holds of a runner with the instances `others` hold. The status is this
/// replica's while it holds a session (it derives it from facts it has); otherwise, with replicas,
/// the newer of its own view and the store's (written by whichever replica derived it last), and
/// on a single process its view since start, else the store's.
fn assemble(
    state: &AppState,
    record: RunnerRecord,
    others: Vec<crate::runner_link::Instance>,
) -> LiveRunner {
    let (status, mut instances, last_file) = match state.link.view(record.id) {
        Some(live)
            if !live.instances.is_empty()
                || !state.store.shared()
                || live.status.since >= record.status.since =>
        {
            (live.status, live.instances, live.last_secret_file)
        }
        Some(live) => (record.status.clone(), live.instances, live.last_secret_file),
        None => (record.status.clone(), Vec::new(), None),
    };
    for other in others {
        // A session superseded here may still be open in the registry for a moment: ours wins.
        if !instances.iter().any(|i| i.instance_id == other.instance_id) {
            instances.push(other);
        }
    }
    instances.sort_by(|a, b| {
        a.connected_at
            .cmp(&b.connected_at)
            .then(a.instance_id.cmp(&b.instance_id))
    });
    let last_file = last_file.or_else(|| instances.iter().find_map(|i| i.secret_file.clone()));
    let secret_file = match instances.first() {
        Some(first) if instances.iter().all(|i| i.secret_file == first.secret_file) => {
            first.secret_file.clone()
        }
        Some(_) => None,
        None => last_file,
    };
    let rollout = Rollout::of(
        record.generation,
        record.retiring_until,
        OffsetDateTime::now_utc(),
        instances.iter().map(|i| i.credential_generation),
    );
    let applied_since = (rollout.state == RolloutState::Applied)
        .then(|| instances.iter().map(|i| i.generation_since).max())
        .flatten();
    LiveRunner {
        record,
        status,
        instances,
        rollout,
        applied_since,
        secret_file,
    }
}

impl LiveRunner {
    /// One line on the rollout for people, as the Runners list and `tether runners show` say it.
    pub fn rollout_summary(&self, now: OffsetDateTime) -> String {
        let r = &self.rollout;
        let instances = |n: usize| match n {
            1 => "1 instance".to_owned(),
            n => format!("{n} instances"),
        };
        match r.state {
            RolloutState::Applied => format!(
                "applied: {} on generation {}{}",
                instances(r.instances_on_newest),
                r.generation,
                self.applied_since
                    .map(|t| format!(" since {}", crate::clock::clock(t)))
                    .unwrap_or_default()
            ),
            RolloutState::Overlap => {
                let left = r
                    .retiring_until
                    .map(|t| format!(", expires in {}", until(now, t)))
                    .unwrap_or_default();
                match r.instances_on_older {
                    0 => format!(
                        "overlap: every instance on generation {}; the old secret still works{left}",
                        r.generation
                    ),
                    n => format!("overlap: {} on the old secret{left}", instances(n)),
                }
            }
            RolloutState::Waiting => match (r.instances_on_newest, r.instances_on_older) {
                (0, 0) => format!(
                    "waiting: no instance has connected with generation {}",
                    r.generation
                ),
                (0, n) => format!("waiting: {} still on an older generation", instances(n)),
                (k, n) => format!(
                    "waiting: {} on generation {}, {} on an older one",
                    instances(k),
                    r.generation,
                    instances(n)
                ),
            },
        }
    }
}

/// "59 min", "3 h 5 min", "2 d 4 h": how long until `t`.
fn until(now: OffsetDateTime, t: OffsetDateTime) -> String {
    let secs = (t - now).whole_seconds().max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{} min", m.max(1)),
        (0, h) => format!("{h} h {m} min"),
        (d, h) => format!("{d} d {h} h"),
    }
}
