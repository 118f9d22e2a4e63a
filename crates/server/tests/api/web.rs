//! The web UI over plain HTTP against the real server: login and sessions, CSRF, roles (what a
//! viewer sees and may post), the credential refresh flow of the guide (refresh, notice, reveal,
//! apply), pause/resume/restart, create runner, users, and live status over server-sent events.
//! docs/UI.md is the contract these check.

pub(crate) mod browser;
mod credentials;
pub(crate) mod events;
mod pages;
mod sessions;
