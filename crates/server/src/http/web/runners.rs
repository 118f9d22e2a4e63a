//! The Runners list and a runner's pages: the Details, Instances and Activity tabs. The operator
//! actions of the `...` menu are in `actions`.

use crate::runner_link::Instance;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tether_domain::Role;
use tether_store::AuditFilter;

use super::session::Visitor;
use super::{ago, page, platform_label, when, Chrome, WebError};
use crate::http::extract::QueryParams;
use crate::services::runners;
use crate::services::runners::parse_ref;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runners", get(list_runners))
        .route("/runners/{name}", get(show_runner))
        .route("/runners/{name}/instances", get(show_instances))
        .route("/runners/{name}/activity", get(show_activity))
}

/// A runner with its status as this server sees it (the services' read model).
pub type Loaded = runners::LiveRunner;

pub async fn load(state: &AppState, key: &str) -> Result<Loaded, WebError> {
    let record = runners::find(state, &runners::parse_ref(key)?).await?;
    Ok(runners::live(state, record).await?)
}

/// The header every runner page shows: name, live status and reason, and what the menu offers.
#[derive(Debug)]
pub struct RunnerHead {
    pub name: String,
    pub status: &'static str,
    pub reason: String,
    pub paused: bool,
    /// Which tab is showing: `details`, `credentials`, `instances` or `activity`.
    pub tab: &'static str,
}

impl RunnerHead {
    pub fn new(l: &Loaded, tab: &'static str) -> Self {
        Self {
            name: l.record.name.as_str().to_owned(),
            status: l.status.status.as_str(),
            reason: l.status.reason.clone(),
            paused: l.record.paused_by.is_some(),
            tab,
        }
    }
}

#[derive(Debug)]
struct RunnerRow {
    name: String,
    status: &'static str,
    reason: String,
    platform: &'static str,
    version: String,
    last_seen: String,
    last_seen_at: String,
    paused: bool,
    /// The credential rollout, when it says something (after a refresh).
    rollout: String,
    rollout_state: &'static str,
}

#[derive(Template)]
#[template(path = "runners.html")]
struct RunnersPage {
    chrome: Chrome,
    runners: Vec<RunnerRow>,
    notice: Option<&'static str>,
}

/// What a finished action says; only fixed texts, never something from the query string.
pub fn notice(query: &QueryParams) -> Option<&'static str> {
    match query.get("done")? {
        "paused" => Some("Runner paused: no new work is assigned to it; running pipelines finish."),
        "resumed" => Some("Runner resumed: it takes new work again."),
        "restarted" => Some("Restart requested: its instances finish their tasks and exit, and your platform starts them again."),
        "revoked-previous" => Some("The previous secret was revoked; instances still using it were disconnected."),
        "deleted" => Some("Runner deleted: its credentials stopped working and its instances were disconnected."),
        _ => None,
    }
}

async fn list_runners(
    State(state): State<AppState>,
    visitor: Visitor,
    query: QueryParams,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Viewer)?;
    let records = runners::list(&state, None, 500).await?;
    let now = time::OffsetDateTime::now_utc();
    let runners = runners::live_all(&state, records)
        .await?
        .into_iter()
        .map(|l| {
            let refreshed = l.record.generation.0 > 1;
            RunnerRow {
                rollout: if refreshed {
                    l.rollout_summary(now)
                } else {
                    String::new()
                },
                rollout_state: l.rollout.state.as_str(),
                name: l.record.name.as_str().to_owned(),
                status: l.status.status.as_str(),
                reason: l.status.reason.clone(),
                platform: platform_label(l.record.platform),
                version: l.status.runner_version.clone().unwrap_or_default(),
                last_seen: l.status.last_seen_at.map_or_else(|| "never".into(), ago),
                last_seen_at: l.status.last_seen_at.map(when).unwrap_or_default(),
                paused: l.record.paused_by.is_some(),
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &RunnersPage {
            chrome: Chrome::new(&visitor, "runners"),
            runners,
            notice: notice(&query),
        },
    )
}

#[derive(Debug)]
pub struct InstanceRow {
    pub instance_id: String,
    pub hostname: String,
    pub connected: String,
    pub last_heartbeat: String,
    pub generation: u32,
    pub older_generation: bool,
    pub running_tasks: u32,
    /// How it picks up a new secret: "reloads by itself" or "needs a restart with the new value".
    pub reload: &'static str,
    /// Where it reads the secret, for people ("file /run/secrets/x", "AWS Secrets Manager").
    pub source: String,
}

/// How an instance picks up a new secret, as the Instances and Credentials tabs say it.
pub fn reload_text(i: &Instance) -> &'static str {
    match i.hot_reload {
        Some(true) => "reloads by itself",
        Some(false) => "needs a restart with the new value",
        None => "unknown (the runner did not say)",
    }
}

fn source_text(i: &Instance) -> String {
    match (i.secret_source.as_deref(), &i.secret_file) {
        (Some("file"), Some(f)) => format!("file {f}"),
        (Some("file"), None) => "file".into(),
        (Some("aws_secrets_manager"), _) => "AWS Secrets Manager".into(),
        (Some("env"), _) => "OAUTH_CLIENT_SECRET".into(),
        _ => "–".into(),
    }
}

pub fn instance_rows(l: &Loaded) -> Vec<InstanceRow> {
    l.instances
        .iter()
        .map(|i| InstanceRow {
            instance_id: i.instance_id.clone(),
            hostname: i.hostname.clone(),
            connected: when(i.connected_at),
            last_heartbeat: ago(i.last_heartbeat_at),
            generation: i.credential_generation.0,
            older_generation: i.credential_generation < l.record.generation,
            running_tasks: i.running_tasks,
            reload: reload_text(i),
            source: source_text(i),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "runner_details.html")]
struct DetailsPage {
    chrome: Chrome,
    runner: RunnerHead,
    notice: Option<&'static str>,
    platform: &'static str,
    version: String,
    since: String,
    paused_by: Option<String>,
    paused_until: Option<String>,
    client_id: String,
    generation: u32,
    auth: String,
    description: String,
    created: String,
    instances: Vec<InstanceRow>,
}

async fn show_runner(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    query: QueryParams,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Viewer)?;
    let l = load(&state, &name).await?;
    let r = &l.record;
    let body = DetailsPage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&l, "details"),
        notice: notice(&query),
        platform: platform_label(r.platform),
        version: l.status.runner_version.clone().unwrap_or_default(),
        since: when(l.status.since),
        paused_by: r.paused_by.clone(),
        paused_until: r.paused_until.map(when),
        client_id: r.client_id.as_str().to_owned(),
        generation: r.generation.0,
        auth: state.health.view(r.id).summary,
        description: r.description.as_str().to_owned(),
        created: format!("{} by {}", when(r.created_at), r.created_by),
        instances: instance_rows(&l),
    };
    page(StatusCode::OK, &body)
}

#[derive(Template)]
#[template(path = "runner_instances.html")]
struct InstancesPage {
    chrome: Chrome,
    runner: RunnerHead,
    generation: u32,
    instances: Vec<InstanceRow>,
}

async fn show_instances(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Viewer)?;
    let l = load(&state, &name).await?;
    let body = InstancesPage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&l, "instances"),
        generation: l.record.generation.0,
        instances: instance_rows(&l),
    };
    page(StatusCode::OK, &body)
}

#[derive(Debug)]
struct RunRow {
    id: String,
    pipeline: String,
    state: &'static str,
    reason: String,
    created: String,
    by: String,
}

#[derive(Debug)]
struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "runner_activity.html")]
struct ActivityPage {
    chrome: Chrome,
    runner: RunnerHead,
    runs: Vec<RunRow>,
    events: Vec<AuditRow>,
}

async fn show_activity(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Viewer)?;
    let l = load(&state, &name).await?;
    let id = l.record.id.to_string();
    let runs = crate::services::runs::list_for_runner(&state, &parse_ref(&id)?, None, 20).await?;
    let filter = AuditFilter {
        runner: Some(id),
        before_id: None,
        limit: 50,
    };
    let events = crate::services::audit::list(&state, &visitor.caller, filter).await?;
    let body = ActivityPage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&l, "activity"),
        runs: runs
            .into_iter()
            .map(|r| RunRow {
                id: r.id.to_string(),
                pipeline: r.pipeline,
                state: r.state.as_str(),
                reason: r.reason.unwrap_or_default(),
                created: when(r.created_at),
                by: r.created_by,
            })
            .collect(),
        events: events
            .into_iter()
            .map(|e| AuditRow {
                at: when(e.at),
                actor: e.actor,
                action: e.action,
                target: e.target.unwrap_or_default(),
                detail: match &e.detail {
                    serde_json::Value::Object(m) if m.is_empty() => String::new(),
                    d => d.to_string(),
                },
            })
            .collect(),
    };
    page(StatusCode::OK, &body)
}
