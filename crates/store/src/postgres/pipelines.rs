//! Pipelines and the audit log in PostgreSQL. Pipelines are replaced whole by one upsert; audit
//! events are appended only (a trigger refuses UPDATE, DELETE and TRUNCATE).

use async_trait::async_trait;
use tether_domain::PipelineName;

use super::{backend, insert_audit, limit, PostgresStore};
use crate::rows::{tasks_to_json, AuditRow, PipelineRow, AUDIT_SELECT, PIPELINE_COLUMNS};
use crate::{
    to_ms, AuditFilter, AuditRecord, AuditStore, NewAuditEvent, PipelineRecord, PipelineStore,
    StoreResult,
};

#[async_trait]
impl PipelineStore for PostgresStore {
    async fn put_pipeline(
        &self,
        p: PipelineRecord,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRecord> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row: PipelineRow = sqlx::query_as(&format!(
            "INSERT INTO pipelines (name, tasks, created_at, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET tasks = excluded.tasks, updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by
             RETURNING {PIPELINE_COLUMNS}"
        ))
        .bind(p.name.as_str())
        .bind(tasks_to_json(&p.tasks))
        .bind(to_ms(p.created_at))
        .bind(to_ms(p.updated_at))
        .bind(&p.updated_by)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        row.try_into()
    }

    async fn list_pipelines(&self) -> StoreResult<Vec<PipelineRecord>> {
        let rows: Vec<PipelineRow> = sqlx::query_as(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(PipelineRecord::try_from).collect()
    }

    async fn pipeline_by_name(&self, name: &PipelineName) -> StoreResult<Option<PipelineRecord>> {
        let row: Option<PipelineRow> = sqlx::query_as(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE name = $1"
        ))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(PipelineRecord::try_from).transpose()
    }

    async fn delete_pipeline(
        &self,
        name: &PipelineName,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let deleted = sqlx::query("DELETE FROM pipelines WHERE name = $1")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<()> {
        insert_audit(&self.pool, &event).await
    }

    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(AUDIT_SELECT)
            .bind(&filter.runner)
            .bind(filter.before_id)
            .bind(limit(filter.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }
}
