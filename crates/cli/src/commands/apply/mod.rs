//! `tether runners apply-credentials`: put a runner's new client secret where its platform keeps
//! it, and restart the runner if it needs that. AWS is done here with the AWS SDK; Azure, GKE and
//! Snowflake get the exact commands, run with `--execute`. Each step is printed as it completes
//! (on standard error with `--output json`, whose standard output is one JSON summary). The secret
//! is never printed, and no error carries it.
//!
//! This module holds what every platform shares (the steps printer, which platform, the new
//! secret); `aws` writes Secrets Manager and restarts ECS, `tools` runs or prints the Azure, GKE
//! and Snowflake commands, `local` writes the file a local runner watches.

mod aws;
mod local;
mod tools;

pub use aws::{read_runners_secret, restart_ecs, write_and_verify, Restart};

use std::io::{Read, Write};

use anyhow::{anyhow, bail, Context};
use tether_client::{Client, REVEAL_WINDOW_CLOSED};
use tether_domain::ClientSecret;
use tether_protocol::api::{Credentials, Runner};

use crate::cli::{ApplyArgs, Output, TargetPlatform};
use crate::output;

/// Prints numbered steps as they complete.
#[derive(Debug)]
pub struct Steps {
    n: usize,
    to_stderr: bool,
}

impl Steps {
    pub fn new(out: Output) -> Self {
        Self {
            n: 0,
            to_stderr: out == Output::Json,
        }
    }

    pub fn done(&mut self, text: impl AsRef<str>) {
        self.n += 1;
        self.line(&format!("{}. {}", self.n, text.as_ref()));
    }

    /// A line under the current step (progress, a detail).
    pub fn detail(&self, text: impl AsRef<str>) {
        self.line(&format!("   {}", text.as_ref()));
    }

    pub fn line(&self, text: &str) {
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}

/// `--platform`, or the runner's registered one.
pub fn platform(given: Option<TargetPlatform>, runner: &Runner) -> anyhow::Result<TargetPlatform> {
    let registered = match runner.platform.as_str() {
        "aws_fargate" => Some(TargetPlatform::Aws),
        "azure_container_app" => Some(TargetPlatform::Azure),
        "gke" => Some(TargetPlatform::Gcp),
        "snowflake" => Some(TargetPlatform::Snowflake),
        "local" => Some(TargetPlatform::Local),
        _ => None,
    };
    match (given, registered) {
        (Some(p), Some(r)) if p != r => {
            eprintln!(
                "note: runner '{}' is registered with platform {}; applying for --platform {} as asked.",
                runner.name,
                runner.platform,
                platform_flag(p)
            );
            Ok(p)
        }
        (Some(p), _) => Ok(p),
        (None, Some(r)) => Ok(r),
        (None, None) => bail!(
            "runner '{}' is registered with platform {}: pass --platform aws, azure, gcp, snowflake or local",
            runner.name,
            runner.platform
        ),
    }
}

fn platform_flag(p: TargetPlatform) -> &'static str {
    match p {
        TargetPlatform::Aws => "aws",
        TargetPlatform::Azure => "azure",
        TargetPlatform::Gcp => "gcp",
        TargetPlatform::Snowflake => "snowflake",
        TargetPlatform::Local => "local",
    }
}

/// Refuses flags that mean nothing on the chosen platform, so a typo is not silently ignored.
fn check_flags(a: &ApplyArgs, p: TargetPlatform) -> anyhow::Result<()> {
    use TargetPlatform::{Aws, Azure, Gcp, Local, Snowflake};
    let flags: [(&str, bool, &[TargetPlatform]); 14] = [
        (
            "--secret-id",
            a.secret_id.is_some(),
            &[Aws, Azure, Snowflake],
        ),
        ("--region", a.region.is_some(), &[Aws]),
        ("--cluster", a.cluster.is_some(), &[Aws]),
        ("--service", a.service.is_some(), &[Aws, Snowflake]),
        ("--hot-reload", a.hot_reload, &[Aws]),
        ("--app", a.app.is_some(), &[Azure]),
        ("--resource-group", a.resource_group.is_some(), &[Azure]),
        ("--release", a.release.is_some(), &[Gcp]),
        ("--namespace", a.namespace.is_some(), &[Gcp]),
        ("--chart", a.chart.is_some(), &[Gcp]),
        ("--values", a.values.is_some(), &[Gcp]),
        ("--connection", a.connection.is_some(), &[Snowflake]),
        ("--execute", a.execute, &[Azure, Gcp, Snowflake]),
        ("--secret-file", a.secret_file.is_some(), &[Local]),
    ];
    for (flag, used, on) in flags {
        if used && !on.contains(&p) {
            let names: Vec<&str> = on.iter().map(|p| platform_flag(*p)).collect();
            let extra = if flag == "--execute" {
                " (on aws the steps are always carried out)"
            } else {
                ""
            };
            bail!(
                "{flag} does not apply to --platform {}: it is for {}{extra}",
                platform_flag(p),
                names.join(", ")
            );
        }
    }
    if p == Aws && a.service.is_some() && a.cluster.is_none() {
        bail!("--service needs --cluster on aws (the ECS cluster the service runs in)");
    }
    if ![Aws, Local].contains(&p) && a.secret_stdin && !a.execute {
        bail!(
            "--secret-stdin needs --execute on {}: without it only the steps are printed",
            platform_flag(p)
        );
    }
    Ok(())
}

pub async fn run(client: &Client, out: Output, args: ApplyArgs) -> anyhow::Result<()> {
    let runner = client.get_runner(&args.runner).await?;
    let p = platform(args.platform, &runner)?;
    check_flags(&args, p)?;
    match p {
        TargetPlatform::Aws => aws::run(client, out, &args, &runner).await,
        TargetPlatform::Local => local::run(client, out, &args, &runner).await,
        _ => {
            tools::run(
                client,
                out,
                &args,
                &runner,
                tools::target(&args, p, &runner),
            )
            .await
        }
    }
}

/// The runner's active credential generation in `creds`.
fn active_generation(creds: &Credentials, runner: &Runner) -> u32 {
    creds
        .generations
        .iter()
        .find(|g| g.state == "active")
        .map_or(runner.credential_generation, |g| g.generation)
}

/// The new client secret: from standard input, or the reveal endpoint (the last refresh's).
pub struct NewSecret {
    pub secret: ClientSecret,
    pub generation: u32,
    pub from: String,
}

pub async fn new_secret(
    client: &Client,
    runner: &Runner,
    stdin: bool,
) -> anyhow::Result<NewSecret> {
    if stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the client_secret from standard input")?;
        let secret = ClientSecret::parse(text.trim())
            .map_err(|e| anyhow!("the client_secret on standard input {}", e.0))?;
        let creds = client.credentials(&runner.id).await?;
        let generation = active_generation(&creds, runner);
        return Ok(NewSecret {
            secret,
            generation,
            from: "standard input".to_owned(),
        });
    }
    let revealed = match client.reveal_credentials(&runner.id).await {
        Err(e) if e.code() == Some(REVEAL_WINDOW_CLOSED) => bail!(
            "the reveal window of runner '{}''s newest client_secret has closed: refresh again \
             (`tether runners refresh-credentials {}`) and apply within the window, or pass the \
             secret with --secret-stdin",
            runner.name,
            runner.name
        ),
        other => other.context("revealing the new client_secret")?,
    };
    if revealed.client_id != runner.client_id {
        bail!(
            "the control plane revealed a secret for client_id {}, not runner '{}''s {}",
            revealed.client_id,
            runner.name,
            runner.client_id
        );
    }
    let secret = ClientSecret::parse(&revealed.client_secret)
        .map_err(|e| anyhow!("the revealed client_secret {}", e.0))?;
    Ok(NewSecret {
        secret,
        generation: revealed.generation,
        from: format!(
            "the reveal endpoint (open until {})",
            output::time(revealed.reveal_until)
        ),
    })
}

/// The last line of an apply: how to see the runner came back with the new generation.
fn check_back(runner: &str, generation: u32) -> String {
    format!(
        "Done. Check that it is back: `tether runners show {runner}` shows it running, with its \
         instances on generation {generation}."
    )
}
