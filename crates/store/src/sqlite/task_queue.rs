//! The task queue in SQLite: which tasks are ready for a runner, claiming one for an instance,
//! and the updates instances send back. A claim is one conditional update, so a task is never
//! handed to two instances.

use async_trait::async_trait;
use tether_domain::{RunEnd, RunState, RunnerId, TaskEnd, TaskId};
use time::OffsetDateTime;

use super::runs::finish_run;
use super::{backend, SqliteStore};
use crate::rows::{
    self, AssignedRow, ReadyRow, UpdateTargetRow, ASSIGNED_SELECT, READY_SELECT, READY_WHERE,
};
use crate::task_update::{self, Judgement};
use crate::{
    to_ms, AssignedTask, ReadyTask, RunRecord, StoreResult, TaskProgress, TaskQueue, UpdateOutcome,
};

#[async_trait]
impl TaskQueue for SqliteStore {
    async fn runners_with_active_runs(&self) -> StoreResult<Vec<RunnerId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT runner_id FROM runs WHERE state IN ('queued', 'running')",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        ids.iter()
            .map(|id| rows::parse("runs.runner_id", id))
            .collect()
    }

    async fn ready_tasks(&self, runner: RunnerId, limit: u32) -> StoreResult<Vec<ReadyTask>> {
        let rows: Vec<ReadyRow> = sqlx::query_as(&format!("{READY_SELECT} {READY_WHERE}"))
            .bind(runner.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.into_iter().map(ReadyTask::try_from).collect()
    }

    async fn task_assignment(&self, task: TaskId) -> StoreResult<Option<ReadyTask>> {
        let row: Option<ReadyRow> = sqlx::query_as(&format!("{READY_SELECT} WHERE t.id = $1"))
            .bind(task.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.map(ReadyTask::try_from).transpose()
    }

    async fn assigned_tasks(&self, runner: Option<RunnerId>) -> StoreResult<Vec<AssignedTask>> {
        let rows: Vec<AssignedRow> = sqlx::query_as(&format!(
            "{ASSIGNED_SELECT} AND ($1 IS NULL OR r.runner_id = $1) ORDER BY t.assigned_at"
        ))
        .bind(runner.map(|r| r.to_string()))
        .fetch_all(&self.reader)
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
        let at_ms = to_ms(at);
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let claimed = sqlx::query(
            "UPDATE run_tasks SET state = 'running', instance_id = ?, assigned_at = ?
             WHERE id = ? AND state = 'queued'
               AND run_id IN (SELECT id FROM runs WHERE state IN ('queued', 'running') AND cancel_requested_by IS NULL)",
        )
        .bind(instance_id)
        .bind(at_ms)
        .bind(task.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if claimed {
            sqlx::query(
                "UPDATE runs SET state = 'running', reason = NULL, started_at = COALESCE(started_at, ?)
                 WHERE id = (SELECT run_id FROM run_tasks WHERE id = ?)",
            )
            .bind(at_ms)
            .bind(task.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(claimed)
    }

    async fn requeue_task(&self, task: TaskId, instance_id: &str) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE run_tasks SET state = 'queued', instance_id = NULL, assigned_at = NULL
             WHERE id = ? AND state = 'running' AND instance_id = ? AND last_seq = 0",
        )
        .bind(task.to_string())
        .bind(instance_id)
        .execute(&self.writer)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn apply_task_update(
        &self,
        runner: RunnerId,
        u: TaskProgress,
        max_log_bytes: u64,
    ) -> StoreResult<UpdateOutcome> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let task_id = u.task_id.to_string();
        let row: Option<UpdateTargetRow> = sqlx::query_as(
            "SELECT t.run_id, t.name, t.state, t.instance_id, t.last_seq, r.cancel_requested_by, r.log_bytes
             FROM run_tasks t JOIN runs r ON r.id = t.run_id WHERE t.id = ? AND r.runner_id = ?",
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
                "INSERT INTO run_logs (run_id, start, bytes, task_id, seq, chunk) VALUES (?, ?, ?, ?, ?, ?)",
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
            sqlx::query("UPDATE runs SET log_bytes = log_bytes + ? WHERE id = ?")
                .bind(bytes)
                .bind(&run_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let task_final = u.state.is_final();
        sqlx::query(
            "UPDATE run_tasks SET last_seq = ?, state = ?, started_at = COALESCE(started_at, ?),
                 exit_code = COALESCE(?, exit_code), reason = COALESCE(?, reason),
                 finished_at = CASE WHEN ? THEN ? ELSE finished_at END
             WHERE id = ?",
        )
        .bind(seq)
        .bind(
            if task_final {
                u.state
            } else {
                RunState::Running
            }
            .as_str(),
        )
        .bind(at)
        .bind(u.exit_code)
        .bind(&u.reason)
        .bind(task_final)
        .bind(at)
        .bind(&task_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let mut run_final = None;
        if task_final {
            let more: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM run_tasks WHERE run_id = ? AND state = 'queued')",
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
        let at_ms = to_ms(at);
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT t.run_id, t.name FROM run_tasks t WHERE t.id = ? AND t.state IN ('queued', 'running')",
        )
        .bind(task.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some((run_id, name)) = row else {
            return Ok(None);
        };
        sqlx::query("UPDATE run_tasks SET state = ?, reason = ?, finished_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(reason)
            .bind(at_ms)
            .bind(task.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let end = RunEnd::task_ended_by_control_plane(&name, state, reason);
        finish_run(&mut tx, &run_id, &end, at_ms).await?;
        let run = Self::run_in_tx(&mut tx, &run_id).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(run))
    }
}
