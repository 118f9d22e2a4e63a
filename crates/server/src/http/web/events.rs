//! `GET /ui/events`: runner status changes as server-sent events, so the Runners list and a
//! runner's pages update without a reload. On connect, one event per runner with its status now
//! (so nothing is missed between loading the page and connecting, or across a reconnect); then one
//! per change. The stream ends when the server shuts down, and when its session ends or changes:
//! at its expiry, and within `web_session_recheck` (5 s) of a logout, a password reset, the
//! user's deletion or a role change, on whichever replica that happened (each stream re-reads
//! its session from the store).

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
    let mut recheck = tokio::time::interval(state.config.web_session_recheck);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.reset();
    let changes = stream::unfold(
        (rx, state.stopping.clone(), recheck, state, visitor),
        move |(mut rx, mut stopping, mut recheck, state, visitor)| async move {
            loop {
                let got = tokio::select! {
                    got = rx.recv() => Some(got),
                    _ = stopping.wait_for(|s| *s) => return None,
                    () = tokio::time::sleep_until(deadline) => return None,
                    _ = recheck.tick() => None,
                };
                let Some(got) = got else {
                    if visitor.still_current(&state).await {
                        continue;
                    }
                    return None;
                };
                match got {
                    Ok(ev) => {
                        let event = runner_event(&ev.name, ev.status.as_str(), &ev.reason);
                        return Some((Ok(event), (rx, stopping, recheck, state, visitor)));
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
