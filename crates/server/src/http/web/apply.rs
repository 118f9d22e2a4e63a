//! "Apply the new credentials": per platform, where the runner's client_secret lives and the exact
//! commands that put the new one there and restart the runner, with the runner's own values filled
//! in. Data, so the Credentials tab and the reveal page show the same steps. The secret itself is
//! never put in: commands say `<client_secret>`. (The CLI's `next_steps` says the same for a
//! terminal.)

use tether_domain::Platform;

#[derive(Debug, Clone)]
pub struct ApplyGuide {
    /// The platform as the guide names it: AWS, Azure, Google Cloud, Snowflake, Local.
    pub platform: &'static str,
    pub secret_lives: String,
    pub steps: Vec<ApplyStep>,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApplyStep {
    pub what: String,
    /// Shell commands or SQL to copy, exactly.
    pub command: Option<String>,
}

fn step(what: impl Into<String>, command: Option<String>) -> ApplyStep {
    ApplyStep {
        what: what.into(),
        command,
    }
}

/// The steps for a runner named `runner` with `client_id`, connecting to `url`.
pub fn guide(platform: Platform, runner: &str, client_id: &str, url: &str) -> ApplyGuide {
    match platform {
        Platform::AwsFargate => ApplyGuide {
            platform: "AWS",
            secret_lives: format!(
                "The client_secret of {runner} is held in your AWS Secrets Manager secret as JSON \
                 {{\"client_id\", \"client_secret\"}}. The ECS task definition points at the \
                 secret's ARN, which does not change."
            ),
            steps: vec![
                step(
                    format!(
                        "Put the new client_secret into the secret of the ECS service running \
                         {runner}; keep client_id and don't change the secret's name:"
                    ),
                    Some(format!(
                        "aws secretsmanager put-secret-value --secret-id <SECRET_ARN> \\\n  \
                         --secret-string '{{\"client_id\":\"{client_id}\",\"client_secret\":\"<client_secret>\"}}'"
                    )),
                ),
                step(
                    "Restart the runner with a new deployment, so its tasks start with the new value:",
                    Some(
                        "aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment"
                            .to_owned(),
                    ),
                ),
            ],
            note: Some(
                "A runner that reads the secret itself through OAUTH_CLIENT_SECRET_ARN needs no \
                 restart: it re-reads the secret when the old one is refused and reconnects."
                    .to_owned(),
            ),
        },
        Platform::AzureContainerApp => ApplyGuide {
            platform: "Azure",
            secret_lives: format!(
                "The client_secret of {runner} is held in the Container App secret \
                 tether-client-secret, which the OAUTH_CLIENT_SECRET environment variable names."
            ),
            steps: vec![
                step(
                    "Set the Container App secret to the new client_secret:",
                    Some(
                        "az containerapp secret set --name <APP> --resource-group <RESOURCE_GROUP> \\\n  \
                         --secrets tether-client-secret=<client_secret>"
                            .to_owned(),
                    ),
                ),
                step(
                    "Restart the active revision, so the runner starts with the new value:",
                    Some(
                        "az containerapp revision restart --name <APP> --resource-group <RESOURCE_GROUP> \\\n  \
                         --revision \"$(az containerapp show --name <APP> --resource-group <RESOURCE_GROUP> \
                         --query properties.latestRevisionName --output tsv)\""
                            .to_owned(),
                    ),
                ),
            ],
            note: Some(
                "In the Azure portal: Container App > Settings > Secrets, edit \
                 tether-client-secret (the secret OAUTH_CLIENT_SECRET names), save, then restart \
                 the revision."
                    .to_owned(),
            ),
        },
        Platform::Gke => ApplyGuide {
            platform: "Google Cloud",
            secret_lives: format!(
                "The client_secret of {runner} is the Helm value config.oauthClientSecret in your \
                 values-gcp.yaml."
            ),
            steps: vec![
                step(
                    "In values-gcp.yaml, set config.oauthClientSecret to the new client_secret \
                     (config.oauthClientId stays the same):",
                    Some(format!(
                        "config:\n  oauthClientId: \"{client_id}\"\n  oauthClientSecret: \"<client_secret>\""
                    )),
                ),
                step(
                    "Apply it from the chart's directory (use your release name and namespace if \
                     you changed them); the upgrade rolls the pods, which start with the new value:",
                    Some(
                        "helm upgrade tether-runner . --namespace tether-runner -f values-gcp.yaml"
                            .to_owned(),
                    ),
                ),
            ],
            note: None,
        },
        Platform::Snowflake => ApplyGuide {
            platform: "Snowflake",
            secret_lives: format!(
                "The client_secret of {runner} is held in the Snowflake SECRET object \
                 tether_client_secret, which the service passes to the runner as \
                 OAUTH_CLIENT_SECRET."
            ),
            steps: vec![
                step(
                    "Set the secret object to the new client_secret:",
                    Some(
                        "ALTER SECRET <DATABASE>.<SCHEMA>.tether_client_secret SET SECRET_STRING = '<client_secret>';"
                            .to_owned(),
                    ),
                ),
                step(
                    "Restart the service, so the runner starts with the new value:",
                    Some(
                        "ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> SUSPEND;\n\
                         ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> RESUME;"
                            .to_owned(),
                    ),
                ),
            ],
            note: None,
        },
        Platform::Local => ApplyGuide {
            platform: "Local",
            secret_lives: format!(
                "{runner} reads its client_secret from OAUTH_CLIENT_SECRET, or from the file \
                 OAUTH_CLIENT_SECRET_FILE names."
            ),
            steps: vec![
                step(
                    "If the runner reads OAUTH_CLIENT_SECRET_FILE, write the new client_secret to \
                     that file; the runner reloads it by itself (no restart):",
                    Some("printf '%s' '<client_secret>' > <OAUTH_CLIENT_SECRET_FILE>".to_owned()),
                ),
                step(
                    "Otherwise stop the runner and start it again with the new OAUTH_CLIENT_SECRET:",
                    Some(format!(
                        "TETHER_URL={url} OAUTH_CLIENT_ID={client_id} OAUTH_CLIENT_SECRET=<client_secret> tether runner"
                    )),
                ),
            ],
            note: None,
        },
    }
}
