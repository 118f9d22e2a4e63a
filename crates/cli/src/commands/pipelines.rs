//! `tether pipelines ...`: apply pipeline files, list/show/delete pipelines, start runs.

use std::io::Read;

use anyhow::Context;
use tether_client::Client;
use tether_protocol::api::Pipeline;

use super::runs;
use crate::cli::{Output, PipelinesCommand};
use crate::{output, pipeline_file};

pub async fn run(client: &Client, out: Output, command: PipelinesCommand) -> anyhow::Result<()> {
    match command {
        PipelinesCommand::Apply { file, name } => {
            let (source, text) = read_file(&file)?;
            let parsed = pipeline_file::parse(&text, &source, name.as_deref())?;
            let p = client
                .put_pipeline(&parsed.name, &parsed.request)
                .await
                .with_context(|| format!("applying pipeline '{}'", parsed.name))?;
            if out == Output::Json {
                return output::json(&p);
            }
            println!("Applied pipeline '{}'.", p.name);
            println!();
            show(&p);
            Ok(())
        }
        PipelinesCommand::List => {
            let list = client.list_pipelines().await?;
            if out == Output::Json {
                return output::json(&list);
            }
            if list.pipelines.is_empty() {
                println!("No pipelines yet. Define one with `tether pipelines apply -f FILE` (see its --help).");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .pipelines
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.tasks.len().to_string(),
                        output::time(p.updated_at),
                        p.updated_by.clone(),
                    ]
                })
                .collect();
            output::table(&["NAME", "TASKS", "UPDATED", "UPDATED BY"], &rows);
            Ok(())
        }
        PipelinesCommand::Show { name } => {
            let p = client.get_pipeline(&name).await?;
            if out == Output::Json {
                return output::json(&p);
            }
            show(&p);
            Ok(())
        }
        PipelinesCommand::Delete { name, yes } => {
            super::confirm(&format!("delete pipeline '{name}'"), &name, yes)?;
            client.delete_pipeline(&name).await?;
            if out == Output::Json {
                return output::json(&serde_json::json!({ "deleted": name }));
            }
            println!("Deleted pipeline '{name}'.");
            Ok(())
        }
        PipelinesCommand::Run {
            name,
            runner,
            wait,
            follow,
        } => {
            let created = client
                .create_run(&name, &runner)
                .await
                .with_context(|| format!("starting pipeline '{name}' on runner '{runner}'"))?;
            if out == Output::Json && !(wait || follow) {
                return output::json(&created);
            }
            if out == Output::Table {
                // The id alone on stdout, so `RUN=$(tether pipelines run ...)` works.
                println!("{}", created.id);
                eprintln!(
                    "Started run {} of '{}' on runner '{}' ({}).",
                    created.id, created.pipeline, created.runner, created.state
                );
                if !(wait || follow) {
                    eprintln!("Follow it with `tether runs logs {} --follow`.", created.id);
                    return Ok(());
                }
            }
            let finished = if follow {
                let log = if out == Output::Json {
                    runs::LogTo::Stderr
                } else {
                    runs::LogTo::Stdout
                };
                runs::follow(client, &created.id, log).await?
            } else {
                runs::wait(client, &created.id).await?
            };
            if out == Output::Json {
                output::json(&finished)?;
            }
            runs::outcome(&finished)
        }
    }
}

/// The file's text and how to name it in errors; `-` is standard input.
fn read_file(file: &str) -> anyhow::Result<(String, String)> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the pipeline from standard input")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    Ok((file.to_owned(), text))
}

/// Environment values may be credentials, so the table shows only their keys.
fn show(p: &Pipeline) {
    output::fields(&[
        ("name", p.name.clone()),
        ("tasks", p.tasks.len().to_string()),
        ("created", output::time(p.created_at)),
        (
            "updated",
            format!("{} by {}", output::time(p.updated_at), p.updated_by),
        ),
    ]);
    println!();
    let rows: Vec<Vec<String>> = p
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.timeout_seconds
                    .map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
                if t.env.is_empty() {
                    "-".to_owned()
                } else {
                    t.env.keys().cloned().collect::<Vec<_>>().join(",")
                },
                one_line(&t.run),
            ]
        })
        .collect();
    output::table(&["TASK", "TIMEOUT", "ENV", "RUN"], &rows);
}

/// A multi-line command as its first line, marked as cut, so the table stays a table.
fn one_line(command: &str) -> String {
    let trimmed = command.trim();
    match trimmed.split_once('\n') {
        Some((first, _)) => format!("{} ...", first.trim_end()),
        None => trimmed.to_owned(),
    }
}
