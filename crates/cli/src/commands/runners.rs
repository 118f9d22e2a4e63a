use anyhow::Context;
use tether_client::Client;
use tether_protocol::api::{CreateRunnerRequest, Runner};

use crate::cli::{Output, RunnersCommand};
use crate::output;

pub async fn run(client: &Client, out: Output, command: RunnersCommand) -> anyhow::Result<()> {
    match command {
        RunnersCommand::Create {
            name,
            platform,
            description,
        } => {
            let created = client
                .create_runner(&CreateRunnerRequest {
                    name,
                    platform,
                    description,
                })
                .await
                .context("creating the runner")?;
            if out == Output::Json {
                return output::json(&created);
            }
            let r = &created.runner;
            println!(
                "Created runner '{}' ({}, platform {}).",
                r.name, r.id, r.platform
            );
            println!();
            output::fields(&[
                ("client_id", created.credentials.client_id.clone()),
                ("client_secret", created.credentials.client_secret.clone()),
            ]);
            println!();
            println!(
                "The client_secret is shown only this once: store it in your secret store now."
            );
            println!("The runner reads them as OAUTH_CLIENT_ID and OAUTH_CLIENT_SECRET (or _FILE / _ARN):");
            println!(
                "  TETHER_URL={} OAUTH_CLIENT_ID={} OAUTH_CLIENT_SECRET=... tether runner",
                client.base_url(),
                created.credentials.client_id
            );
            Ok(())
        }
        RunnersCommand::List { limit } => {
            let mut runners = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .list_runners(limit.map(|l| l.min(200)), cursor.as_deref())
                    .await?;
                runners.extend(page.runners);
                match (page.next_cursor, limit) {
                    (Some(c), None) => cursor = Some(c),
                    _ => break,
                }
            }
            if let Some(l) = limit {
                runners.truncate(l as usize);
            }
            if out == Output::Json {
                return output::json(&serde_json::json!({ "runners": runners }));
            }
            if runners.is_empty() {
                println!("No runners yet. Create one with `tether runners create NAME --platform PLATFORM`.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = runners
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.status.clone(),
                        r.platform.clone(),
                        r.instances.len().to_string(),
                        r.credential_generation.to_string(),
                        r.runner_version.clone().unwrap_or_else(|| "-".into()),
                        output::opt_time(r.last_seen_at),
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "STATUS",
                    "PLATFORM",
                    "INSTANCES",
                    "GENERATION",
                    "VERSION",
                    "LAST SEEN",
                ],
                &rows,
            );
            Ok(())
        }
        RunnersCommand::Show { runner } => show(client, out, client.get_runner(&runner).await?),
        RunnersCommand::Pause { runner, until, yes } => {
            super::confirm(&format!("pause runner '{runner}'"), "pause runner", yes)?;
            let r = client.pause_runner(&runner, until.as_deref()).await?;
            if out == Output::Json {
                return output::json(&r);
            }
            println!(
                "Paused '{}': no new tasks are assigned; running tasks finish. Status: {} ({}).",
                r.name, r.status, r.status_reason
            );
            Ok(())
        }
        RunnersCommand::Resume { runner } => {
            let r = client.resume_runner(&runner).await?;
            if out == Output::Json {
                return output::json(&r);
            }
            println!(
                "Resumed '{}'. Status: {} ({}).",
                r.name, r.status, r.status_reason
            );
            Ok(())
        }
        RunnersCommand::Restart { runner } => {
            let r = client.restart_runner(&runner).await?;
            if out == Output::Json {
                return output::json(&r);
            }
            println!(
                "Asked {} instance(s) of '{}' to finish their tasks and exit; their orchestrator starts replacements.",
                r.instances.len(),
                r.name
            );
            Ok(())
        }
        RunnersCommand::Delete { runner, yes } => {
            super::confirm(&format!("delete runner '{runner}'"), &runner, yes)?;
            client.delete_runner(&runner).await?;
            if out == Output::Json {
                return output::json(&serde_json::json!({ "deleted": runner }));
            }
            println!("Deleted runner '{runner}'. Its credentials no longer work and its instances were disconnected.");
            Ok(())
        }
        RunnersCommand::Runs {
            runner,
            state,
            limit,
        } => {
            let list = client.runner_runs(&runner, state.as_deref(), limit).await?;
            if out == Output::Json {
                return output::json(&list);
            }
            if list.runs.is_empty() {
                match state {
                    Some(s) => println!("Runner '{runner}' has no {s} runs."),
                    None => println!("Runner '{runner}' has no runs yet. Start one with `tether pipelines run PIPELINE --runner {runner}`."),
                }
                return Ok(());
            }
            super::runs::list(&list.runs);
            Ok(())
        }
    }
}

fn show(_client: &Client, out: Output, r: Runner) -> anyhow::Result<()> {
    if out == Output::Json {
        return output::json(&r);
    }
    output::fields(&[
        ("name", r.name.clone()),
        ("id", r.id.clone()),
        ("platform", r.platform.clone()),
        (
            "description",
            if r.description.is_empty() {
                "-".into()
            } else {
                r.description.clone()
            },
        ),
        (
            "status",
            format!("{} (since {})", r.status, output::time(r.status_since)),
        ),
        ("reason", r.status_reason.clone()),
        ("client_id", r.client_id.clone()),
        ("credential generation", r.credential_generation.to_string()),
        (
            "version",
            r.runner_version.clone().unwrap_or_else(|| "-".into()),
        ),
        ("last seen", output::opt_time(r.last_seen_at)),
        (
            "paused",
            match (&r.paused_by, r.paused_until) {
                (Some(by), Some(until)) => format!("by {by} until {}", output::time(until)),
                (Some(by), None) => format!("by {by}"),
                _ => "no".into(),
            },
        ),
        ("created", output::time(r.created_at)),
        ("instances", r.instances.len().to_string()),
    ]);
    if !r.instances.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = r
            .instances
            .iter()
            .map(|i| {
                vec![
                    i.instance_id.clone(),
                    i.hostname.clone(),
                    i.credential_generation.to_string(),
                    i.running_tasks.to_string(),
                    output::time(i.connected_at),
                    output::time(i.last_heartbeat_at),
                ]
            })
            .collect();
        output::table(
            &[
                "INSTANCE",
                "HOSTNAME",
                "GENERATION",
                "TASKS",
                "CONNECTED",
                "LAST HEARTBEAT",
            ],
            &rows,
        );
    }
    Ok(())
}
