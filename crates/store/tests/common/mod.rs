//! Helpers shared by the store's test binaries: records to write and audit events to write them
//! with.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use serde_json::json;
use tether_domain::{
    ClientId, Description, Pepper, PipelineName, Platform, Role, RunId, RunState, RunnerId,
    RunnerName, TaskId, UserId, Username,
};
use tether_store::{NewAuditEvent, NewRun, NewRunner, NewUser, RunRecord, Store, TaskProgress};
use time::OffsetDateTime;

pub fn ev(action: &str, runner: Option<(RunnerId, &str)>) -> NewAuditEvent {
    NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: "user:test".into(),
        action: action.into(),
        runner_id: runner.map(|r| r.0),
        runner_name: runner.map(|r| r.1.to_owned()),
        target: None,
        source_ip: Some("127.0.0.1".into()),
        detail: json!({"k": 1}),
    }
}

/// `ms` milliseconds after the epoch.
pub fn ms(ms: i64) -> OffsetDateTime {
    tether_store::from_ms(ms)
}

pub fn new_runner(name: &str) -> NewRunner {
    NewRunner {
        id: RunnerId::new(),
        name: RunnerName::parse(name).expect("name"),
        description: Description::parse("d").expect("description"),
        platform: Platform::Gke,
        client_id: ClientId::generate(),
        verifier: Pepper::from_bytes([1; 32]).verifier(name),
        created_at: OffsetDateTime::now_utc(),
        created_by: "user:test".into(),
    }
}

pub fn tasks(names: &[&str]) -> Vec<tether_domain::TaskSpec> {
    let env = std::collections::BTreeMap::new();
    let raw: Vec<tether_domain::pipeline::RawTask<'_>> = names
        .iter()
        .map(|n| tether_domain::pipeline::RawTask {
            name: n,
            run: "true",
            env: &env,
            timeout_seconds: None,
        })
        .collect();
    tether_domain::pipeline::parse_tasks(&raw).expect("tasks")
}

pub async fn queued_run(store: &Arc<dyn Store>, runner: &NewRunner, names: &[&str]) -> RunRecord {
    let run = NewRun {
        id: RunId::new(),
        pipeline: PipelineName::parse("p").expect("name"),
        runner_id: runner.id,
        runner_name: runner.name.clone(),
        tasks: tasks(names)
            .into_iter()
            .map(|t| (TaskId::new(), t))
            .collect(),
        created_at: OffsetDateTime::now_utc(),
        created_by: "user:test".into(),
    };
    store
        .create_run(run, ev("run.created", None))
        .await
        .expect("run")
}

/// What apply_task_update keeps of a run's log in these tests (far above what they write).
pub const LOG_LIMIT: u64 = 1024 * 1024;

/// An update of `task` from `instance`.
pub fn progress(
    task: TaskId,
    instance: &str,
    seq: u64,
    state: RunState,
    log: Option<&str>,
) -> TaskProgress {
    TaskProgress {
        task_id: task,
        instance_id: instance.to_owned(),
        seq,
        state,
        log_chunk: log.map(str::to_owned),
        exit_code: state.is_final().then_some(0),
        reason: None,
        at: OffsetDateTime::now_utc(),
    }
}

pub fn generation_of(
    pepper_input: &str,
    runner: RunnerId,
    mode: tether_store::RotationMode,
) -> tether_store::NewGeneration {
    let now = OffsetDateTime::now_utc();
    tether_store::NewGeneration {
        runner_id: runner,
        verifier: Pepper::from_bytes([1; 32]).verifier(pepper_input),
        sealed_secret: pepper_input.as_bytes().to_vec(),
        reveal_until: now + time::Duration::minutes(15),
        mode,
        at: now,
        created_by: "user:alice".into(),
    }
}

pub fn person(name: &str, role: Role) -> NewUser {
    NewUser {
        id: UserId::new(),
        username: Username::parse(name).expect("name"),
        password_hash: format!("$argon2id$fake-{name}"),
        role,
        created_at: OffsetDateTime::now_utc(),
    }
}
