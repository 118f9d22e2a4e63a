//! `apply-credentials` for Azure Container Apps, GKE (Helm) and Snowflake: the exact commands for
//! the platform's own CLI, printed, or run with `--execute` (the secret goes to them on standard
//! input or in a 0600 values file, never in an argument).

use std::io::Write;

use anyhow::{anyhow, bail, Context};
use tether_client::Client;
use tether_domain::ClientSecret;
use tether_protocol::api::Runner;

use super::{active_generation, check_back, new_secret, Steps};
use crate::cli::{ApplyArgs, Output, TargetPlatform};
use crate::next_steps::Vars;
use crate::output;
use crate::platform_steps::{self, Target};

pub(super) fn target(a: &ApplyArgs, p: TargetPlatform, runner: &Runner) -> Target {
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
pub(super) async fn run(
    client: &Client,
    out: Output,
    args: &ApplyArgs,
    runner: &Runner,
    target: Target,
) -> anyhow::Result<()> {
    target.check().map_err(anyhow::Error::msg)?;
    let creds = client.credentials(&runner.id).await?;
    let generation = active_generation(&creds, runner);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_not_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("tether-no-such-tool"));
    }
}
