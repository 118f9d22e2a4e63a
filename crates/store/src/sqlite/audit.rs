//! The audit log in SQLite: appended only (triggers refuse UPDATE and DELETE), read newest first.

use super::{backend, insert_audit, SqliteStore};
use crate::rows::{AuditRow, AUDIT_SELECT};
use crate::{AuditFilter, AuditRecord, AuditStore, NewAuditEvent, StoreResult};
use async_trait::async_trait;

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<()> {
        insert_audit(&self.writer, &event).await
    }

    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(AUDIT_SELECT)
            .bind(&filter.runner)
            .bind(filter.before_id)
            .bind(filter.limit)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }
}
