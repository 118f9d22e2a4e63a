//! The task queue in PostgreSQL. A claim locks its run `FOR UPDATE SKIP LOCKED` and then updates
//! the task only if it is still queued: of two replicas claiming one task, one wins and the other
//! returns at once with `false`, never waiting behind it. Updates from runners, requeues and lost
//! tasks lock the run row first too (see [`super::runs::lock_run`]).

use async_trait::async_trait;
use tether_domain::{RunEnd, RunState, RunnerId, TaskEnd, TaskId};
use time::OffsetDateTime;

use super::runs::{finish_run, lock_run, run_in_tx};
use super::{backend, limit, PostgresStore};
use crate::rows::{self, AssignedRow, ReadyRow, UpdateTargetRow, ASSIGNED_SELECT, READY_SELECT};
use crate::task_update::{self, Judgement};
use crate::{
    to_ms, AssignedTask, ReadyTask, RunRecord, StoreResult, TaskProgress, TaskQueue, UpdateOutcome,
};

/// The run a task belongs to (`None`: no such task).
async fn run_of<'c, E>(exec: E, task: &str) -> StoreResult<Option<String>>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    sqlx::query_scalar("SELECT run_id FROM run_tasks WHERE id = $1")
        .bind(task)
        .fetch_optional(exec)
        .await
        .map_err(backend)
}

/// The ready tasks of runner `$1` as `rows::READY_WHERE` defines them (its run's first queued
/// task, none running; oldest run first; at most `$2`), in a form PostgreSQL's planner walks run
/// by run and stops at the limit: the first unfinished task of each active run, by index, through
/// `LATERAL`, instead of joining every queued task of the runner and sorting (which made each
/// dispatch pass cost as much as the whole queue).
const READY_LATERAL: &str =
    "SELECT t.id, t.run_id, r.pipeline, t.name, t.command, t.env, t.timeout_seconds
     FROM runs r
     CROSS JOIN LATERAL (SELECT q.id, q.run_id, q.name, q.command, q.env, q.timeout_seconds, q.state
                         FROM run_tasks q
                         WHERE q.run_id = r.id AND q.state IN ('queued', 'running')
                         ORDER BY q.idx LIMIT 1) t
     WHERE r.runner_id = $1 AND r.state IN ('queued', 'running') AND r.cancel_requested_by IS NULL
       AND t.state = 'queued'
       AND NOT EXISTS (SELECT 1 FROM run_tasks b WHERE b.run_id = r.id AND b.state = 'running')
     ORDER BY r.id LIMIT $2";

#[async_trait]
impl TaskQueue for PostgresStore {
    async fn runners_with_active_runs(&self) -> StoreResult<Vec<RunnerId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT runner_id FROM runs WHERE state IN ('queued', 'running')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        ids.iter()
            .map(|id| rows::parse("runs.runner_id", id))
            .collect()
    }

    async fn ready_tasks(&self, runner: RunnerId, n: u32) -> StoreResult<Vec<ReadyTask>> {
        let rows: Vec<ReadyRow> = sqlx::query_as(READY_LATERAL)
            .bind(runner.to_string())
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.into_iter().map(ReadyTask::try_from).collect()
    }

    async fn task_assignment(&self, task: TaskId) -> StoreResult<Option<ReadyTask>> {
        let row: Option<ReadyRow> = sqlx::query_as(&format!("{READY_SELECT} WHERE t.id = $1"))
            .bind(task.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(ReadyTask::try_from).transpose()
    }

    async fn assigned_tasks(&self, runner: Option<RunnerId>) -> StoreResult<Vec<AssignedTask>> {
        let rows: Vec<AssignedRow> = sqlx::query_as(&format!(
            "{ASSIGNED_SELECT} AND ($1::text IS NULL OR r.runner_id = $1) ORDER BY t.assigned_at"
        ))
        .bind(runner.map(|r| r.to_string()))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(AssignedTask::try_from).collect()
    }

    async fn claim_task(
        &self,
        task: TaskId,
        instance_id: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let task = task.to_string();
        let at_ms = to_ms(at);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let run: Option<String> = sqlx::query_scalar(
            "SELECT r.id FROM runs r
             WHERE r.id = (SELECT run_id FROM run_tasks WHERE id = $1)
               AND r.state IN ('queued', 'running') AND r.cancel_requested_by IS NULL
             FOR UPDATE SKIP LOCKED",
        )
        .bind(&task)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(run) = run else {
            return Ok(false);
        };
        let claimed = sqlx::query(
            "UPDATE run_tasks SET state = 'running', instance_id = $1, assigned_at = $2
             WHERE id = $3 AND state = 'queued'",
        )
        .bind(instance_id)
        .bind(at_ms)
        .bind(&task)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if claimed {
            sqlx::query(
                "UPDATE runs SET state = 'running', reason = NULL, started_at = COALESCE(started_at, $1)
                 WHERE id = $2",
            )
            .bind(at_ms)
            .bind(&run)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(claimed)
    }

    async fn requeue_task(&self, task: TaskId, instance_id: &str) -> StoreResult<bool> {
        let task = task.to_string();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(run) = run_of(&mut *tx, &task).await? else {
            return Ok(false);
        };
        lock_run(&mut tx, &run).await?;
        let n = sqlx::query(
            "UPDATE run_tasks SET state = 'queued', instance_id = NULL, assigned_at = NULL
             WHERE id = $1 AND state = 'running' AND instance_id = $2 AND last_seq = 0",
        )
        .bind(&task)
        .bind(instance_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        tx.commit().await.map_err(backend)?;
        Ok(n == 1)
    }

    async fn apply_task_update(
        &self,
        runner: RunnerId,
        u: TaskProgress,
        max_log_bytes: u64,
    ) -> StoreResult<UpdateOutcome> {
        let task_id = u.task_id.to_string();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(run) = run_of(&mut *tx, &task_id).await? else {
            return Ok(UpdateOutcome::UnknownTask);
        };
        lock_run(&mut tx, &run).await?;
        // Read after the lock: the latest committed last_seq and log offset.
        let row: Option<UpdateTargetRow> = sqlx::query_as(
            "SELECT t.run_id, t.name, t.state, t.instance_id, t.last_seq, r.cancel_requested_by, r.log_bytes
             FROM run_tasks t JOIN runs r ON r.id = t.run_id WHERE t.id = $1 AND r.runner_id = $2",
        )
        .bind(&task_id)
        .bind(runner.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(backend)?;
            return Ok(UpdateOutcome::UnknownTask);
        };
        let (seq, log, log_truncated) = match task_update::judge(&row, &u, max_log_bytes)? {
            Judgement::Refuse(outcome) => {
                // At once, not when the connection is next used: a claim skips a locked run.
                tx.rollback().await.map_err(backend)?;
                return Ok(outcome);
            }
            Judgement::Apply {
                seq,
                log,
                log_truncated,
            } => (seq, log, log_truncated),
        };
        let UpdateTargetRow {
            run_id,
            name,
            cancel_requested_by: cancel_by,
            log_bytes,
            ..
        } = row;
        let at = to_ms(u.at);
        if let Some(chunk) = log.as_deref() {
            let bytes = chunk.len() as i64;
            sqlx::query(
                "INSERT INTO run_logs (run_id, start, bytes, task_id, seq, chunk) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&run_id)
            .bind(log_bytes)
            .bind(bytes)
            .bind(&task_id)
            .bind(seq)
            .bind(chunk)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            sqlx::query("UPDATE runs SET log_bytes = log_bytes + $1 WHERE id = $2")
                .bind(bytes)
                .bind(&run_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let task_final = u.state.is_final();
        let new_state = if task_final {
            u.state
        } else {
            RunState::Running
        };
        sqlx::query(
            "UPDATE run_tasks SET last_seq = $1, state = $2, started_at = COALESCE(started_at, $3),
                 exit_code = COALESCE($4, exit_code), reason = COALESCE($5, reason),
                 finished_at = CASE WHEN $6 THEN $3 ELSE finished_at END
             WHERE id = $7",
        )
        .bind(seq)
        .bind(new_state.as_str())
        .bind(at)
        .bind(u.exit_code)
        .bind(&u.reason)
        .bind(task_final)
        .bind(&task_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let mut run_final = None;
        if task_final {
            let more: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM run_tasks WHERE run_id = $1 AND state = 'queued')",
            )
            .bind(&run_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
            let task_end = TaskEnd {
                task: &name,
                state: u.state,
                exit_code: u.exit_code,
                reason: u.reason.as_deref(),
            };
            if let Some(end) = RunEnd::after_task(&task_end, cancel_by.as_deref(), more) {
                finish_run(&mut tx, &run_id, &end, at).await?;
                run_final = Some(end.state);
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(UpdateOutcome::Applied {
            task_final,
            run_final,
            log_truncated,
        })
    }

    async fn end_task(
        &self,
        task: TaskId,
        state: RunState,
        reason: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Option<RunRecord>> {
        let task = task.to_string();
        let at_ms = to_ms(at);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(run) = run_of(&mut *tx, &task).await? else {
            return Ok(None);
        };
        lock_run(&mut tx, &run).await?;
        let name: Option<String> = sqlx::query_scalar(
            "SELECT name FROM run_tasks WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(&task)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(name) = name else {
            return Ok(None);
        };
        sqlx::query("UPDATE run_tasks SET state = $1, reason = $2, finished_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(reason)
            .bind(at_ms)
            .bind(&task)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let end = RunEnd::task_ended_by_control_plane(&name, state, reason);
        finish_run(&mut tx, &run, &end, at_ms).await?;
        let record = run_in_tx(&mut tx, &run).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(record))
    }
}
