//! What operators do to a runner from the `...` menu and the runner's header: pause (after typing
//! `pause runner`), resume, restart, and delete (after typing the runner's name).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tether_domain::Role;

use super::runners::{load, RunnerHead};
use super::session::{PostForm, Visitor};
use super::{page, see_other, Chrome, WebError};
use crate::services::runners;
use crate::services::runners::parse_ref;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runners/{name}/pause", get(show_pause).post(pause_runner))
        .route("/runners/{name}/resume", post(resume_runner))
        .route(
            "/runners/{name}/restart",
            get(show_restart).post(restart_runner),
        )
        .route(
            "/runners/{name}/delete",
            get(show_delete).post(delete_runner),
        )
}

/// The words that confirm a pause (as in the API).
const PAUSE_CONFIRMATION: &str = "pause runner";

#[derive(Template)]
#[template(path = "pause.html")]
struct PausePage {
    chrome: Chrome,
    runner: RunnerHead,
    error: bool,
}

async fn show_pause(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Operator)?;
    let l = load(&state, &name).await?;
    let body = PausePage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&l, "details"),
        error: false,
    };
    page(StatusCode::OK, &body)
}

/// Where an action returns to: the list when it came from the list's menu, else the runner.
fn back(post: &PostForm, name: &str, done: &str) -> Response {
    if post.form.get("back") == "list" {
        see_other(&format!("/runners?done={done}"))
    } else {
        see_other(&format!("/runners/{name}?done={done}"))
    }
}

async fn pause_runner(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    let caller = &post.visitor.caller;
    caller.require(Role::Operator)?;
    if post.form.get("confirm") != PAUSE_CONFIRMATION {
        let l = load(&state, &name).await?;
        let body = PausePage {
            chrome: Chrome::new(&post.visitor, "runners"),
            runner: RunnerHead::new(&l, "details"),
            error: true,
        };
        return page(StatusCode::UNPROCESSABLE_ENTITY, &body);
    }
    let record = runners::pause(&state, caller, &parse_ref(&name)?, None).await?;
    Ok(back(&post, record.name.as_str(), "paused"))
}

async fn resume_runner(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    let record = runners::resume(&state, &post.visitor.caller, &parse_ref(&name)?).await?;
    Ok(back(&post, record.name.as_str(), "resumed"))
}

#[derive(Template)]
#[template(path = "restart.html")]
struct RestartPage {
    chrome: Chrome,
    runner: RunnerHead,
    instances: usize,
    running_tasks: u32,
    back: &'static str,
}

fn restart_page(chrome: Chrome, l: &super::runners::Loaded, back: &'static str) -> RestartPage {
    RestartPage {
        chrome,
        runner: RunnerHead::new(l, "details"),
        instances: l.instances.len(),
        running_tasks: l.instances.iter().map(|i| i.running_tasks).sum(),
        back,
    }
}

/// Restart drains every instance: it is asked for first.
async fn show_restart(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    query: crate::http::extract::QueryParams,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Operator)?;
    let l = load(&state, &name).await?;
    let back = if query.get("back") == Some("list") {
        "list"
    } else {
        ""
    };
    page(
        StatusCode::OK,
        &restart_page(Chrome::new(&visitor, "runners"), &l, back),
    )
}

async fn restart_runner(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    post.visitor.caller.require(Role::Operator)?;
    if post.form.get("confirm") != "restart" {
        // Not from the confirmation page: ask first, change nothing.
        let l = load(&state, &name).await?;
        let back = if post.form.get("back") == "list" {
            "list"
        } else {
            ""
        };
        let body = restart_page(Chrome::new(&post.visitor, "runners"), &l, back);
        return page(StatusCode::OK, &body);
    }
    let (record, _) = runners::restart(&state, &post.visitor.caller, &parse_ref(&name)?).await?;
    Ok(back(&post, record.name.as_str(), "restarted"))
}

#[derive(Template)]
#[template(path = "delete.html")]
struct DeletePage {
    chrome: Chrome,
    runner: RunnerHead,
    error: bool,
}

async fn show_delete(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    visitor.caller.require(Role::Operator)?;
    let l = load(&state, &name).await?;
    let body = DeletePage {
        chrome: Chrome::new(&visitor, "runners"),
        runner: RunnerHead::new(&l, "details"),
        error: false,
    };
    page(StatusCode::OK, &body)
}

/// Deleting is for good: the runner's name must be typed to confirm.
async fn delete_runner(
    State(state): State<AppState>,
    Path(name): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    let caller = &post.visitor.caller;
    caller.require(Role::Operator)?;
    let l = load(&state, &name).await?;
    if post.form.get("confirm") != l.record.name.as_str() {
        let body = DeletePage {
            chrome: Chrome::new(&post.visitor, "runners"),
            runner: RunnerHead::new(&l, "details"),
            error: true,
        };
        return page(StatusCode::UNPROCESSABLE_ENTITY, &body);
    }
    runners::delete(&state, caller, &tether_domain::RunnerRef::from(l.record.id)).await?;
    Ok(see_other("/runners?done=deleted"))
}
