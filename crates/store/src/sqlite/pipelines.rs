//! Pipelines, runs, tasks and logs in SQLite. Every state change of a run happens in one write
//! transaction, so a task's final update, the run's new state and the tasks it cancels are
//! never seen half-done.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use tether_domain::pipeline::{parse_tasks, RawTask};
use tether_domain::{PipelineName, RunEnd, RunId, RunState, RunnerId, TaskEnd, TaskId, TaskSpec};
use time::OffsetDateTime;

use super::{backend, corrupt, insert_audit, SqliteStore};
use crate::{
    from_ms, to_ms, AssignedTask, CancelOutcome, NewAuditEvent, NewRun, PipelineRecord,
    PipelineStore, ReadyTask, RunFilter, RunRecord, RunTaskRecord, StoreResult, TaskProgress,
    UpdateOutcome,
};

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

fn state(row: &SqliteRow, col: &str) -> StoreResult<RunState> {
    let s: String = row.try_get(col).map_err(backend)?;
    RunState::parse(&s).map_err(|e| corrupt(col, e))
}

fn opt_time(row: &SqliteRow, col: &str) -> StoreResult<Option<time::OffsetDateTime>> {
    Ok(row
        .try_get::<Option<i64>, _>(col)
        .map_err(backend)?
        .map(from_ms))
}

fn id<T: std::str::FromStr>(row: &SqliteRow, col: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    let s: String = row.try_get(col).map_err(backend)?;
    s.parse().map_err(|e| corrupt(col, e))
}

const RUN_COLUMNS: &str =
    "id, pipeline, runner_id, runner_name, state, reason, created_at, created_by,
     started_at, finished_at, cancel_requested_by";

fn run_from_row(row: &SqliteRow, tasks: Vec<RunTaskRecord>) -> StoreResult<RunRecord> {
    Ok(RunRecord {
        id: id(row, "id")?,
        pipeline: row.try_get("pipeline").map_err(backend)?,
        runner_id: id(row, "runner_id")?,
        runner_name: row.try_get("runner_name").map_err(backend)?,
        state: state(row, "state")?,
        reason: row.try_get("reason").map_err(backend)?,
        created_at: from_ms(row.try_get("created_at").map_err(backend)?),
        created_by: row.try_get("created_by").map_err(backend)?,
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        cancel_requested_by: row.try_get("cancel_requested_by").map_err(backend)?,
        tasks,
    })
}

fn task_from_row(row: &SqliteRow) -> StoreResult<RunTaskRecord> {
    Ok(RunTaskRecord {
        id: id(row, "id")?,
        name: row.try_get("name").map_err(backend)?,
        state: state(row, "state")?,
        exit_code: row.try_get("exit_code").map_err(backend)?,
        reason: row.try_get("reason").map_err(backend)?,
        instance_id: row.try_get("instance_id").map_err(backend)?,
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
    })
}

fn assigned_from_row(row: &SqliteRow) -> StoreResult<AssignedTask> {
    Ok(AssignedTask {
        task_id: id(row, "id")?,
        run_id: id(row, "run_id")?,
        runner_id: id(row, "runner_id")?,
        instance_id: row
            .try_get::<Option<String>, _>("instance_id")
            .map_err(backend)?
            .unwrap_or_default(),
        assigned_at: from_ms(
            row.try_get::<Option<i64>, _>("assigned_at")
                .map_err(backend)?
                .unwrap_or(0),
        ),
        last_seq: row.try_get::<i64, _>("last_seq").map_err(backend)? as u64,
    })
}

const ASSIGNED_SELECT: &str =
    "SELECT t.id, t.run_id, r.runner_id, t.instance_id, t.assigned_at, t.last_seq
     FROM run_tasks t JOIN runs r ON r.id = t.run_id WHERE t.state = 'running'";

impl SqliteStore {
    /// Loads runs' tasks and assembles the records, keeping the order of `rows`.
    async fn runs_with_tasks(&self, rows: Vec<SqliteRow>) -> StoreResult<Vec<RunRecord>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let run_id: String = row.try_get("id").map_err(backend)?;
            let tasks = load_tasks(&self.reader, &run_id).await?;
            out.push(run_from_row(&row, tasks)?);
        }
        Ok(out)
    }

    async fn run_in_tx(tx: &mut Transaction<'_, Sqlite>, id: &str) -> StoreResult<RunRecord> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .map_err(backend)?;
        let tasks = load_tasks(&mut **tx, id).await?;
        run_from_row(&row, tasks)
    }
}

/// A run's tasks in execution order.
async fn load_tasks<'c, E>(exec: E, run_id: &str) -> StoreResult<Vec<RunTaskRecord>>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    sqlx::query(
        "SELECT id, name, state, exit_code, reason, instance_id, started_at, finished_at
         FROM run_tasks WHERE run_id = ? ORDER BY idx",
    )
    .bind(run_id)
    .fetch_all(exec)
    .await
    .map_err(backend)?
    .iter()
    .map(task_from_row)
    .collect()
}

/// Ends a run as `end` says and cancels its tasks that never started.
async fn finish_run(
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

    async fn create_run(&self, run: NewRun, audit: NewAuditEvent) -> StoreResult<RunRecord> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
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
            .bind(json!(t.env).to_string())
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
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(run.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        Ok(self.runs_with_tasks(row.into_iter().collect()).await?.pop())
    }

    async fn list_runs(&self, filter: RunFilter) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(&format!(
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

    async fn run_log(&self, run: RunId, offset: u64) -> StoreResult<String> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT start, chunk FROM run_logs WHERE run_id = ? AND start + bytes > ? ORDER BY start",
        )
        .bind(run.to_string())
        .bind(offset)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        let mut out = String::new();
        for row in rows {
            let start: i64 = row.try_get("start").map_err(backend)?;
            let chunk: String = row.try_get("chunk").map_err(backend)?;
            let skip = usize::try_from(offset.saturating_sub(start)).unwrap_or(0);
            // An offset inside a character (a client that counted wrongly) resumes at the next one.
            let from = (skip..=chunk.len())
                .find(|&i| chunk.is_char_boundary(i))
                .unwrap_or(chunk.len());
            out.push_str(&chunk[from..]);
        }
        Ok(out)
    }

    async fn runners_with_active_runs(&self) -> StoreResult<Vec<RunnerId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT runner_id FROM runs WHERE state IN ('queued', 'running')",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        ids.iter()
            .map(|id| id.parse().map_err(|e| corrupt("runs.runner_id", e)))
            .collect()
    }

    async fn ready_tasks(&self, runner: RunnerId, limit: u32) -> StoreResult<Vec<ReadyTask>> {
        let rows = sqlx::query(
            "SELECT t.id, t.run_id, r.pipeline, t.name, t.command, t.env, t.timeout_seconds
             FROM runs r JOIN run_tasks t ON t.run_id = r.id
             WHERE r.runner_id = ? AND r.state IN ('queued', 'running') AND r.cancel_requested_by IS NULL
               AND t.state = 'queued'
               AND t.idx = (SELECT MIN(q.idx) FROM run_tasks q WHERE q.run_id = r.id AND q.state = 'queued')
               AND NOT EXISTS (SELECT 1 FROM run_tasks b WHERE b.run_id = r.id AND b.state = 'running')
             ORDER BY r.id LIMIT ?",
        )
        .bind(runner.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(ready_from_row).collect()
    }

    async fn task_assignment(&self, task: TaskId) -> StoreResult<Option<ReadyTask>> {
        let row = sqlx::query(
            "SELECT t.id, t.run_id, r.pipeline, t.name, t.command, t.env, t.timeout_seconds
             FROM runs r JOIN run_tasks t ON t.run_id = r.id WHERE t.id = ?",
        )
        .bind(task.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.as_ref().map(ready_from_row).transpose()
    }

    async fn assigned_tasks(&self, runner: Option<RunnerId>) -> StoreResult<Vec<AssignedTask>> {
        let rows = sqlx::query(&format!(
            "{ASSIGNED_SELECT} AND (?1 IS NULL OR r.runner_id = ?1) ORDER BY t.assigned_at"
        ))
        .bind(runner.map(|r| r.to_string()))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(assigned_from_row).collect()
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
    ) -> StoreResult<UpdateOutcome> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let task_id = u.task_id.to_string();
        let row = sqlx::query(
            "SELECT t.run_id, t.name, t.state, t.last_seq, r.cancel_requested_by, r.log_bytes
             FROM run_tasks t JOIN runs r ON r.id = t.run_id WHERE t.id = ? AND r.runner_id = ?",
        )
        .bind(&task_id)
        .bind(runner.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Ok(UpdateOutcome::UnknownTask);
        };
        let run_id: String = row.try_get("run_id").map_err(backend)?;
        let name: String = row.try_get("name").map_err(backend)?;
        let current = state(&row, "state")?;
        let last_seq: i64 = row.try_get("last_seq").map_err(backend)?;
        let cancel_by: Option<String> = row.try_get("cancel_requested_by").map_err(backend)?;
        let log_bytes: i64 = row.try_get("log_bytes").map_err(backend)?;
        if current.is_final() {
            return Ok(UpdateOutcome::AlreadyFinished(current));
        }
        let seq = i64::try_from(u.seq).unwrap_or(i64::MAX);
        if seq <= last_seq {
            return Ok(UpdateOutcome::Duplicate);
        }
        let at = to_ms(u.at);
        if let Some(chunk) = u.log_chunk.as_deref().filter(|c| !c.is_empty()) {
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
        let row = sqlx::query(
            "SELECT t.run_id, t.name, r.cancel_requested_by FROM run_tasks t JOIN runs r ON r.id = t.run_id
             WHERE t.id = ? AND t.state IN ('queued', 'running')",
        )
        .bind(task.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run_id: String = row.try_get("run_id").map_err(backend)?;
        let name: String = row.try_get("name").map_err(backend)?;
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
        let running = sqlx::query(&format!("{ASSIGNED_SELECT} AND t.run_id = ?"))
            .bind(&run_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?
            .iter()
            .map(assigned_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if running.is_empty() {
            finish_run(&mut tx, &run_id, &RunEnd::cancelled_by(&by), at).await?;
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(CancelOutcome::Requested { running })
    }
}

fn ready_from_row(row: &SqliteRow) -> StoreResult<ReadyTask> {
    let env: String = row.try_get("env").map_err(backend)?;
    let env: BTreeMap<String, String> =
        serde_json::from_str(&env).map_err(|e| corrupt("run_tasks.env", e))?;
    let name: String = row.try_get("name").map_err(backend)?;
    let run: String = row.try_get("command").map_err(backend)?;
    let timeout: Option<i64> = row.try_get("timeout_seconds").map_err(backend)?;
    let spec = parse_tasks(&[RawTask {
        name: &name,
        run: &run,
        env: &env,
        timeout_seconds: timeout.map(|s| s as u64),
    }])
    .map_err(|e| corrupt("run_tasks", format!("{}: {}", e.field, e.error)))?
    .pop()
    .ok_or_else(|| corrupt("run_tasks", "empty task"))?;
    Ok(ReadyTask {
        task_id: id(row, "id")?,
        run_id: id(row, "run_id")?,
        pipeline: row.try_get("pipeline").map_err(backend)?,
        spec,
    })
}
