//! The audit log in SQLite: appended only (triggers refuse UPDATE and DELETE), read newest first.

use async_trait::async_trait;
use sqlx::Row;

use super::{backend, insert_audit, SqliteStore};
use crate::{from_ms, AuditFilter, AuditRecord, AuditStore, NewAuditEvent, StoreResult};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<()> {
        insert_audit(&self.writer, &event).await
    }

    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, runner_id, runner_name, target, source_ip, detail
             FROM audit_events
             WHERE (?1 IS NULL OR runner_id = ?1 OR runner_name = ?1)
               AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(&filter.runner)
        .bind(filter.before_id)
        .bind(filter.limit)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail").map_err(backend)?;
                Ok(AuditRecord {
                    id: row.try_get("id").map_err(backend)?,
                    at: from_ms(row.try_get("at").map_err(backend)?),
                    actor: row.try_get("actor").map_err(backend)?,
                    action: row.try_get("action").map_err(backend)?,
                    runner_id: row.try_get("runner_id").map_err(backend)?,
                    runner_name: row.try_get("runner_name").map_err(backend)?,
                    target: row.try_get("target").map_err(backend)?,
                    source_ip: row.try_get("source_ip").map_err(backend)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }
}
