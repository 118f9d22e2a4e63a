//! Runs, their tasks and logs in SQLite. Every state change of a run happens in one write
//! transaction, so a task's final update, the run's new state and the tasks it cancels are never
//! seen half-done; how a run ends is the domain's rule ([`RunEnd`]).

use async_trait::async_trait;
use sqlx::{Sqlite, Transaction};
use tether_domain::{RunEnd, RunId, RunState, RunnerId};

use super::{backend, insert_audit, SqliteStore};
use crate::rows::{self, AssignedRow, RunRow, TaskRow, ASSIGNED_SELECT, RUN_COLUMNS, TASKS_SELECT};
use crate::{
    to_ms, AssignedTask, CancelOutcome, LogPage, NewAuditEvent, NewRun, RunFilter, RunRecord,
    RunStore, RunTaskRecord, StoreResult,
};

impl SqliteStore {
    /// Loads runs' tasks and assembles the records, keeping the order of `rows`.
    async fn runs_with_tasks(&self, rows: Vec<RunRow>) -> StoreResult<Vec<RunRecord>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let tasks = load_tasks(&self.reader, &row.id).await?;
            out.push(row.into_record(tasks)?);
        }
        Ok(out)
    }

    pub(super) async fn run_in_tx(
        tx: &mut Transaction<'_, Sqlite>,
        id: &str,
    ) -> StoreResult<RunRecord> {
        let row: RunRow = sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .map_err(backend)?;
        let tasks = load_tasks(&mut **tx, id).await?;
        row.into_record(tasks)
    }
}

/// A run's tasks in execution order.
async fn load_tasks<'c, E>(exec: E, run_id: &str) -> StoreResult<Vec<RunTaskRecord>>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let rows: Vec<TaskRow> = sqlx::query_as(TASKS_SELECT)
        .bind(run_id)
        .fetch_all(exec)
        .await
        .map_err(backend)?;
    rows.into_iter().map(RunTaskRecord::try_from).collect()
}

/// Ends a run as `end` says and cancels its tasks that never started.
pub(super) async fn finish_run(
    tx: &mut Transaction<'_, Sqlite>,
    run_id: &str,
    end: &RunEnd,
    at_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE runs SET state = ?, reason = ?, finished_at = ?, started_at = COALESCE(started_at, ?)
         WHERE id = ?",
    )
    .bind(end.state.as_str())
    .bind(&end.reason)
    .bind(at_ms)
    .bind(at_ms)
    .bind(run_id)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    sqlx::query(
        "UPDATE run_tasks SET state = 'cancelled', reason = ?, finished_at = ?
         WHERE run_id = ? AND state = 'queued'",
    )
    .bind(&end.not_run)
    .bind(at_ms)
    .bind(run_id)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Ends every queued or running run of a runner as `end` says, running tasks included (the
/// runner was deleted).
pub(crate) async fn end_active_runs(
    tx: &mut Transaction<'_, Sqlite>,
    runner: RunnerId,
    end: &RunEnd,
    at_ms: i64,
) -> StoreResult<()> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE runner_id = ? AND state IN ('queued', 'running')",
    )
    .bind(runner.to_string())
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?;
    for run_id in ids {
        sqlx::query(
            "UPDATE run_tasks SET state = 'cancelled', reason = ?, finished_at = ?
             WHERE run_id = ? AND state = 'running'",
        )
        .bind(&end.reason)
        .bind(at_ms)
        .bind(&run_id)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
        finish_run(tx, &run_id, end, at_ms).await?;
    }
    Ok(())
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: NewRun, audit: NewAuditEvent) -> StoreResult<RunRecord> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let runner: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runners WHERE id = ?)")
            .bind(run.runner_id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if !runner {
            return Err(crate::StoreError::NotFound);
        }
        let run_id = run.id.to_string();
        sqlx::query(
            "INSERT INTO runs (id, pipeline, runner_id, runner_name, state, created_at, created_by)
             VALUES (?, ?, ?, ?, 'queued', ?, ?)",
        )
        .bind(&run_id)
        .bind(run.pipeline.as_str())
        .bind(run.runner_id.to_string())
        .bind(run.runner_name.as_str())
        .bind(to_ms(run.created_at))
        .bind(&run.created_by)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        for (idx, (task_id, t)) in run.tasks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO run_tasks (id, run_id, idx, name, command, env, timeout_seconds, state)
                 VALUES (?, ?, ?, ?, ?, ?, ?, 'queued')",
            )
            .bind(task_id.to_string())
            .bind(&run_id)
            .bind(idx as i64)
            .bind(t.name.as_str())
            .bind(&t.run)
            .bind(rows::env_to_json(&t.env))
            .bind(t.timeout_seconds.map(|s| s as i64))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        insert_audit(&mut *tx, &audit).await?;
        let record = Self::run_in_tx(&mut tx, &run_id).await?;
        tx.commit().await.map_err(backend)?;
        Ok(record)
    }

    async fn run_by_id(&self, run: RunId) -> StoreResult<Option<RunRecord>> {
        let row: Option<RunRow> =
            sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
                .bind(run.to_string())
                .fetch_optional(&self.reader)
                .await
                .map_err(backend)?;
        Ok(self.runs_with_tasks(row.into_iter().collect()).await?.pop())
    }

    async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE (?1 IS NULL OR runner_id = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4"
        ))
        .bind(filter.runner_id.map(|r| r.to_string()))
        .bind(filter.state.map(RunState::as_str))
        .bind(filter.before.map(|r| r.to_string()))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        self.runs_with_tasks(rows).await
    }

    async fn run_log(&self, run: RunId, offset: u64, limit: u64) -> StoreResult<LogPage> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let end = offset.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX));
        let chunks: Vec<(i64, String)> = sqlx::query_as(
            "SELECT start, chunk FROM run_logs WHERE run_id = ? AND start + bytes > ? AND start < ? ORDER BY start",
        )
        .bind(run.to_string())
        .bind(offset)
        .bind(end)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        // Read after the chunks: a log only grows, so the length covers every byte returned.
        let total: Option<i64> = sqlx::query_scalar("SELECT log_bytes FROM runs WHERE id = ?")
            .bind(run.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        Ok(LogPage {
            text: rows::assemble_log(offset, limit, chunks),
            total_bytes: total.and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
        })
    }

    async fn cancel_run(&self, run: RunId, audit: NewAuditEvent) -> StoreResult<CancelOutcome> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let run_id = run.to_string();
        let current = Self::run_in_tx(&mut tx, &run_id).await?;
        if current.state.is_final() {
            return Ok(CancelOutcome::AlreadyFinished(current.state));
        }
        let at = to_ms(audit.at);
        let by = audit.actor.clone();
        sqlx::query(
            "UPDATE runs SET cancel_requested_by = COALESCE(cancel_requested_by, ?) WHERE id = ?",
        )
        .bind(&by)
        .bind(&run_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let running: Vec<AssignedRow> =
            sqlx::query_as(&format!("{ASSIGNED_SELECT} AND t.run_id = ?"))
                .bind(&run_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let running = running
            .into_iter()
            .map(AssignedTask::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        if running.is_empty() {
            finish_run(&mut tx, &run_id, &RunEnd::cancelled_by(&by), at).await?;
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(CancelOutcome::Requested { running })
    }
}
