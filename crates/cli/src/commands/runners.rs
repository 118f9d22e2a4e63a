//! `tether runners …`: create, list, show, pause, resume, restart and delete runners, and the
//! entry to the credential commands (`refresh-credentials`, `reveal`, `apply-credentials`,
//! `rotate`), which live in their own modules.

use anyhow::Context;
use tether_client::Client;
use tether_protocol::api::{AuthHealth, CreateRunnerRequest, Runner};

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
        RunnersCommand::RefreshCredentials(args) => {
            super::credentials::refresh(client, out, args).await
        }
        RunnersCommand::Reveal { runner } => super::credentials::reveal(client, out, &runner).await,
        RunnersCommand::Credentials { runner } => {
            super::credentials::show(client, out, &runner).await
        }
        RunnersCommand::RevokePrevious { runner, yes } => {
            super::credentials::revoke_previous(client, out, &runner, yes).await
        }
        RunnersCommand::ApplyCredentials(args) => super::apply::run(client, out, args).await,
        RunnersCommand::Rotate(args) => super::rotate::run(client, out, args).await,
    }
}

/// How an instance picks up a new secret.
fn reload(i: &tether_protocol::api::Instance) -> &'static str {
    match (i.hot_reload, i.secret_source.as_deref()) {
        (Some(true), Some("file")) => "reloads by itself (file)",
        (Some(true), Some("aws_secrets_manager")) => "reloads by itself (Secrets Manager)",
        (Some(true), _) => "reloads by itself",
        (Some(false), _) => "needs a restart with the new value",
        (None, _) => "-",
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
        ("credential generation", generations(&r)),
        ("credentials", rollout(&r)),
        ("auth", auth(&r.auth_health)),
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
                    reload(i).to_owned(),
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
                "NEW SECRET",
                "TASKS",
                "CONNECTED",
                "LAST HEARTBEAT",
            ],
            &rows,
        );
    }
    Ok(())
}

/// The active generation, and which instances still authenticate with an older one (after an
/// overlap refresh, those are the ones that have not picked up the new secret yet).
/// The rollout line, with what to do next while the newest secret has not reached every instance.
fn rollout(r: &Runner) -> String {
    let ro = &r.credential_rollout;
    if ro.state == "applied" || r.credential_generation == 1 {
        return ro.summary.clone();
    }
    format!(
        "{} (apply the new client_secret: `tether runners apply-credentials {}`)",
        ro.summary, r.name
    )
}

fn generations(r: &Runner) -> String {
    let current = r.credential_generation;
    let behind: Vec<String> = r
        .instances
        .iter()
        .filter(|i| i.credential_generation != current)
        .map(|i| format!("{} on {}", i.hostname, i.credential_generation))
        .collect();
    match (r.instances.len(), behind.len()) {
        (0, _) => current.to_string(),
        (n, 0) => format!("{current} (all {n} instance(s) on it)"),
        (n, b) => format!(
            "{current} ({b} of {n} instance(s) still on an older one: {})",
            behind.join(", ")
        ),
    }
}

fn auth(h: &AuthHealth) -> String {
    if !h.summary.is_empty() {
        return h.summary.clone();
    }
    match (h.failed_token_requests, h.last_success_at) {
        (0, Some(at)) => format!("ok (last token {})", output::time(at)),
        (0, None) => "no token requests yet".to_owned(),
        (n, _) => format!(
            "{n} failed token request(s){}",
            h.last_failure_reason
                .as_deref()
                .map(|r| format!(", last: {r}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(instance_generations: &[u32]) -> Runner {
        let instances: Vec<serde_json::Value> = instance_generations
            .iter()
            .enumerate()
            .map(|(n, g)| {
                serde_json::json!({
                    "instance_id": format!("i{n}"), "hostname": format!("host-{n}"),
                    "connected_at": "2026-01-02T03:00:00Z", "last_heartbeat_at": "2026-01-02T03:00:01Z", "generation_since": "2026-01-02T03:00:00Z",
                    "credential_generation": g, "running_tasks": 0
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "r", "name": "n", "description": "", "platform": "gke", "status": "running",
            "status_reason": "", "status_since": "2026-01-02T03:00:00Z", "client_id": "tcid_x",
            "credential_generation": 2, "instances": instances, "paused_until": null,
            "created_at": "2026-01-01T00:00:00Z", "last_seen_at": null, "runner_version": null,
            "paused_by": null,
            "auth_health": {"failed_token_requests": 3, "last_failure_reason": "wrong_secret",
                "last_failure_at": "2026-01-02T03:04:00Z", "last_success_at": null,
                "summary": "3 failed token requests since 03:04: wrong client secret"}
        }))
        .expect("runner")
    }

    #[test]
    fn generation_line_names_instances_on_an_older_secret() {
        assert_eq!(generations(&runner(&[])), "2");
        assert_eq!(generations(&runner(&[2, 2])), "2 (all 2 instance(s) on it)");
        assert_eq!(
            generations(&runner(&[2, 1])),
            "2 (1 of 2 instance(s) still on an older one: host-1 on 1)"
        );
    }

    #[test]
    fn auth_line_is_the_servers_summary_or_the_counts() {
        let r = runner(&[]);
        assert_eq!(
            auth(&r.auth_health),
            "3 failed token requests since 03:04: wrong client secret"
        );
        let mut h = r.auth_health.clone();
        h.summary.clear();
        assert_eq!(auth(&h), "3 failed token request(s), last: wrong_secret");
        assert_eq!(auth(&AuthHealth::default()), "no token requests yet");
    }
}
