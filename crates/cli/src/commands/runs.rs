//! `tether runs ...` and the waiting/following shared with `tether pipelines run`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use tether_client::Client;
use tether_protocol::api::Run;

use crate::cli::{Output, RunsCommand};
use crate::output;

/// How often a follower asks for new log bytes and the run's state.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, out: Output, command: RunsCommand) -> anyhow::Result<()> {
    match command {
        RunsCommand::Show { id } => {
            let r = client.get_run(&id).await?;
            if out == Output::Json {
                return output::json(&r);
            }
            show(&r);
            Ok(())
        }
        RunsCommand::Logs { id, follow: true } => {
            follow(client, &id, LogTo::Stdout).await.map(|_| ())
        }
        RunsCommand::Logs { id, follow: false } => write_log_from(client, &id, 0, LogTo::Stdout)
            .await
            .map(|_| ()),
        RunsCommand::Cancel { id } => {
            let r = client.cancel_run(&id).await?;
            if out == Output::Json {
                return output::json(&r);
            }
            if is_final(&r.state) {
                println!("Run {} is {}.", r.id, r.state);
            } else {
                println!(
                    "Cancelling run {} ({}); `tether runs show {}` shows when it has stopped.",
                    r.id, r.state, r.id
                );
            }
            Ok(())
        }
    }
}

/// Whether a run or task state is final: it will not change again.
pub fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "cancelled" | "lost")
}

#[derive(Debug, Clone, Copy)]
pub enum LogTo {
    Stdout,
    /// Keeps stdout for one JSON document (`--output json`).
    Stderr,
}

fn write_log(to: LogTo, bytes: &[u8]) -> anyhow::Result<()> {
    let result = match to {
        LogTo::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        LogTo::Stderr => std::io::stderr().lock().write_all(bytes),
    };
    result.context("writing the log")
}

/// Polls until the run is in a final state.
pub async fn wait(client: &Client, id: &str) -> anyhow::Result<Run> {
    loop {
        let r = client
            .get_run(id)
            .await
            .with_context(|| format!("waiting for run {id}"))?;
        if is_final(&r.state) {
            return Ok(r);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the log as it grows until the run has ended and its log is read to the end.
/// The state is read before the log: once a final state has been seen, every byte of the log
/// was written before that read, so reading until an empty answer gets all of it. Each poll
/// reads until an empty answer, so a server that answers in pieces is not fallen behind.
pub async fn follow(client: &Client, id: &str, to: LogTo) -> anyhow::Result<Run> {
    let mut offset: u64 = 0;
    loop {
        let r = client
            .get_run(id)
            .await
            .with_context(|| format!("following run {id}"))?;
        let done = is_final(&r.state);
        offset = write_log_from(client, id, offset, to).await?;
        if done {
            return Ok(r);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Writes the run's log from byte `offset` on, page by page until an empty answer; returns the
/// offset after the last byte written.
async fn write_log_from(
    client: &Client,
    id: &str,
    mut offset: u64,
    to: LogTo,
) -> anyhow::Result<u64> {
    loop {
        let chunk = client
            .run_log_bytes(id, offset)
            .await
            .with_context(|| format!("reading the log of run {id}"))?;
        if chunk.is_empty() {
            return Ok(offset);
        }
        write_log(to, &chunk)?;
        offset += chunk.len() as u64;
    }
}

/// Success, or an error whose one line says how the run ended and why (exit code 1).
pub fn outcome(r: &Run) -> anyhow::Result<()> {
    if r.state == "succeeded" {
        eprintln!("run {} succeeded", r.id);
        return Ok(());
    }
    bail!("run {} {}: {}", r.id, r.state, why(r))
}

/// The run's reason, or else the first unsuccessful task's.
fn why(r: &Run) -> String {
    if let Some(reason) = r.reason.as_deref().filter(|s| !s.is_empty()) {
        return reason.to_owned();
    }
    r.tasks
        .iter()
        .find(|t| is_final(&t.state) && t.state != "succeeded")
        .map(|t| match (&t.reason, t.exit_code) {
            (Some(reason), _) => format!("task '{}' {}: {reason}", t.name, t.state),
            (None, Some(code)) => format!("task '{}' exited with code {code}", t.name),
            (None, None) => format!("task '{}' {}", t.name, t.state),
        })
        .unwrap_or_else(|| "no reason given".to_owned())
}

fn show(r: &Run) {
    output::fields(&[
        ("id", r.id.clone()),
        ("pipeline", r.pipeline.clone()),
        ("runner", r.runner.clone()),
        ("state", r.state.clone()),
        ("reason", r.reason.clone().unwrap_or_else(|| "-".into())),
        (
            "created",
            format!("{} by {}", output::time(r.created_at), r.created_by),
        ),
        ("started", output::opt_time(r.started_at)),
        ("finished", output::opt_time(r.finished_at)),
    ]);
    println!();
    let rows: Vec<Vec<String>> = r
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.state.clone(),
                t.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                t.instance_id.clone().unwrap_or_else(|| "-".into()),
                t.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(&["TASK", "STATE", "EXIT CODE", "INSTANCE", "REASON"], &rows);
}

/// A table of runs, for `tether runners runs`.
pub fn list(runs: &[Run]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.pipeline.clone(),
                r.state.clone(),
                output::time(r.created_at),
                r.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(&["ID", "PIPELINE", "STATE", "CREATED", "REASON"], &rows);
}
