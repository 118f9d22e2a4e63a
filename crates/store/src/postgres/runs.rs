//! Runs, their tasks and logs in PostgreSQL. Every change to a run or its tasks first locks the
//! run row ([`lock_run`]), so a task's final update, a cancel and a lost task serialise per run
//! (the run ends once) whichever replicas they come from.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};
use tether_domain::{RunEnd, RunId, RunState, RunnerId};

use super::{backend, insert_audit, limit, PostgresStore};
use crate::rows::{self, AssignedRow, RunRow, TaskRow, ASSIGNED_SELECT, RUN_COLUMNS, TASKS_SELECT};
use crate::{
    to_ms, AssignedTask, CancelOutcome, LogPage, NewAuditEvent, NewRun, RunFilter, RunRecord,
    RunStore, RunTaskRecord, StoreError, StoreResult,
};

/// Locks a run row and returns it (`None`: no such run).
pub(super) async fn lock_run(
    tx: &mut Transaction<'_, Postgres>,
    run_id: &str,
) -> StoreResult<Option<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE"
    ))
    .bind(run_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(backend)
}

/// A run's tasks in execution order.
async fn load_tasks<'c, E>(exec: E, run_id: &str) -> StoreResult<Vec<RunTaskRecord>>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let rows: Vec<TaskRow> = sqlx::query_as(TASKS_SELECT)
        .bind(run_id)
        .fetch_all(exec)
        .await
        .map_err(backend)?;
    rows.into_iter().map(RunTaskRecord::try_from).collect()
}

impl PostgresStore {
    /// Loads runs' tasks and assembles the records, keeping the order of `rows`.
    async fn runs_with_tasks(&self, rows: Vec<RunRow>) -> StoreResult<Vec<RunRecord>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let tasks = load_tasks(&self.pool, &row.id).await?;
            out.push(row.into_record(tasks)?);
        }
        Ok(out)
    }
}

/// The run as this transaction sees it, with its tasks.
pub(super) async fn run_in_tx(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
) -> StoreResult<RunRecord> {
    let row: RunRow = sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(backend)?;
    let tasks = load_tasks(&mut **tx, id).await?;
    row.into_record(tasks)
}

/// Ends a run as `end` says and cancels its tasks that never started. The caller holds the run's
/// lock.
pub(super) async fn finish_run(
    tx: &mut Transaction<'_, Postgres>,
    run_id: &str,
    end: &RunEnd,
    at_ms: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE runs SET state = $1, reason = $2, finished_at = $3, started_at = COALESCE(started_at, $3)
         WHERE id = $4",
    )
    .bind(end.state.as_str())
    .bind(&end.reason)
    .bind(at_ms)
    .bind(run_id)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    sqlx::query(
        "UPDATE run_tasks SET state = 'cancelled', reason = $1, finished_at = $2
         WHERE run_id = $3 AND state = 'queued'",
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
/// runner was deleted). Locks those runs in id order.
pub(super) async fn end_active_runs(
    tx: &mut Transaction<'_, Postgres>,
    runner: RunnerId,
    end: &RunEnd,
    at_ms: i64,
) -> StoreResult<()> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE runner_id = $1 AND state IN ('queued', 'running')
         ORDER BY id FOR UPDATE",
    )
    .bind(runner.to_string())
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?;
    for run_id in ids {
        sqlx::query(
            "UPDATE run_tasks SET state = 'cancelled', reason = $1, finished_at = $2
             WHERE run_id = $3 AND state = 'running'",
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
impl RunStore for PostgresStore {
    async fn create_run(&self, run: NewRun, audit: NewAuditEvent) -> StoreResult<RunRecord> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // A delete of the runner waits for this lock, then ends the run; or it came first.
        sqlx::query_scalar::<_, String>("SELECT id FROM runners WHERE id = $1 FOR SHARE")
            .bind(run.runner_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound)?;
        let run_id = run.id.to_string();
        sqlx::query(
            "INSERT INTO runs (id, pipeline, runner_id, runner_name, state, created_at, created_by)
             VALUES ($1, $2, $3, $4, 'queued', $5, $6)",
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued')",
            )
            .bind(task_id.to_string())
            .bind(&run_id)
            .bind(idx as i64)
            .bind(t.name.as_str())
            .bind(&t.run)
            .bind(rows::env_to_json(&t.env))
            .bind(t.timeout_seconds.and_then(|s| i64::try_from(s).ok()))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        insert_audit(&mut *tx, &audit).await?;
        let record = run_in_tx(&mut tx, &run_id).await?;
        tx.commit().await.map_err(backend)?;
        Ok(record)
    }

    async fn run_by_id(&self, run: RunId) -> StoreResult<Option<RunRecord>> {
        let row: Option<RunRow> =
            sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
                .bind(run.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(self.runs_with_tasks(row.into_iter().collect()).await?.pop())
    }

    async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE ($1::text IS NULL OR runner_id = $1) AND ($2::text IS NULL OR state = $2)
               AND ($3::text IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(filter.runner_id.map(|r| r.to_string()))
        .bind(filter.state.map(RunState::as_str))
        .bind(filter.before.map(|r| r.to_string()))
        .bind(limit(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        self.runs_with_tasks(rows).await
    }

    async fn run_log(&self, run: RunId, offset: u64, limit: u64) -> StoreResult<LogPage> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let end = offset.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX));
        let chunks: Vec<(i64, String)> = sqlx::query_as(
            "SELECT start, chunk FROM run_logs WHERE run_id = $1 AND start + bytes > $2 AND start < $3 ORDER BY start",
        )
        .bind(run.to_string())
        .bind(offset)
        .bind(end)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        // Read after the chunks: a log only grows, so the length covers every byte returned.
        let total: Option<i64> = sqlx::query_scalar("SELECT log_bytes FROM runs WHERE id = $1")
            .bind(run.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(LogPage {
            text: rows::assemble_log(offset, limit, chunks),
            total_bytes: total.and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
        })
    }

    async fn cancel_run(&self, run: RunId, audit: NewAuditEvent) -> StoreResult<CancelOutcome> {
        let run_id = run.to_string();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let current = lock_run(&mut tx, &run_id)
            .await?
            .ok_or(StoreError::NotFound)?
            .state()?;
        if current.is_final() {
            return Ok(CancelOutcome::AlreadyFinished(current));
        }
        let by = audit.actor.clone();
        sqlx::query(
            "UPDATE runs SET cancel_requested_by = COALESCE(cancel_requested_by, $1) WHERE id = $2",
        )
        .bind(&by)
        .bind(&run_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let running: Vec<AssignedRow> =
            sqlx::query_as(&format!("{ASSIGNED_SELECT} AND t.run_id = $1"))
                .bind(&run_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        let running = running
            .into_iter()
            .map(AssignedTask::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        if running.is_empty() {
            finish_run(
                &mut tx,
                &run_id,
                &RunEnd::cancelled_by(&by),
                to_ms(audit.at),
            )
            .await?;
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(CancelOutcome::Requested { running })
    }
}
