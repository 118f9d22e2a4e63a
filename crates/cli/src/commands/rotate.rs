//! `tether runners rotate`: zero-touch, zero-downtime rotation for runners that read their secret
//! from AWS Secrets Manager (OAUTH_CLIENT_SECRET_ARN). Check the secret, refresh in overlap mode,
//! write the new secret into the store and read it back, wait until every live instance uses the
//! new generation on its open session, then revoke the previous generation. A failed step stops
//! the rotation with nothing revoked (the old secret works until the grace period ends) and one
//! line that says what to do next.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tether_client::Client;
use tether_domain::ClientSecret;
use tether_protocol::api::{RefreshRequest, RefreshResponse, Runner};
use time::OffsetDateTime;

use super::apply::{self, NewSecret, Restart, Steps};
use crate::aws::Aws;
use crate::cli::{Output, RotateArgs, TargetPlatform};
use crate::{duration, output};

/// How often the runner's instances are looked at while waiting.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, out: Output, args: RotateArgs) -> anyhow::Result<()> {
    let grace = duration::parse_grace(&args.grace).map_err(anyhow::Error::msg)?;
    let timeout = duration::parse_seconds(&args.timeout).map_err(|e| anyhow!("--timeout {e}"))?;
    if timeout == 0 {
        bail!("--timeout must be longer than 0s");
    }
    if timeout >= grace {
        bail!(
            "--timeout {} must be shorter than --grace {}: the old secret has to outlive the wait",
            duration::format_seconds(timeout),
            duration::format_seconds(grace)
        );
    }
    let runner = client.get_runner(&args.runner).await?;
    let platform = apply::platform(args.platform, &runner)?;
    if platform != TargetPlatform::Aws {
        bail!(
            "rotate works with --platform aws only (the runner re-reads AWS Secrets Manager through \
             OAUTH_CLIENT_SECRET_ARN); elsewhere use `tether runners refresh-credentials {} --mode \
             overlap`, then `tether runners apply-credentials {}`, then `tether runners \
             revoke-previous {}`",
            runner.name,
            runner.name,
            runner.name
        );
    }
    let secret_id = args.secret_id.as_str();
    let aws = Aws::new(args.region.as_deref()).await;

    // 0. Check the store before changing anything: a wrong --secret-id stops here.
    let unchanged = "nothing was changed and the runner keeps its current secret: check \
        --secret-id (the ARN or name of the secret the runner reads) and your AWS credentials, then \
        run the rotation again";
    let current = apply::read_runners_secret(&aws, secret_id, &runner, unchanged).await?;
    for line in plan_lines(&runner, &current.arn, grace, timeout) {
        eprintln!("{line}");
    }
    super::confirm(
        &format!("rotate the credentials of runner '{}'", runner.name),
        "rotate",
        args.yes,
    )?;
    let mut steps = Steps::new(out);
    steps.line(&format!(
        "Rotating the credentials of runner '{}' through AWS secret {}:",
        runner.name, current.arn
    ));
    steps.done(format!(
        "Checked AWS secret {}: it holds {}.",
        current.arn,
        current.value.describe()
    ));

    // The rotation's steps share one id in the audit log.
    let rotation = client
        .rotation_step(
            &runner.id,
            "started",
            None,
            serde_json::json!({"secret": current.arn, "grace_seconds": grace, "timeout_seconds": timeout}),
        )
        .await
        .context("recording the start of the rotation in the audit log (nothing was changed)")?
        .rotation_id;
    let result: anyhow::Result<()> = async {
        // 1. Overlap refresh: nothing is disconnected, so running pipelines need no --force.
        let running = client
            .runner_runs(&runner.id, Some("running"), None)
            .await
            .map(|l| l.runs.len())
            .unwrap_or(0);
        let req = RefreshRequest {
            confirm: Some("refresh".to_owned()),
            mode: Some("overlap".to_owned()),
            grace_seconds: Some(grace),
            force: true,
            rotation_id: Some(rotation.clone()),
        };
        let refreshed = client
            .refresh_credentials(&runner.id, &req)
            .await
            .context("refreshing the credentials (nothing was changed)")?;
        let ctx = Stopped {
            runner: runner.name.clone(),
            secret: current.arn.clone(),
            old: refreshed.previous_generation,
            new: refreshed.generation,
            old_expires: refreshed.previous_expires_at,
            reveal_until: refreshed.reveal_until,
        };
        steps.done(format!(
            "Refreshed in overlap mode: generation {} is active; generation {} keeps working until {}; \
             nothing was disconnected{}.",
            refreshed.generation,
            refreshed.previous_generation,
            output::opt_time(refreshed.previous_expires_at),
            match running {
                0 => String::new(),
                n => format!(" and the {n} running pipeline run(s) go on"),
            }
        ));
        let new = secret_of(&refreshed)?;

        // 2. Store it and read it back.
        let written = apply::write_and_verify(&aws, secret_id, &runner, &current, &new, &mut steps)
            .await
            .map_err(|e| anyhow!("{}", ctx.write_failed(&format!("{e:#}"))))?;
        audit_step(
            client,
            &runner.id,
            &rotation,
            "secret_written",
            serde_json::json!({"secret_arn": written.secret_arn, "version_id": written.version_id}),
        )
        .await;
        let restart = match (&args.cluster, &args.service) {
            (Some(cluster), Some(service)) => Some(
                apply::restart_ecs(&aws, cluster, service, &written.secret_arn, &mut steps)
                    .await
                    .map_err(|e| anyhow!("{}", ctx.after_write(&format!("{e:#}"))))?,
            ),
            _ => None,
        };
        if let Some(Restart::NewDeployment { .. }) = &restart {
            audit_step(
                client,
                &runner.id,
                &rotation,
                "deployment_forced",
                serde_json::json!({"cluster": args.cluster, "service": args.service}),
            )
            .await;
        }

        // 3. Wait until every live instance uses the new generation.
        let started = Instant::now();
        let moved =
            wait_for_instances(client, &runner, &ctx, Duration::from_secs(timeout), &steps).await?;
        steps.done(match moved {
            0 => format!(
                "No instance of the runner is connected, so none has to move; one that starts reads \
                 generation {} from the secret.",
                ctx.new
            ),
            n => format!(
                "All {n} live instance(s) use generation {} (after {}s){}.",
                ctx.new,
                started.elapsed().as_secs(),
                if matches!(restart, Some(Restart::NewDeployment { .. })) {
                    ""
                } else {
                    ", on their open sessions"
                }
            ),
        });

        audit_step(
            client,
            &runner.id,
            &rotation,
            "instances_moved",
            serde_json::json!({"instances": moved, "generation": ctx.new}),
        )
        .await;

        // 4. Revoke the previous generation.
        let done = client
            .revoke_previous_in(&runner.id, &rotation)
            .await
            .map_err(|e| {
            anyhow!(
                "{}",
                ctx.after_write(&format!("revoking the previous generation failed: {e}"))
            )
        })?;
        let revoked: Vec<String> = done
            .credentials
            .generations
            .iter()
            .filter(|g| g.generation < ctx.new && g.state == "revoked")
            .map(|g| g.generation.to_string())
            .collect();
        steps.done(format!(
            "Revoked generation {}: it no longer works, and no session was using it.",
            ctx.old
        ));
        steps.line(&format!(
            "Rotated runner '{}' to generation {}{}.",
            runner.name,
            ctx.new,
            if moved > 0 { " with no disconnect" } else { "" }
        ));
        if out == Output::Json {
            output::json(&serde_json::json!({
                "runner": runner.name,
                "generation": ctx.new,
                "previous_generation": ctx.old,
                "secret_arn": written.secret_arn,
                "version_id": written.version_id,
                "instances": moved,
                "revoked": revoked,
                "restart": restart,
            }))?;
        }
        Ok(())
    }
    .await;
    let (step, detail) = match &result {
        Ok(()) => ("completed", serde_json::json!({})),
        Err(e) => ("failed", serde_json::json!({"reason": format!("{e:#}")})),
    };
    audit_step(client, &runner.id, &rotation, step, detail).await;
    result
}

/// Records a rotation step; the rotation goes on (with a warning) if the audit write fails.
async fn audit_step(
    client: &Client,
    runner: &str,
    rotation: &str,
    step: &str,
    detail: serde_json::Value,
) {
    if let Err(e) = client
        .rotation_step(runner, step, Some(rotation), detail)
        .await
    {
        eprintln!("warning: recording the rotation step `{step}` in the audit log failed: {e}");
    }
}

fn secret_of(r: &RefreshResponse) -> anyhow::Result<NewSecret> {
    let secret = ClientSecret::parse(&r.client_secret)
        .map_err(|e| anyhow!("the refreshed client_secret {}", e.0))?;
    Ok(NewSecret {
        secret,
        generation: r.generation,
        from: "the refresh".to_owned(),
    })
}

/// What will happen, shown before asking.
fn plan_lines(runner: &Runner, secret: &str, grace: u64, timeout: u64) -> Vec<String> {
    let (old, new) = (
        runner.credential_generation,
        runner.credential_generation + 1,
    );
    vec![
        format!(
            "About to rotate the credentials of runner '{}' ({} instance(s), generation {old}) through AWS secret {secret}:",
            runner.name,
            runner.instances.len()
        ),
        format!(
            "  1. refresh in overlap mode: generation {new} becomes active, generation {old} keeps working for {} and nothing is disconnected;",
            duration::format_seconds(grace)
        ),
        "  2. write the new client_secret into the secret and read it back;".to_owned(),
        format!(
            "  3. wait up to {} until every live instance uses generation {new} (they re-read OAUTH_CLIENT_SECRET_ARN);",
            duration::format_seconds(timeout)
        ),
        format!("  4. revoke generation {old}."),
        format!("If a step fails the rotation stops there and generation {old} keeps working."),
    ]
}

/// Polls the runner until no live instance and no session is on an older generation.
/// Returns how many instances there are.
async fn wait_for_instances(
    client: &Client,
    runner: &Runner,
    ctx: &Stopped,
    timeout: Duration,
    steps: &Steps,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut reported: Option<(usize, usize)> = None;
    let mut last_error: Option<String> = None;
    loop {
        match progress(client, runner, ctx.new).await {
            Ok(p) => {
                last_error = None;
                if p.behind.is_empty() && p.old_sessions == 0 {
                    return Ok(p.total);
                }
                let now = (p.total - p.behind.len(), p.total);
                if reported != Some(now) {
                    steps.detail(format!(
                        "waiting: {} of {} instance(s) on generation {}",
                        now.0, now.1, ctx.new
                    ));
                    reported = Some(now);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{}",
                        ctx.timed_out(
                            &duration::format_seconds(timeout.as_secs()),
                            &p.behind,
                            p.old_sessions
                        )
                    );
                }
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    bail!(
                        "{}",
                        ctx.after_write(&format!(
                            "could not see the runner's instances for {}: {e}",
                            duration::format_seconds(timeout.as_secs())
                        ))
                    );
                }
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    steps.detail(format!(
                        "cannot see the instances right now ({e}); retrying"
                    ));
                    last_error = Some(e);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Progress {
    total: usize,
    /// `hostname (generation g)` of each live instance still on an older generation.
    behind: Vec<String>,
    /// Sessions the control plane counts on older, still-accepted generations.
    old_sessions: usize,
}

async fn progress(client: &Client, runner: &Runner, new: u32) -> anyhow::Result<Progress> {
    let r = client.get_runner(&runner.id).await?;
    let creds = client.credentials(&runner.id).await?;
    Ok(Progress {
        total: r.instances.len(),
        behind: r
            .instances
            .iter()
            .filter(|i| i.credential_generation < new)
            .map(|i| format!("{} (generation {})", i.hostname, i.credential_generation))
            .collect(),
        old_sessions: creds
            .generations
            .iter()
            .filter(|g| g.generation < new && g.state != "revoked")
            .map(|g| g.sessions)
            .sum(),
    })
}

/// Where a rotation stopped, to say what to do next.
#[derive(Debug, Clone)]
struct Stopped {
    runner: String,
    secret: String,
    old: u32,
    new: u32,
    old_expires: Option<OffsetDateTime>,
    reveal_until: OffsetDateTime,
}

impl Stopped {
    fn expiry(&self) -> String {
        output::opt_time(self.old_expires)
    }

    /// The new secret could not be stored.
    fn write_failed(&self, cause: &str) -> String {
        format!(
            "{cause}. The rotation stopped with nothing revoked: generation {old} keeps working until \
             {exp} and the runner keeps using it. Fix access to the secret, then run `tether runners \
             apply-credentials {r} --platform aws --secret-id {s}` before {reveal} (the new secret's \
             reveal window), and `tether runners revoke-previous {r}` once every instance is on \
             generation {new}; or the old secret stops working at {exp}",
            old = self.old,
            new = self.new,
            exp = self.expiry(),
            r = self.runner,
            s = self.secret,
            reveal = output::time(self.reveal_until),
        )
    }

    /// Something failed after the new secret was stored.
    fn after_write(&self, cause: &str) -> String {
        format!(
            "{cause}. The rotation stopped with nothing revoked: the new secret (generation {new}) is \
             in AWS secret {s} and generation {old} keeps working until {exp}. Run `tether runners \
             revoke-previous {r}` once `tether runners show {r}` shows every instance on generation \
             {new}, or the old secret stops working at {exp}",
            old = self.old,
            new = self.new,
            exp = self.expiry(),
            r = self.runner,
            s = self.secret,
        )
    }

    /// Instances did not move in time.
    fn timed_out(&self, waited: &str, behind: &[String], old_sessions: usize) -> String {
        let who = if behind.is_empty() {
            format!("{old_sessions} session(s) still authenticate with an older generation")
        } else {
            format!(
                "{} instance(s) still on generation {}: {}",
                behind.len(),
                self.old,
                behind.join(", ")
            )
        };
        format!(
            "timed out after {waited}: {who}. The rotation stopped with nothing revoked: the new \
             secret (generation {new}) is in AWS secret {s} and generation {old} keeps working until \
             {exp}. Instances that read OAUTH_CLIENT_SECRET_ARN pick it up by themselves; others need \
             a restart (aws ecs update-service --cluster <CLUSTER> --service <SERVICE> \
             --force-new-deployment). Run `tether runners revoke-previous {r}` once `tether runners \
             show {r}` shows every instance on generation {new}, or the old secret stops working at {exp}",
            old = self.old,
            new = self.new,
            exp = self.expiry(),
            r = self.runner,
            s = self.secret,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped() -> Stopped {
        Stopped {
            runner: "prod-eu-1".into(),
            secret: "arn:aws:secretsmanager:us-east-1:123456789012:secret:tether/prod-AbCdEf"
                .into(),
            old: 1,
            new: 2,
            old_expires: Some(OffsetDateTime::from_unix_timestamp(1_767_326_645).expect("t")),
            reveal_until: OffsetDateTime::from_unix_timestamp(1_767_323_945).expect("t"),
        }
    }

    #[test]
    fn a_failed_write_says_the_old_secret_works_and_how_to_finish() {
        let m = stopped().write_failed("cannot write AWS secret x: AccessDeniedException: no");
        assert!(m.starts_with("cannot write AWS secret x"), "{m}");
        assert!(m.contains("nothing revoked"), "{m}");
        assert!(
            m.contains("generation 1 keeps working until 2026-01-02T04:04:05Z"),
            "{m}"
        );
        assert!(
            m.contains(
                "tether runners apply-credentials prod-eu-1 --platform aws --secret-id arn:"
            ),
            "{m}"
        );
        assert!(m.contains("before 2026-01-02T03:19:05Z"), "{m}");
        assert!(
            m.contains("tether runners revoke-previous prod-eu-1"),
            "{m}"
        );
        assert!(!m.contains('\n'));
    }

    #[test]
    fn a_timeout_names_the_instances_left_behind() {
        let m = stopped().timed_out("10m", &["host-a (generation 1)".into()], 1);
        assert!(
            m.starts_with(
                "timed out after 10m: 1 instance(s) still on generation 1: host-a (generation 1)."
            ),
            "{m}"
        );
        assert!(
            m.contains("the new secret (generation 2) is in AWS secret arn:"),
            "{m}"
        );
        assert!(
            m.contains("Run `tether runners revoke-previous prod-eu-1` once"),
            "{m}"
        );
        assert!(
            m.contains("or the old secret stops working at 2026-01-02T04:04:05Z"),
            "{m}"
        );
        let m = stopped().timed_out("10m", &[], 2);
        assert!(
            m.contains("2 session(s) still authenticate with an older generation"),
            "{m}"
        );
    }

    #[test]
    fn the_plan_shows_every_step() {
        let r: Runner = serde_json::from_value(serde_json::json!({
            "id": "r", "name": "prod-eu-1", "description": "", "platform": "aws_fargate",
            "status": "running", "status_reason": "", "status_since": "2026-01-02T03:00:00Z",
            "client_id": "tcid_x", "credential_generation": 3, "instances": [],
            "paused_until": null, "created_at": "2026-01-01T00:00:00Z", "last_seen_at": null,
            "runner_version": null, "paused_by": null
        }))
        .expect("runner");
        let text = plan_lines(&r, "arn:s", 3600, 600).join("\n");
        assert!(
            text.contains("generation 4 becomes active, generation 3 keeps working for 1h"),
            "{text}"
        );
        assert!(text.contains("wait up to 10m"), "{text}");
        assert!(text.contains("4. revoke generation 3."), "{text}");
    }
}
