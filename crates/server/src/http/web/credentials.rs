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
use tether_domain::{Role, RunState};

use super::apply::{self, ApplyGuide};
use super::runners::{load, Loaded, RunnerHead};
use super::session::{PostForm, Visitor};
use super::{hh_mm, page, see_other, when, Chrome, WebError};
use crate::http::extract::QueryParams;
use crate::services::credentials::{self, Mode};
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
            post(revoke_previous_credentials),
        )
}

/// The word that confirms a refresh (as in the API and the guide).
const REFRESH_CONFIRMATION: &str = "refresh";
/// The grace periods the dialog offers; 24 hours is preselected.
const GRACE_CHOICES: [u64; 3] = [3600, 86_400, 604_800];
const DEFAULT_GRACE: u64 = 86_400;

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
        &l.record.id.to_string(),
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
    expires: String,
    last_used: String,
    sessions: usize,
}

#[derive(Template)]
#[template(path = "runner_credentials.html")]
struct CredentialsPage {
    chrome: Chrome,
    runner: RunnerHead,
    refreshed: bool,
    notice: Option<&'static str>,
    client_id: String,
    last_refreshed: String,
    reveal_until: Option<String>,
    generations: Vec<GenerationRow>,
    has_retiring: bool,
    refresh: RefreshForm,
    apply: Option<ApplyGuide>,
}

fn apply_guide(state: &AppState, l: &Loaded) -> ApplyGuide {
    apply::guide(
        l.record.platform,
        l.record.name.as_str(),
        l.record.client_id.as_str(),
        &state.public_url,
    )
}

async fn show_credentials(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    query: QueryParams,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Viewer)?;
    let l = load(&state, &name).await?;
    let client = state
        .store
        .client_by_id(&l.record.client_id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no runner named '{name}'")))?;
    let now = tether_store::to_ms(time::OffsetDateTime::now_utc());
    let reveal_until = state
        .store
        .sealed_secret(l.record.id, now)
        .await?
        .map(|s| hh_mm(tether_store::from_ms(s.reveal_until_ms)));
    let refreshed = query.get("refreshed") == Some("1");
    let last = client.generations.first().filter(|g| g.generation.0 > 1);
    let generations: Vec<GenerationRow> = client
        .generations
        .iter()
        .map(|g| GenerationRow {
            generation: g.generation.0,
            state: g.state.as_str(),
            created: when(g.created_at),
            by: g.created_by.clone(),
            expires: g.expires_at.map(when).unwrap_or_default(),
            last_used: g.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            sessions: l
                .instances
                .iter()
                .filter(|i| i.credential_generation == g.generation.0)
                .count(),
        })
        .collect();
    let show_apply = last.is_some() && (refreshed || reveal_until.is_some());
    let body = CredentialsPage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&l, "credentials"),
        refreshed,
        notice: (query.get("done") == Some("revoked-previous")).then_some(
            "The previous secret was revoked; instances still using it were disconnected.",
        ),
        client_id: l.record.client_id.as_str().to_owned(),
        last_refreshed: last.map_or_else(
            || "never".to_owned(),
            |g| format!("{} by {}", when(g.created_at), g.created_by),
        ),
        reveal_until,
        has_retiring: generations.iter().any(|g| g.state == "retiring"),
        generations,
        // Only operators get the dialog; nobody else needs the runs it lists.
        refresh: if visitor.caller.role.allows(Role::Operator) {
            refresh_form(&state, &l).await?
        } else {
            RefreshForm {
                runs: Vec::new(),
                error: None,
                overlap: false,
                grace: DEFAULT_GRACE,
            }
        },
        apply: show_apply.then(|| apply_guide(&state, &l)),
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
    let mode = if overlap {
        Mode::Overlap {
            grace: std::time::Duration::from_secs(grace),
        }
    } else {
        Mode::Revoke
    };
    let force = post.form.checked("force");
    match credentials::refresh(&state, caller, &name, mode, force, None).await {
        Ok(outcome) => Ok(see_other(&format!(
            "/runners/{}/credentials?refreshed=1",
            outcome.runner.name
        ))),
        Err(ServiceError::RunsInProgress { runs, .. }) => {
            again(
                StatusCode::CONFLICT,
                format!(
                    "{} pipeline run(s) are running on this runner; refreshing would disconnect it \
                     mid-run. Nothing was changed. Wait for them to finish, or tick \"Refresh \
                     anyway\".",
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
        credentials::reveal(&state, &post.visitor.caller, &name).await?;
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

async fn revoke_previous_credentials(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    let record = credentials::revoke_previous(&state, &post.visitor.caller, &name, None).await?;
    Ok(see_other(&format!(
        "/runners/{}/credentials?done=revoked-previous",
        record.name
    )))
}
