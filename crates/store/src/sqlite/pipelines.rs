//! Pipelines in SQLite: named task lists, stored as JSON, replaced whole.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use tether_domain::pipeline::{parse_tasks, RawTask};
use tether_domain::{PipelineName, TaskSpec};

use super::{backend, corrupt, insert_audit, SqliteStore};
use crate::{from_ms, to_ms, NewAuditEvent, PipelineRecord, PipelineStore, StoreResult};

fn tasks_to_json(tasks: &[TaskSpec]) -> String {
    Value::Array(tasks.iter().map(task_to_json).collect()).to_string()
}

fn task_to_json(t: &TaskSpec) -> Value {
    json!({"name": t.name.as_str(), "run": t.run, "env": t.env, "timeout_seconds": t.timeout_seconds})
}

fn tasks_from_json(text: &str) -> StoreResult<Vec<TaskSpec>> {
    #[derive(serde::Deserialize)]
    struct Stored {
        name: String,
        run: String,
        #[serde(default)]
        env: BTreeMap<String, String>,
        timeout_seconds: Option<u64>,
    }
    let stored: Vec<Stored> =
        serde_json::from_str(text).map_err(|e| corrupt("pipelines.tasks", e))?;
    let raw: Vec<RawTask<'_>> = stored
        .iter()
        .map(|t| RawTask {
            name: &t.name,
            run: &t.run,
            env: &t.env,
            timeout_seconds: t.timeout_seconds,
        })
        .collect();
    parse_tasks(&raw).map_err(|e| corrupt("pipelines.tasks", format!("{}: {}", e.field, e.error)))
}

fn pipeline_from_row(row: &SqliteRow) -> StoreResult<PipelineRecord> {
    let name: String = row.try_get("name").map_err(backend)?;
    Ok(PipelineRecord {
        name: PipelineName::parse(&name).map_err(|e| corrupt("pipelines.name", e))?,
        tasks: tasks_from_json(&row.try_get::<String, _>("tasks").map_err(backend)?)?,
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        updated_at: from_ms(row.try_get("updated_at").map_err(backend)?),
        updated_by: row.try_get("updated_by").map_err(backend)?,
    })
}

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
        let row = sqlx::query("SELECT * FROM pipelines WHERE name = ?")
            .bind(p.name.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        pipeline_from_row(&row)
    }

    async fn list_pipelines(&self) -> StoreResult<Vec<PipelineRecord>> {
        let rows = sqlx::query("SELECT * FROM pipelines ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(pipeline_from_row).collect()
    }

    async fn pipeline_by_name(&self, name: &PipelineName) -> StoreResult<Option<PipelineRecord>> {
        let row = sqlx::query("SELECT * FROM pipelines WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(pipeline_from_row).transpose()
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
