//! `tether runners refresh-credentials | reveal | credentials | revoke-previous`: one runner's
//! credential lifecycle. What will happen, prompts and refusals go to standard error, so standard
//! output holds only the result (with --output json, only the API's JSON). A secret is printed once.

use anyhow::{bail, Context};
use tether_client::{Client, REVEAL_WINDOW_CLOSED};
use tether_protocol::api::{Credentials, RefreshRequest, RefreshResponse, Run, Runner};
use time::OffsetDateTime;

use crate::cli::{Output, RefreshArgs, RefreshMode};
use crate::{duration, next_steps, output};

pub async fn refresh(client: &Client, out: Output, args: RefreshArgs) -> anyhow::Result<()> {
    let grace = match (&args.grace, args.mode) {
        (None, _) => None,
        (Some(_), RefreshMode::Revoke) => bail!(
            "--grace only applies to --mode overlap: in revoke mode the old secret stops working at once"
        ),
        (Some(g), RefreshMode::Overlap) => {
            Some(duration::parse_grace(g).map_err(anyhow::Error::msg)?)
        }
    };
    let runner = client.get_runner(&args.runner).await?;
    let running = client
        .runner_runs(&runner.id, Some("running"), None)
        .await
        .context("listing the pipelines running on the runner")?
        .runs;
    let plan = Plan {
        runner: &runner,
        mode: args.mode,
        grace_seconds: grace,
        running: &running,
        force: args.force,
    };
    for line in plan.lines(OffsetDateTime::now_utc()) {
        eprintln!("{line}");
    }
    if !running.is_empty() && !args.force && args.mode == RefreshMode::Revoke {
        bail!(
            "{} pipeline run(s) in progress on runner '{}': use --force to refresh anyway, or \
             --mode overlap (nothing is disconnected)",
            running.len(),
            runner.name
        );
    }
    super::confirm(
        &format!("refresh the credentials of runner '{}'", runner.name),
        "refresh",
        args.yes,
    )?;
    let req = RefreshRequest {
        confirm: Some("refresh".to_owned()),
        mode: Some(args.mode.as_str().to_owned()),
        grace_seconds: grace,
        force: args.force,
        rotation_id: None,
    };
    let refreshed = match client.refresh_credentials(&runner.id, &req).await {
        Ok(r) => r,
        Err(e) => {
            // Runs may have started since we looked: the control plane's list is the one that counts.
            if let Some(runs) = e.runs_in_progress() {
                eprintln!("These pipelines are running now:");
                for line in runs_table(&runs) {
                    eprintln!("  {line}");
                }
                bail!(
                    "{} pipeline run(s) in progress on runner '{}': use --force to refresh anyway, \
                     or --mode overlap (nothing is disconnected)",
                    runs.len(),
                    runner.name
                );
            }
            return Err(e).context("refreshing the credentials");
        }
    };
    if out == Output::Json {
        return output::json(&refreshed);
    }
    print!("{}", refreshed_text(&runner, &refreshed, client.base_url()));
    Ok(())
}

pub async fn reveal(client: &Client, out: Output, runner: &str) -> anyhow::Result<()> {
    let revealed = match client.reveal_credentials(runner).await {
        Err(e) if e.code() == Some(REVEAL_WINDOW_CLOSED) => {
            bail!("the reveal window has closed; refresh the credentials again to get a new secret")
        }
        other => other?,
    };
    if out == Output::Json {
        return output::json(&revealed);
    }
    output::fields(&[
        ("client_id", revealed.client_id.clone()),
        ("client_secret", revealed.client_secret.clone()),
        ("generation", revealed.generation.to_string()),
        ("reveal until", output::time(revealed.reveal_until)),
    ]);
    Ok(())
}

pub async fn show(client: &Client, out: Output, runner: &str) -> anyhow::Result<()> {
    let creds = client.credentials(runner).await?;
    if out == Output::Json {
        return output::json(&creds);
    }
    print_credentials(runner, &creds);
    Ok(())
}

pub async fn revoke_previous(
    client: &Client,
    out: Output,
    runner: &str,
    yes: bool,
) -> anyhow::Result<()> {
    let before = client.credentials(runner).await?;
    let older: Vec<_> = before
        .generations
        .iter()
        .filter(|g| g.state == "retiring")
        .collect();
    if older.is_empty() {
        // Nothing would change: say so once and succeed, so scripts can run this unconditionally.
        let newest = before.generations.first().map_or(0, |g| g.generation);
        if out == Output::Json {
            return output::json(&serde_json::json!({
                "revoked_generations": [], "sessions_closed": 0,
                "summary": format!("nothing to revoke: no generation older than {newest} of runner '{runner}' is still accepted"),
            }));
        }
        println!("Nothing to revoke: no generation older than {newest} of runner '{runner}' is still accepted.");
        return Ok(());
    }
    for g in &older {
        let sessions = match g.sessions {
            0 => "no live session uses it".to_owned(),
            n => format!("its {n} live session(s) are disconnected"),
        };
        eprintln!(
            "Generation {} (accepted until {}) is revoked now; {sessions}.",
            g.generation,
            output::opt_time(g.expires_at),
        );
    }
    super::confirm(
        &format!("revoke the previous credentials of runner '{runner}'"),
        runner,
        yes,
    )?;
    let done = client.revoke_previous(runner).await?;
    if out == Output::Json {
        return output::json(&done);
    }
    let mut summary = done.summary.clone();
    if let Some(first) = summary.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    println!("{summary}.");
    println!();
    print_credentials(runner, &done.credentials);
    Ok(())
}

fn print_credentials(runner: &str, c: &Credentials) {
    output::fields(&[
        ("client_id", c.client_id.clone()),
        (
            "reveal window",
            match c.reveal_until {
                Some(t) if t > OffsetDateTime::now_utc() => format!(
                    "open until {} (`tether runners reveal {runner}`)",
                    output::time(t)
                ),
                _ => "closed".to_owned(),
            },
        ),
        (
            "last refreshed",
            match (c.last_refreshed_at, &c.last_refreshed_by) {
                (Some(at), Some(by)) => format!("{} by {by}", output::time(at)),
                (Some(at), None) => output::time(at),
                _ => "never".to_owned(),
            },
        ),
    ]);
    println!();
    let rows: Vec<Vec<String>> = c
        .generations
        .iter()
        .map(|g| {
            vec![
                g.generation.to_string(),
                g.state.clone(),
                output::time(g.created_at),
                g.created_by.clone(),
                output::opt_time(g.expires_at),
                output::opt_time(g.last_used_at),
                g.sessions.to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "GENERATION",
            "STATE",
            "CREATED",
            "BY",
            "EXPIRES",
            "LAST USED",
            "SESSIONS",
        ],
        &rows,
    );
}

fn runs_table(runs: &[Run]) -> Vec<String> {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.pipeline.clone(),
                output::opt_time(r.started_at),
            ]
        })
        .collect();
    output::table_lines(&["RUN", "PIPELINE", "STARTED"], &rows)
}

/// What a refresh is about to do, in the guide's words, shown before asking.
struct Plan<'a> {
    runner: &'a Runner,
    mode: RefreshMode,
    grace_seconds: Option<u64>,
    running: &'a [Run],
    force: bool,
}

impl Plan<'_> {
    fn lines(&self, now: OffsetDateTime) -> Vec<String> {
        let r = self.runner;
        let mut lines = vec![format!(
            "About to refresh the credentials of runner '{}' (platform {}, status {}, {} instance(s), generation {}).",
            r.name,
            r.platform,
            r.status,
            r.instances.len(),
            r.credential_generation
        )];
        match self.mode {
            RefreshMode::Revoke => lines.push(
                "This will revoke the existing credentials and disconnect the running runner. You must \
                 apply the new client_secret and restart the runner to reconnect; until then its status \
                 shows Unknown and it can't run pipelines."
                    .to_owned(),
            ),
            RefreshMode::Overlap => {
                let how_long = match self.grace_seconds {
                    Some(s) => format!(
                        "for {} (until about {})",
                        duration::format_seconds(s),
                        output::time(now + time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)))
                    ),
                    None => "until the control plane's default grace period ends".to_owned(),
                };
                lines.push(format!(
                    "This will make generation {} the active secret. The current secret (generation {}) \
                     keeps working {how_long} and nothing is disconnected: apply the new client_secret \
                     and restart the runner (or let it reload the secret) before then. \
                     `tether runners revoke-previous {}` ends the overlap early.",
                    r.credential_generation + 1,
                    r.credential_generation,
                    r.name
                ));
            }
        }
        if self.running.is_empty() {
            return lines;
        }
        lines.push(match self.mode {
            RefreshMode::Revoke => {
                "Ensure you have no pipelines running: these are running now:".to_owned()
            }
            RefreshMode::Overlap => {
                "These pipelines are running now (an overlap refresh does not interrupt them):"
                    .to_owned()
            }
        });
        lines.extend(
            runs_table(self.running)
                .into_iter()
                .map(|l| format!("  {l}")),
        );
        if self.force && self.mode == RefreshMode::Revoke {
            lines.push(
                "--force: refreshing anyway; these runs lose their runner's connection.".to_owned(),
            );
        }
        lines
    }
}

/// The answer of a successful refresh for people: the secret (once), what happened to the old
/// generation, and the platform's next steps.
fn refreshed_text(runner: &Runner, r: &RefreshResponse, url: &str) -> String {
    let mut out = format!(
        "Refreshed the credentials of runner '{}': generation {} is active ({} mode).\n\n",
        runner.name, r.generation, r.mode
    );
    let pairs = [
        ("client_id", r.client_id.as_str()),
        ("client_secret", r.client_secret.as_str()),
        ("generation", &r.generation.to_string()),
    ]
    .map(|(k, v)| (k, v.to_owned()));
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in &pairs {
        out.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
    }
    out.push_str(&format!(
        "\nStore the client_secret now: `tether runners reveal {}` shows it again until {}; after \
         that only a new refresh makes a new one.\n",
        runner.name,
        output::time(r.reveal_until)
    ));
    if r.mode == "overlap" {
        out.push_str(&format!(
            "Generation {} keeps working until {}; nothing was disconnected. `tether runners credentials {}` \
             shows which generation each instance still uses; `tether runners revoke-previous {}` ends \
             the overlap early.\n",
            r.previous_generation,
            output::opt_time(r.previous_expires_at),
            runner.name,
            runner.name
        ));
    } else {
        let closed = match r.sessions_closed {
            0 => "no session was using it".to_owned(),
            n => format!("{n} session(s) using it were closed"),
        };
        out.push_str(&format!(
            "Generation {} is revoked; {closed}. Until an instance connects with the new \
             client_secret the runner's status shows Unknown and it can't run pipelines.\n",
            r.previous_generation
        ));
    }
    out.push('\n');
    let instances = &runner.instances;
    if let Some(line) = next_steps::reload_line(instances) {
        out.push_str(&format!("{line}\n\n"));
    }
    let all_reload = !instances.is_empty() && instances.iter().all(|i| i.hot_reload == Some(true));
    out.push_str(&next_steps::render(
        next_steps::guide(&runner.platform),
        &next_steps::Vars {
            runner: &runner.name,
            client_id: &r.client_id,
            url,
            generation: r.generation,
            secret_file: runner.secret_file.as_deref(),
        },
        all_reload,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(platform: &str) -> Runner {
        serde_json::from_value(serde_json::json!({
            "id": "0190f5c2-0000-7000-8000-00000000000a", "name": "prod-eu-1", "description": "",
            "platform": platform, "status": "running", "status_reason": "1 instance connected",
            "status_since": "2026-01-02T03:00:00Z", "client_id": "tcid_abc",
            "credential_generation": 1, "instances": [], "paused_until": null,
            "created_at": "2026-01-01T00:00:00Z", "last_seen_at": null, "runner_version": null,
            "paused_by": null
        }))
        .expect("runner")
    }

    fn run(id: &str) -> Run {
        serde_json::from_value(serde_json::json!({
            "id": id, "pipeline": "nightly", "runner": "prod-eu-1", "runner_id": "r",
            "state": "running", "reason": null, "tasks": [], "created_at": "2026-01-02T03:04:05Z",
            "created_by": "user:alice", "started_at": "2026-01-02T03:04:06Z", "finished_at": null
        }))
        .expect("run")
    }

    fn refreshed(mode: &str) -> RefreshResponse {
        let mut body = serde_json::json!({
            "client_id": "tcid_abc", "client_secret": "tcs_NEWSECRET", "generation": 2,
            "previous_generation": 1, "mode": mode, "reveal_until": "2026-01-02T03:19:00Z",
            "sessions_closed": 1
        });
        if mode == "overlap" {
            body["previous_expires_at"] = "2026-01-03T03:04:00Z".into();
        }
        serde_json::from_value(body).expect("response")
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_323_045).expect("t") // 2026-01-02T03:04:05Z
    }

    #[test]
    fn revoke_plan_uses_the_guides_words_and_lists_running_pipelines() {
        let r = runner("aws_fargate");
        let runs = [run("run-1"), run("run-2")];
        let plan = Plan {
            runner: &r,
            mode: RefreshMode::Revoke,
            grace_seconds: None,
            running: &runs,
            force: false,
        };
        let text = plan.lines(now()).join("\n");
        assert!(text.contains("This will revoke the existing credentials and disconnect the running runner. You must apply the new client_secret and restart the runner to reconnect; until then its status shows Unknown and it can't run pipelines."), "{text}");
        assert!(
            text.contains("Ensure you have no pipelines running: these are running now:"),
            "{text}"
        );
        assert!(
            text.contains("RUN") && text.contains("run-1") && text.contains("run-2"),
            "{text}"
        );
        assert!(text.contains("2026-01-02T03:04:06Z"), "started: {text}");

        let quiet = Plan {
            running: &[],
            ..plan
        };
        assert!(!quiet.lines(now()).join("\n").contains("Ensure"));
    }

    #[test]
    fn overlap_plan_says_the_old_secret_keeps_working_and_nothing_disconnects() {
        let r = runner("gke");
        let plan = Plan {
            runner: &r,
            mode: RefreshMode::Overlap,
            grace_seconds: Some(86_400),
            running: &[],
            force: false,
        };
        let text = plan.lines(now()).join("\n");
        assert!(
            text.contains("generation 1) keeps working for 1d (until about 2026-01-03T03:04:05Z)"),
            "{text}"
        );
        assert!(text.contains("nothing is disconnected"), "{text}");
        assert!(!text.contains("revoke the existing"), "{text}");
        let default = Plan {
            grace_seconds: None,
            ..plan
        };
        assert!(default
            .lines(now())
            .join("\n")
            .contains("default grace period"));
    }

    #[test]
    fn the_secret_is_printed_once_with_the_platforms_next_steps() {
        let text = refreshed_text(
            &runner("snowflake"),
            &refreshed("revoke"),
            "http://127.0.0.1:8080",
        );
        assert_eq!(text.matches("tcs_NEWSECRET").count(), 1, "{text}");
        assert!(text.contains("client_secret: tcs_NEWSECRET"), "{text}");
        assert!(text.contains("generation:    2"), "{text}");
        assert!(text.contains("until 2026-01-02T03:19:00Z"), "{text}");
        assert!(
            text.contains("Generation 1 is revoked; 1 session(s) using it were closed."),
            "{text}"
        );
        assert!(text.contains("Next steps (Snowflake"), "{text}");
        assert!(text.contains("ALTER SECRET"), "{text}");

        let text = refreshed_text(
            &runner("azure_container_app"),
            &refreshed("overlap"),
            "http://h",
        );
        assert_eq!(text.matches("tcs_NEWSECRET").count(), 1, "{text}");
        assert!(
            text.contains("Generation 1 keeps working until 2026-01-03T03:04:00Z"),
            "{text}"
        );
        assert!(text.contains("az containerapp secret set"), "{text}");
    }
}
