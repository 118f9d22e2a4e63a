//! The Credentials tab and the refresh flow of the guide: Refresh opens a dialog (a page without
//! JavaScript) that says what will happen, lists the pipelines running now and wants the word
//! `refresh` typed; then a notice, Reveal (the only page that ever shows a secret) and "Apply the
//! new credentials" for the runner's platform.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tether_domain::{CredentialState, RefreshMode, Role, RunState, REFRESH_CONFIRMATION};

use super::apply::{self, ApplyGuide};
use super::runners::{load, reload_text, Loaded, RunnerHead};
use super::session::{PostForm, Visitor};
use super::{hh_mm, page, see_other, when, Chrome, WebError};
use crate::http::extract::QueryParams;
use crate::services::credentials::{self, Mode};
use crate::services::runners::parse_ref;
use crate::services::{runs, ServiceError};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runners/{name}/credentials", get(show_credentials))
        .route(
            "/runners/{name}/credentials/refresh",
            get(show_refresh).post(refresh_credentials),
        )
        .route(
            "/runners/{name}/credentials/reveal",
            post(reveal_credentials),
        )
        .route(
            "/runners/{name}/credentials/revoke-previous",
            get(show_revoke_previous).post(revoke_previous_credentials),
        )
}

/// The grace periods the dialog offers; the domain's default (24 hours) is preselected.
const GRACE_CHOICES: [u64; 3] = [3600, 86_400, 604_800];
const DEFAULT_GRACE: u64 = RefreshMode::DEFAULT_GRACE.as_secs();

#[derive(Debug)]
pub struct RunningRun {
    pub id: String,
    pub pipeline: String,
    pub started: String,
}

/// What the refresh dialog (and its no-JavaScript page) shows.
#[derive(Debug)]
pub struct RefreshForm {
    pub runs: Vec<RunningRun>,
    pub error: Option<String>,
    pub overlap: bool,
    pub grace: u64,
}

async fn refresh_form(state: &AppState, l: &Loaded) -> Result<RefreshForm, WebError> {
    let running = runs::list_for_runner(
        state,
        &tether_domain::RunnerRef::from(l.record.id),
        Some(RunState::Running),
        100,
    )
    .await?;
    Ok(RefreshForm {
        runs: running
            .into_iter()
            .map(|r| RunningRun {
                id: r.id.to_string(),
                pipeline: r.pipeline,
                started: r.started_at.map(when).unwrap_or_default(),
            })
            .collect(),
        error: None,
        overlap: false,
        grace: DEFAULT_GRACE,
    })
}

#[derive(Debug)]
struct GenerationRow {
    generation: u32,
    state: &'static str,
    created: String,
    by: String,
    /// "until 12:04" (retiring), "revoked 2026-… by user:alice", or nothing (active).
    works_until: String,
    last_used: String,
    sessions: usize,
}

#[derive(Debug)]
struct InstanceSecretRow {
    instance_id: String,
    generation: u32,
    reload: &'static str,
}

#[derive(Template)]
#[template(path = "runner_credentials.html")]
struct CredentialsPage {
    chrome: Chrome,
    runner: RunnerHead,
    refreshed: bool,
    notice: Option<String>,
    client_id: String,
    last_refreshed: String,
    reveal_until: Option<String>,
    generations: Vec<GenerationRow>,
    has_retiring: bool,
    instances: Vec<InstanceSecretRow>,
    refresh: RefreshForm,
    apply: Option<ApplyGuide>,
}

fn apply_guide(state: &AppState, l: &Loaded) -> ApplyGuide {
    apply::guide(l, &state.public_url)
}

/// What the notice after revoke-previous says: built from numbers in the query, never its text.
fn revoked_notice(query: &QueryParams) -> Option<String> {
    if query.get("done") != Some("revoked-previous") {
        return None;
    }
    let gens: Vec<u32> = query
        .get("gens")
        .unwrap_or_default()
        .split(',')
        .filter_map(|g| g.parse().ok())
        .take(8)
        .collect();
    let closed: usize = query
        .get("closed")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let done = credentials::RevokedPrevious::describe(
        &gens
            .into_iter()
            .map(tether_domain::Generation)
            .collect::<Vec<_>>(),
        closed,
    );
    Some(match done {
        Some(d) => format!("{}{}.", d[..1].to_uppercase(), &d[1..]),
        None => "Nothing to revoke: no older secret is still accepted.".to_owned(),
    })
}

async fn show_credentials(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    query: QueryParams,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Viewer)?;
    let record = crate::services::runners::find(&state, &parse_ref(&name)?).await?;
    let o = credentials::overview(&state, record).await?;
    let refreshed = query.get("refreshed") == Some("1");
    let last = o.last_refresh();
    let generations: Vec<GenerationRow> = o
        .generations
        .iter()
        .map(|g| GenerationRow {
            generation: g.generation.0,
            state: g.state.as_str(),
            created: when(g.created_at),
            by: g.created_by.clone(),
            works_until: match g.state {
                CredentialState::Active => String::new(),
                CredentialState::Retiring => g.expires_at.map(when).unwrap_or_default(),
                CredentialState::Revoked => match (&g.revoked_at, &g.revoked_by) {
                    (Some(at), Some(by)) => format!("revoked {} by {by}", when(*at)),
                    (Some(at), None) => format!("revoked {}", when(*at)),
                    _ => "revoked".to_owned(),
                },
            },
            last_used: g.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            sessions: o.sessions_on(g.generation),
        })
        .collect();
    let show_apply = last.is_some();
    let l = &o.live;
    let body = CredentialsPage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(l, "credentials"),
        refreshed,
        notice: revoked_notice(&query),
        client_id: l.record.client_id.as_str().to_owned(),
        last_refreshed: last.map_or_else(
            || "never".to_owned(),
            |g| format!("{} by {}", when(g.created_at), g.created_by),
        ),
        reveal_until: o.reveal_until.map(hh_mm),
        has_retiring: generations.iter().any(|g| g.state == "retiring"),
        generations,
        instances: l
            .instances
            .iter()
            .map(|i| InstanceSecretRow {
                instance_id: i.instance_id.clone(),
                generation: i.credential_generation.0,
                reload: reload_text(i),
            })
            .collect(),
        // Only operators get the dialog; nobody else needs the runs it lists.
        refresh: if visitor.caller.role.allows(Role::Operator) {
            refresh_form(&state, l).await?
        } else {
            RefreshForm {
                runs: Vec::new(),
                error: None,
                overlap: false,
                grace: DEFAULT_GRACE,
            }
        },
        apply: show_apply.then(|| apply_guide(&state, l)),
    };
    page(StatusCode::OK, &body)
}

#[derive(Template)]
#[template(path = "refresh.html")]
struct RefreshPage {
    chrome: Chrome,
    runner: RunnerHead,
    refresh: RefreshForm,
}

async fn show_refresh(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Operator)?;
    let l = load(&state, &name).await?;
    let body = RefreshPage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&l, "credentials"),
        refresh: refresh_form(&state, &l).await?,
    };
    page(StatusCode::OK, &body)
}

async fn refresh_credentials(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    let caller = &post.visitor.caller;
    caller.require(Role::Operator)?;
    let overlap = post.form.get("mode") == "overlap";
    let grace = post
        .form
        .get("grace_seconds")
        .parse::<u64>()
        .ok()
        .filter(|g| GRACE_CHOICES.contains(g))
        .unwrap_or(DEFAULT_GRACE);
    // Shows the dialog's page again, with what was chosen, the runs and why nothing happened.
    let again = |status: StatusCode, error: String| {
        let state = state.clone();
        let name = name.clone();
        let visitor = post.visitor.clone();
        async move {
            let l = load(&state, &name).await?;
            let mut refresh = refresh_form(&state, &l).await?;
            refresh.error = Some(error);
            refresh.overlap = overlap;
            refresh.grace = grace;
            let body = RefreshPage {
                chrome: Chrome::new(&visitor, "runners"),
                runner: RunnerHead::new(&l, "credentials"),
                refresh,
            };
            page(status, &body)
        }
    };
    if post.form.get("confirm") != REFRESH_CONFIRMATION {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Type the word refresh to confirm. Nothing was changed.".to_owned(),
        )
        .await;
    }
    // The domain's rule, as the API applies it (the dialog offers only grace periods it accepts).
    let mode = Mode::parse(
        Some(if overlap { "overlap" } else { "revoke" }),
        overlap.then_some(grace),
    )
    .map_err(|(_, detail)| WebError::Invalid(detail))?;
    let force = post.form.checked("force");
    match credentials::refresh(&state, caller, &parse_ref(&name)?, mode, force, None).await {
        Ok(outcome) => Ok(see_other(&format!(
            "/runners/{}/credentials?refreshed=1",
            outcome.runner.name
        ))),
        Err(ServiceError::RunsInProgress { runs, .. }) => {
            again(
                StatusCode::CONFLICT,
                format!(
                    "{} pipeline run(s) are running on this runner; a revoking refresh would \
                     disconnect it mid-run. Nothing was changed. Wait for them to finish, tick \
                     \"Zero-downtime rotation\" (nothing is disconnected), or tick \"Refresh anyway\".",
                    runs.len()
                ),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "reveal.html")]
struct RevealPage {
    chrome: Chrome,
    runner: RunnerHead,
    client_id: String,
    secret: String,
    generation: u32,
    until: String,
    apply: Option<ApplyGuide>,
}

async fn reveal_credentials(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    let (record, secret, generation, until) =
        credentials::reveal(&state, &post.visitor.caller, &parse_ref(&name)?).await?;
    let l = load(&state, record.id.to_string().as_str()).await?;
    let body = RevealPage {
        chrome: Chrome::new(&post.visitor, "runners"),
        runner: RunnerHead::new(&l, "credentials"),
        client_id: record.client_id.as_str().to_owned(),
        secret: secret.expose().to_owned(),
        generation: generation.0,
        until: hh_mm(until),
        apply: Some(apply_guide(&state, &l)),
    };
    page(StatusCode::OK, &body)
}

#[derive(Debug)]
struct RetiringRow {
    generation: u32,
    until: String,
    sessions: usize,
}

#[derive(Template)]
#[template(path = "revoke_previous.html")]
struct RevokePreviousPage {
    chrome: Chrome,
    runner: RunnerHead,
    retiring: Vec<RetiringRow>,
}

/// Asks before ending an overlap: which secret stops working and which instances it disconnects.
async fn show_revoke_previous(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Operator)?;
    let record = crate::services::runners::find(&state, &parse_ref(&name)?).await?;
    let o = credentials::overview(&state, record).await?;
    let body = RevokePreviousPage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&o.live, "credentials"),
        retiring: o
            .generations
            .iter()
            .filter(|g| g.state == CredentialState::Retiring)
            .map(|g| RetiringRow {
                generation: g.generation.0,
                until: g.expires_at.map(when).unwrap_or_default(),
                sessions: o.sessions_on(g.generation),
            })
            .collect(),
    };
    page(StatusCode::OK, &body)
}

async fn revoke_previous_credentials(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    let done = credentials::revoke_previous(&state, &post.visitor.caller, &parse_ref(&name)?, None)
        .await?;
    let gens: Vec<String> = done.revoked.iter().map(|g| g.to_string()).collect();
    Ok(see_other(&format!(
        "/runners/{}/credentials?done=revoked-previous&gens={}&closed={}",
        done.runner.name,
        gens.join(","),
        done.sessions_closed
    )))
}
