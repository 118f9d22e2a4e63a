//! Create runner: a name and a platform; the answer shows the client credentials once, with the
//! deployment snippet for that platform.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tether_domain::{Description, Platform, Role, RunnerName};

use super::deploy::{self, DeployStep, DeployVars};
use super::session::{PostForm, Visitor};
use super::{page, platform_label, Chrome, WebError};
use crate::services::runners::{self, NewRunnerInput};
use crate::services::ServiceError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/runners/new", get(show_new_runner).post(create_runner))
}

#[derive(Debug)]
struct PlatformOption {
    value: &'static str,
    label: String,
    selected: bool,
}

fn platform_options(selected: &str) -> Vec<PlatformOption> {
    let detail = |p: Platform| match p {
        Platform::AwsFargate => "AWS (ECS Fargate)".to_owned(),
        Platform::AzureContainerApp => "Azure (Container Apps)".to_owned(),
        Platform::Gke => "Google Cloud (GKE, Helm)".to_owned(),
        Platform::Snowflake => "Snowflake (Snowpark Container Services)".to_owned(),
        Platform::Local => platform_label(p).to_owned(),
    };
    Platform::ALL
        .into_iter()
        .map(|p| PlatformOption {
            value: p.as_str(),
            label: detail(p),
            selected: p.as_str() == selected,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "runner_new.html")]
struct NewRunnerPage {
    chrome: Chrome,
    name: String,
    description: String,
    platforms: Vec<PlatformOption>,
    error: Option<String>,
}

async fn show_new_runner(visitor: Visitor) -> Result<Response, WebError> {
    visitor.caller.require(Role::Operator)?;
    let body = NewRunnerPage {
        chrome: Chrome::new(&visitor, "runners"),
        name: String::new(),
        description: String::new(),
        platforms: platform_options(Platform::AwsFargate.as_str()),
        error: None,
    };
    page(StatusCode::OK, &body)
}

#[derive(Template)]
#[template(path = "runner_created.html")]
struct CreatedPage {
    chrome: Chrome,
    name: String,
    platform: &'static str,
    client_id: String,
    client_secret: String,
    steps: Vec<DeployStep>,
}

async fn create_runner(
    State(state): State<AppState>,
    post: PostForm,
) -> Result<Response, WebError> {
    let caller = &post.visitor.caller;
    caller.require(Role::Operator)?;
    let form = &post.form;
    let again = |status: StatusCode, error: String| {
        let body = NewRunnerPage {
            chrome: Chrome::new(&post.visitor, "runners"),
            name: form.get("name").to_owned(),
            description: form.get("description").to_owned(),
            platforms: platform_options(form.get("platform")),
            error: Some(error),
        };
        page(status, &body)
    };
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    let name = match RunnerName::parse(form.get("name").trim()) {
        // `/runners/new` is this page, so a runner of that name could not be shown.
        Ok(n) if n.as_str() == "new" => {
            return again(invalid, "Name: \"new\" is reserved; choose another.".into())
        }
        Ok(n) => n,
        Err(e) => return again(invalid, format!("Name {e}.")),
    };
    let platform = match Platform::parse(form.get("platform")) {
        Ok(p) => p,
        Err(e) => return again(invalid, format!("Platform {e}.")),
    };
    let description = match Description::parse(form.get("description").trim()) {
        Ok(d) => d,
        Err(e) => return again(invalid, format!("Description {e}.")),
    };
    let input = NewRunnerInput {
        name,
        platform,
        description,
    };
    let (record, secret) = match runners::create(&state, caller, input).await {
        Ok(created) => created,
        Err(ServiceError::Conflict { detail, .. }) => {
            return again(StatusCode::CONFLICT, format!("{detail}."))
        }
        Err(e) => return Err(e.into()),
    };
    let steps = deploy::steps(
        record.platform,
        &DeployVars {
            runner: record.name.as_str(),
            client_id: record.client_id.as_str(),
            client_secret: secret.expose(),
            url: &state.public_url,
        },
    );
    let body = CreatedPage {
        chrome: Chrome::new(&post.visitor, "runners"),
        name: record.name.as_str().to_owned(),
        platform: platform_label(record.platform),
        client_id: record.client_id.as_str().to_owned(),
        client_secret: secret.expose().to_owned(),
        steps,
    };
    page(StatusCode::CREATED, &body)
}
