//! `GET /ui/events`: runner status changes as server-sent events, so the Runners list and a
//! runner's pages update without a reload. On connect, one event per runner with its status now
//! (so nothing is missed between loading the page and connecting, or across a reconnect); then one
//! per change. The stream ends when the session expires or the server shuts down.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, Stream, StreamExt};
use serde_json::json;
use tether_domain::Role;
use tokio::sync::broadcast::error::RecvError;

use super::session::Visitor;
use super::WebError;
use crate::services::runners;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/ui/events", get(stream_events))
}

fn runner_event(name: &str, status: &str, reason: &str) -> Event {
    Event::default()
        .event("runner")
        .data(json!({"name": name, "status": status, "status_reason": reason}).to_string())
}

async fn stream_events(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    visitor.caller.require(Role::Viewer)?;
    // Subscribe before reading the snapshot: a change in between is sent twice, never lost.
    let rx = state.link.subscribe();
    let records = runners::list(&state, None, 1000).await?;
    let snapshot: Vec<_> = runners::live_all(&state, records)
        .await?
        .into_iter()
        .map(|live| {
            let status = live.status;
            Ok(runner_event(
                live.record.name.as_str(),
                status.status.as_str(),
                &status.reason,
            ))
        })
        .collect();
    let left = (visitor.expires_at - time::OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + left;
    let changes = stream::unfold(
        (rx, state.stopping.clone()),
        move |(mut rx, mut stopping)| async move {
            loop {
                let got = tokio::select! {
                    got = rx.recv() => got,
                    _ = stopping.wait_for(|s| *s) => return None,
                    () = tokio::time::sleep_until(deadline) => return None,
                };
                match got {
                    Ok(ev) => {
                        let event = runner_event(&ev.name, ev.status.as_str(), &ev.reason);
                        return Some((Ok(event), (rx, stopping)));
                    }
                    // Fell behind: later events still arrive; a reload shows the rest.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream::iter(snapshot).chain(changes)).keep_alive(KeepAlive::default()))
}
