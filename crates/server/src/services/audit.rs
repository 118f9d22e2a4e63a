//! Building audit events, and reading the audit log. Actors are `user:<name>`,
//! `client:<client_id>` or `system`.

use tether_domain::{Role, RunnerId};
use tether_store::{AuditFilter, AuditRecord, NewAuditEvent};
use time::OffsetDateTime;

use super::auth::Caller;
use super::{ServiceError, StoreContext as _};
use crate::state::AppState;

/// Audit events newest first, as `filter` selects them (viewers may read the log).
pub async fn list(
    state: &AppState,
    caller: &Caller,
    filter: AuditFilter,
) -> Result<Vec<AuditRecord>, ServiceError> {
    caller.require(Role::Viewer)?;
    state.store.list_audit(filter).await.op("list_audit")
}

pub fn event(actor: impl Into<String>, action: &str) -> NewAuditEvent {
    NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: actor.into(),
        action: action.to_owned(),
        runner_id: None,
        runner_name: None,
        target: None,
        source_ip: None,
        detail: serde_json::json!({}),
    }
}

pub trait AuditEventExt {
    fn runner(self, id: RunnerId, name: &str) -> Self;
    fn target(self, target: impl Into<String>) -> Self;
    fn source_ip(self, ip: Option<String>) -> Self;
    fn detail(self, detail: serde_json::Value) -> Self;
}

impl AuditEventExt for NewAuditEvent {
    fn runner(mut self, id: RunnerId, name: &str) -> Self {
        self.runner_id = Some(id);
        self.runner_name = Some(name.to_owned());
        self
    }

    fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    fn source_ip(mut self, ip: Option<String>) -> Self {
        self.source_ip = ip;
        self
    }

    fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}
