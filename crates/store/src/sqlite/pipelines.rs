//! Pipelines in SQLite: named task lists, stored as JSON, replaced whole.

use async_trait::async_trait;
use tether_domain::PipelineName;

use super::{backend, insert_audit, SqliteStore};
use crate::rows::{tasks_to_json, PipelineRow, PIPELINE_COLUMNS};
use crate::{to_ms, NewAuditEvent, PipelineRecord, PipelineStore, StoreResult};

#[async_trait]
impl PipelineStore for SqliteStore {
    async fn put_pipeline(
        &self,
        p: PipelineRecord,
        audit: NewAuditEvent,
    ) -> StoreResult<PipelineRecord> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO pipelines (name, tasks, created_at, updated_at, updated_by) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET tasks = excluded.tasks, updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by",
        )
        .bind(p.name.as_str())
        .bind(tasks_to_json(&p.tasks))
        .bind(to_ms(p.created_at))
        .bind(to_ms(p.updated_at))
        .bind(&p.updated_by)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, &audit).await?;
        let row: PipelineRow = sqlx::query_as(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE name = ?"
        ))
        .bind(p.name.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        row.try_into()
    }

    async fn list_pipelines(&self) -> StoreResult<Vec<PipelineRecord>> {
        let rows: Vec<PipelineRow> = sqlx::query_as(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines ORDER BY name"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.into_iter().map(PipelineRecord::try_from).collect()
    }

    async fn pipeline_by_name(&self, name: &PipelineName) -> StoreResult<Option<PipelineRecord>> {
        let row: Option<PipelineRow> = sqlx::query_as(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE name = ?"
        ))
        .bind(name.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.map(PipelineRecord::try_from).transpose()
    }

    async fn delete_pipeline(
        &self,
        name: &PipelineName,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let deleted = sqlx::query("DELETE FROM pipelines WHERE name = ?")
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
