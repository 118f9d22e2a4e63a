//! `tether runners apply-credentials`: put a runner's new client secret where its platform keeps
//! it, and restart the runner if it needs that. AWS is done here with the AWS SDK; Azure, GKE and
//! Snowflake get the exact commands, run with `--execute`. Each step is printed as it completes
//! (on standard error with `--output json`, whose standard output is one JSON summary). The secret
//! is never printed, and no error carries it.

use std::io::{Read, Write};

use anyhow::{anyhow, bail, Context};
use tether_client::{Client, REVEAL_WINDOW_CLOSED};
use tether_domain::ClientSecret;
use tether_protocol::api::Runner;

use crate::aws::{Aws, Current};
use crate::cli::{ApplyArgs, Output, TargetPlatform};
use crate::next_steps::Vars;
use crate::output;
use crate::platform_steps::{self, Target};

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
        TargetPlatform::Aws => aws(client, out, &args, &runner).await,
        TargetPlatform::Local => super::apply_local::run(client, out, &args, &runner).await,
        _ => other(client, out, &args, &runner, target(&args, p, &runner)).await,
    }
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
        let generation = creds
            .generations
            .iter()
            .find(|g| g.state == "active")
            .map_or(runner.credential_generation, |g| g.generation);
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

/// Where the secret went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub secret_arn: String,
    pub version_id: String,
    pub shape: &'static str,
}

/// Writes the new secret over `current` and reads it back.
pub async fn write_and_verify(
    aws: &Aws,
    secret_id: &str,
    runner: &Runner,
    current: &Current,
    new: &NewSecret,
    steps: &mut Steps,
) -> anyhow::Result<Written> {
    let value = current
        .value
        .with_new_secret(&runner.client_id, &new.secret);
    let version_id = aws.write(secret_id, &value).await?;
    let kept = match &value {
        crate::aws::StoredSecret::Json(map) => {
            let others = map.len().saturating_sub(2);
            let others = if others > 0 {
                format!(" and {others} other key(s)")
            } else {
                String::new()
            };
            format!(
                "as JSON: client_secret replaced, client_id {}{others} kept",
                runner.client_id
            )
        }
        crate::aws::StoredSecret::Plain(_) => "as a plain string, as it was".to_owned(),
    };
    steps.done(format!(
        "Wrote generation {}'s client_secret into AWS secret {} {kept} (version {version_id}).",
        new.generation, current.arn
    ));
    let back = aws
        .read(secret_id)
        .await
        .context("reading the secret back")?;
    if !back.value.holds(&runner.client_id, &new.secret) {
        bail!(
            "read AWS secret {} back after writing it, and its current version {} does not hold \
             the new client_secret (another writer?): check the secret's versions",
            current.arn,
            back.version_id
        );
    }
    steps.done(format!(
        "Read it back: the current version ({}) holds generation {}'s client_secret.",
        back.version_id, new.generation
    ));
    Ok(Written {
        secret_arn: back.arn,
        version_id: back.version_id,
        shape: value.shape(),
    })
}

/// What happened to the runner's tasks after the secret changed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "restart", rename_all = "snake_case")]
pub enum Restart {
    /// `--hot-reload`: nothing was asked of ECS.
    HotReloadDeclared,
    /// The task definition sets OAUTH_CLIENT_SECRET_ARN.
    HotReloadDetected {
        task_definition: String,
        container: String,
    },
    NewDeployment {
        service: String,
        deployment: Option<String>,
    },
    /// No ECS service named.
    NotAsked,
}

/// Redeploys the ECS service unless its task definition reads the secret itself.
pub async fn restart_ecs(
    aws: &Aws,
    cluster: &str,
    service: &str,
    secret_arn: &str,
    steps: &mut Steps,
) -> anyhow::Result<Restart> {
    let svc = aws.service(cluster, service).await?;
    if let Some(hot) = aws.hot_reload(&svc.task_definition).await? {
        let family = svc
            .task_definition
            .rsplit('/')
            .next()
            .unwrap_or(&svc.task_definition);
        steps.done(format!(
            "No restart needed: ECS service {service} runs task definition {family}, whose container \
             '{}' reads the secret itself (OAUTH_CLIENT_SECRET_ARN); the runner picks the new one up \
             on its next read (at once when the old one is refused).",
            hot.container
        ));
        if !same_secret(&hot.secret_arn, secret_arn) {
            steps.detail(format!(
                "Note: that container reads {}, not {secret_arn}: check that it is the same secret.",
                hot.secret_arn
            ));
        }
        return Ok(Restart::HotReloadDetected {
            task_definition: svc.task_definition,
            container: hot.container,
        });
    }
    let deployment = aws.force_new_deployment(cluster, service).await?;
    let ids = match (&deployment, &svc.deployment) {
        (Some(new), Some(old)) if new != old => format!(" ({new}, replacing {old})"),
        (Some(new), _) => format!(" ({new})"),
        _ => String::new(),
    };
    steps.done(format!(
        "Forced a new deployment of ECS service {service} in cluster {cluster}{ids}: its tasks are \
         replaced by ones that start with the new secret."
    ));
    Ok(Restart::NewDeployment {
        service: svc.arn,
        deployment,
    })
}

/// Whether two secret ids (ARN or name) plausibly name the same secret.
fn same_secret(a: &str, b: &str) -> bool {
    let name = |s: &str| -> String {
        // arn:aws:secretsmanager:region:account:secret:NAME-6RANDOM
        match s.strip_prefix("arn:") {
            Some(_) => {
                let tail = s.splitn(7, ':').nth(6).unwrap_or(s);
                match tail.rsplit_once('-') {
                    Some((n, suffix)) if suffix.len() == 6 => n.to_owned(),
                    _ => tail.to_owned(),
                }
            }
            None => s.to_owned(),
        }
    };
    a == b || name(a) == name(b)
}

async fn aws(
    client: &Client,
    out: Output,
    args: &ApplyArgs,
    runner: &Runner,
) -> anyhow::Result<()> {
    let secret_id = args.secret_id.as_deref().ok_or_else(|| {
        anyhow!("--platform aws needs --secret-id: the ARN or name of the runner's Secrets Manager secret")
    })?;
    let aws = Aws::new(args.region.as_deref()).await;
    let mut steps = Steps::new(out);
    steps.line(&format!(
        "Applying the new client_secret of runner '{}' to AWS secret {secret_id}:",
        runner.name
    ));
    // Look at the target before revealing anything: a wrong --secret-id changes nothing.
    let unchanged =
        "nothing was written: check --secret-id (the ARN or name of the runner's secret) and your AWS credentials";
    let current = aws
        .read(secret_id)
        .await
        .map_err(|e| anyhow!("{e:#}; {unchanged}"))?;
    current
        .value
        .check_client_id(&runner.client_id, secret_id)
        .map_err(|e| anyhow!("{e}; {unchanged}"))?;
    steps.done(format!(
        "Read AWS secret {}: it holds {}{} (version {}).",
        current.arn,
        current.value.shape(),
        current
            .value
            .client_id()
            .map(|id| format!(" with this runner's client_id {id}"))
            .unwrap_or_default(),
        current.version_id
    ));
    let new = new_secret(client, runner, args.secret_stdin).await?;
    steps.done(format!(
        "Took generation {}'s client_secret from {}.",
        new.generation, new.from
    ));
    let written = write_and_verify(&aws, secret_id, runner, &current, &new, &mut steps).await?;
    let restart = match (&args.cluster, &args.service) {
        _ if args.hot_reload => {
            steps.done(
                "No restart needed (--hot-reload): the runner reads the secret itself \
                 (OAUTH_CLIENT_SECRET_ARN) and picks the new one up on its next read.",
            );
            Restart::HotReloadDeclared
        }
        (Some(cluster), Some(service)) => {
            restart_ecs(&aws, cluster, service, &written.secret_arn, &mut steps).await?
        }
        _ => {
            steps.line(
                "No --cluster/--service given, so nothing was restarted. A runner that reads \
                 OAUTH_CLIENT_SECRET_ARN picks the new secret up by itself; one that gets it from ECS \
                 at task start needs a new deployment: aws ecs update-service --cluster <CLUSTER> \
                 --service <SERVICE> --force-new-deployment",
            );
            Restart::NotAsked
        }
    };
    steps.line(&check_back(&runner.name, new.generation));
    if out == Output::Json {
        output::json(&serde_json::json!({
            "runner": runner.name,
            "platform": "aws",
            "generation": new.generation,
            "secret_arn": written.secret_arn,
            "version_id": written.version_id,
            "format": written.shape,
            "restart": restart,
        }))?;
    }
    Ok(())
}

fn target(a: &ApplyArgs, p: TargetPlatform, runner: &Runner) -> Target {
    match p {
        TargetPlatform::Azure => Target::Azure {
            app: a.app.clone().unwrap_or_else(|| runner.name.clone()),
            resource_group: a.resource_group.clone(),
            secret: a
                .secret_id
                .clone()
                .unwrap_or_else(|| platform_steps::AZURE_SECRET.to_owned()),
        },
        TargetPlatform::Gcp => Target::Gke {
            release: a
                .release
                .clone()
                .unwrap_or_else(|| platform_steps::HELM_RELEASE.to_owned()),
            namespace: a
                .namespace
                .clone()
                .unwrap_or_else(|| platform_steps::HELM_NAMESPACE.to_owned()),
            chart: a
                .chart
                .clone()
                .unwrap_or_else(|| platform_steps::HELM_CHART.to_owned()),
            values: a
                .values
                .clone()
                .unwrap_or_else(|| platform_steps::HELM_VALUES.to_owned()),
        },
        // Aws and Local never get here; Snowflake is the rest.
        TargetPlatform::Snowflake | TargetPlatform::Aws | TargetPlatform::Local => {
            Target::Snowflake {
                secret: a
                    .secret_id
                    .clone()
                    .unwrap_or_else(|| platform_steps::SNOWFLAKE_SECRET.to_owned()),
                service: a
                    .service
                    .clone()
                    .unwrap_or_else(|| platform_steps::SNOWFLAKE_SERVICE.to_owned()),
                connection: a.connection.clone(),
            }
        }
    }
}

/// Azure, GKE, Snowflake: print the steps, or with --execute run them.
async fn other(
    client: &Client,
    out: Output,
    args: &ApplyArgs,
    runner: &Runner,
    target: Target,
) -> anyhow::Result<()> {
    target.check().map_err(anyhow::Error::msg)?;
    let creds = client.credentials(&runner.id).await?;
    let generation = creds
        .generations
        .iter()
        .find(|g| g.state == "active")
        .map_or(runner.credential_generation, |g| g.generation);
    let vars = Vars {
        runner: &runner.name,
        client_id: &runner.client_id,
        url: client.base_url(),
        generation,
        secret_file: runner.secret_file.as_deref(),
    };
    let plan = platform_steps::plan(&target, &vars);
    if !args.execute {
        if out == Output::Json {
            return output::json(&serde_json::json!({
                "runner": runner.name,
                "platform": plan.platform,
                "generation": generation,
                "steps": plan.steps.iter().map(|s| serde_json::json!({"what": s.what, "command": s.command})).collect::<Vec<_>>(),
                "note": plan.note,
            }));
        }
        println!(
            "Apply generation {generation} of runner '{}' on {}:",
            runner.name, plan.platform
        );
        print!("{}", platform_steps::render(&plan, &vars));
        let reveal = match creds.reveal_until {
            _ if creds.last_refreshed_at.is_none() => format!(
                "the credentials of '{}' were never refreshed, so make one first with `tether \
                 runners refresh-credentials {}`",
                runner.name, runner.name
            ),
            Some(t) if t > time::OffsetDateTime::now_utc() => format!(
                "`tether runners reveal {}` shows it until {}",
                runner.name,
                output::time(t)
            ),
            _ => format!(
                "its reveal window has closed, so only a new refresh (`tether runners \
                 refresh-credentials {}`) makes one you can see",
                runner.name
            ),
        };
        println!();
        println!(
            "Replace {} with the new client_secret: {reveal}. Or add --execute to run these steps \
             with it (needs `{}` on PATH).",
            platform_steps::PLACEHOLDER,
            target.tool()
        );
        return Ok(());
    }
    let tool = target.tool();
    if !on_path(tool) {
        bail!(
            "--execute needs `{tool}`, which is not on PATH: install it, or run the steps yourself \
             (the same command without --execute prints them)"
        );
    }
    if let Target::Azure {
        resource_group: None,
        ..
    } = &target
    {
        bail!("--execute on azure needs --resource-group (the Container App's resource group)");
    }
    let mut steps = Steps::new(out);
    steps.line(&format!(
        "Applying the new client_secret of runner '{}' on {}:",
        runner.name, plan.platform
    ));
    let new = new_secret(client, runner, args.secret_stdin).await?;
    steps.done(format!(
        "Took generation {}'s client_secret from {}.",
        new.generation, new.from
    ));
    match &target {
        Target::Azure {
            app,
            resource_group,
            secret,
        } => {
            let rg = resource_group.as_deref().unwrap_or_default();
            let set = platform_steps::azure_secret_set(app, rg, secret);
            run_tool(&platform_steps::argv(&set, &new.secret), &new.secret).await?;
            steps.done(format!(
                "Set the Container App secret: {}",
                platform_steps::shown(&set)
            ));
            let show = platform_steps::azure_latest_revision(app, rg);
            let revision = run_tool(&show, &new.secret).await?.trim().to_owned();
            if revision.is_empty() {
                bail!(
                    "`{}` named no revision: restart the Container App's active revision yourself",
                    platform_steps::shell_line(&show)
                );
            }
            let restart = platform_steps::azure_revision_restart(app, rg, &revision);
            run_tool(&restart, &new.secret).await?;
            steps.done(format!(
                "Restarted revision {revision}: {}",
                platform_steps::shell_line(&restart)
            ));
        }
        Target::Gke {
            release,
            namespace,
            chart,
            values,
        } => {
            edit_values(values, &new.secret)?;
            steps.done(format!("Set config.oauthClientSecret in {values}."));
            let upgrade = platform_steps::helm_upgrade(release, chart, namespace, values);
            run_tool(&upgrade, &new.secret).await?;
            steps.done(format!(
                "Upgraded the release, which rolls the pods: {}",
                platform_steps::shell_line(&upgrade)
            ));
        }
        Target::Snowflake {
            secret,
            service,
            connection,
        } => {
            let mut file = tempfile::Builder::new()
                .prefix("tether-apply-")
                .suffix(".sql")
                .tempfile()
                .context("creating a private temporary file for the SQL")?;
            file.write_all(
                platform_steps::snowflake_sql(secret, service, new.secret.expose()).as_bytes(),
            )
            .context("writing the SQL")?;
            file.flush().context("writing the SQL")?;
            let path = file.path().display().to_string();
            let cmd = platform_steps::snowsql(connection.as_deref(), &path);
            run_tool(&cmd, &new.secret).await?;
            drop(file);
            steps.done(format!(
                "Ran the SQL with snowsql: ALTER SECRET {secret} SET SECRET_STRING = '{}'; \
                 ALTER SERVICE {service} SUSPEND; ALTER SERVICE {service} RESUME;",
                platform_steps::PLACEHOLDER
            ));
        }
    }
    steps.line(&check_back(&runner.name, new.generation));
    if out == Output::Json {
        output::json(&serde_json::json!({
            "runner": runner.name,
            "platform": plan.platform,
            "generation": new.generation,
            "executed": true,
        }))?;
    }
    Ok(())
}

/// Sets the secret in the Helm values file, keeping the file's other lines and permissions.
fn edit_values(path: &str, secret: &ClientSecret) -> anyhow::Result<()> {
    let p = std::path::Path::new(path);
    let text = std::fs::read_to_string(p).map_err(|e| {
        anyhow!("cannot read the values file {path} ({e}): pass --values with the file the release was installed with")
    })?;
    let edited = platform_steps::set_values_secret(&text, secret)
        .map_err(|why| anyhow!("the values file {path} {why}"))?;
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {path}"))?;
    tmp.write_all(edited.as_bytes())
        .with_context(|| format!("writing {path}"))?;
    let perms = std::fs::metadata(p)
        .with_context(|| format!("writing {path}"))?
        .permissions();
    std::fs::set_permissions(tmp.path(), perms).with_context(|| format!("writing {path}"))?;
    tmp.persist(p)
        .map_err(|e| anyhow!("writing {path}: {}", e.error))?;
    Ok(())
}

/// Whether a program can be found on PATH.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Runs a program to completion; returns its standard output. A failure is one line naming the
/// command (the secret shown as `<client_secret>`) and the last line the program wrote to stderr.
async fn run_tool(argv: &[String], secret: &ClientSecret) -> anyhow::Result<String> {
    let redact = |s: &str| s.replace(secret.expose(), platform_steps::PLACEHOLDER);
    let shown = redact(&platform_steps::shell_line(argv));
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| anyhow!("cannot run `{shown}`: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", redact(l.trim())))
            .unwrap_or_default();
        bail!(
            "`{shown}` failed ({}){last}",
            out.status.code().map_or_else(
                || "killed by a signal".to_owned(),
                |c| format!("exit code {c}")
            )
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last line of an apply: how to see the runner came back with the new generation.
fn check_back(runner: &str, generation: u32) -> String {
    format!(
        "Done. Check that it is back: `tether runners show {runner}` shows it running, with its \
         instances on generation {generation}."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids_name_the_same_secret_as_arn_or_name() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tether-runner/prod-AbCdEf";
        assert!(same_secret(arn, arn));
        assert!(same_secret(arn, "tether-runner/prod"));
        assert!(!same_secret(arn, "tether-runner/other"));
    }

    #[test]
    fn a_missing_tool_is_not_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("tether-no-such-tool"));
    }
}
