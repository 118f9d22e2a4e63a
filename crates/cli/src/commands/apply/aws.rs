//! `apply-credentials --platform aws`: write the new secret to AWS Secrets Manager through the
//! AWS SDK, read it back, and force a new ECS deployment so the tasks start with it.

use anyhow::{anyhow, bail, Context};
use tether_client::Client;
use tether_protocol::api::Runner;

use super::{check_back, new_secret, NewSecret, Steps};
use crate::aws::{Aws, Current};
use crate::cli::{ApplyArgs, Output};
use crate::output;

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

/// Reads the secret `secret_id` and checks it belongs to `runner` (its client id), before
/// anything is revealed or written; an error says `unchanged` (what the caller did not do).
pub async fn read_runners_secret(
    aws: &Aws,
    secret_id: &str,
    runner: &Runner,
    unchanged: &str,
) -> anyhow::Result<Current> {
    let current = aws
        .read(secret_id)
        .await
        .map_err(|e| anyhow!("{e:#}; {unchanged}"))?;
    current
        .value
        .check_client_id(&runner.client_id, secret_id)
        .map_err(|e| anyhow!("{e}; {unchanged}"))?;
    Ok(current)
}

pub(super) async fn run(
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
    let current = read_runners_secret(&aws, secret_id, runner, unchanged).await?;
    steps.done(format!(
        "Read AWS secret {}: it holds {} (version {}).",
        current.arn,
        current.value.describe(),
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
}
