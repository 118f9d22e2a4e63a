//! "Apply the new credentials" for each platform: where a runner's client_secret lives and the
//! exact commands (or SQL) that put a new one there and restart the runner, as the refresh guide
//! describes them. Data, with `{runner}`, `{client_id}` and `{url}` placeholders, so the web UI and
//! the CLI show the same steps. The secret itself is never part of it: commands say
//! `<client_secret>`, and each front end shows the value once, next to them.

use crate::Platform;

/// One thing for the operator to do, with the command that does it when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub what: &'static str,
    /// May span several lines; `{client_id}`, `{runner}`, `{url}` and `{secret_file}` are filled
    /// in by [`fill`].
    pub command: Option<&'static str>,
    /// Only restarts the runner: not needed when every instance reloads the secret by itself.
    pub restart_only: bool,
}

/// How one platform keeps the secret, then the steps in order, then a note (hot reload, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guide {
    /// The platform as the guide's headings name it: AWS, Azure, Google Cloud, Snowflake, local.
    pub short: &'static str,
    pub platform: &'static str,
    pub secret_lives: &'static str,
    pub steps: &'static [Step],
    pub note: Option<&'static str>,
}

pub const AWS_FARGATE: Guide = Guide {
    short: "AWS",
    platform: "AWS ECS Fargate",
    secret_lives: "The client_secret of {runner} lives in its AWS Secrets Manager secret (JSON \
        {\"client_id\", \"client_secret\"}). The task definition points at the secret's ARN, which \
        does not change.",
    steps: &[
        Step {
            what: "Put the new client_secret into the secret under the key `client_secret`; keep \
                `client_id` and don't change the secret's name:",
            command: Some(
                "aws secretsmanager put-secret-value --secret-id <SECRET_ARN> \\\n  \
                 --secret-string '{\"client_id\":\"{client_id}\",\"client_secret\":\"<client_secret>\"}'",
            ),
            restart_only: false,
        },
        Step {
            what: "Restart the runner with a new deployment, so its tasks start with the new value:",
            command: Some(
                "aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment",
            ),
            restart_only: true,
        },
    ],
    note: Some(
        "A runner that reads the secret itself through OAUTH_CLIENT_SECRET_ARN needs nothing more \
         after step 1: it re-reads the secret when the old one is refused and reconnects.",
    ),
};

pub const AZURE_CONTAINER_APP: Guide = Guide {
    short: "Azure",
    platform: "Azure Container Apps",
    secret_lives: "The client_secret of {runner} lives in the Container App secret `tether-client-secret`, which \
        the OAUTH_CLIENT_SECRET environment variable references.",
    steps: &[
        Step {
            what: "Set the Container App secret to the new client_secret:",
            command: Some(
                "az containerapp secret set --name <APP> --resource-group <RESOURCE_GROUP> \\\n  \
                 --secrets tether-client-secret=<client_secret>",
            ),
            restart_only: false,
        },
        Step {
            what: "Restart the active revision, so the runner starts with the new value:",
            command: Some(
                "az containerapp revision restart --name <APP> --resource-group <RESOURCE_GROUP> \\\n  \
                 --revision \"$(az containerapp show --name <APP> --resource-group <RESOURCE_GROUP> \
                 --query properties.latestRevisionName --output tsv)\"",
            ),
            restart_only: true,
        },
    ],
    note: Some(
        "In the Azure portal: Container App > Settings > Secrets, edit `tether-client-secret` \
         (the secret OAUTH_CLIENT_SECRET names), save, then restart the revision.",
    ),
};

pub const GKE: Guide = Guide {
    short: "Google Cloud",
    platform: "Google Kubernetes Engine (Helm)",
    secret_lives:
        "The client_secret of {runner} is the Helm value `config.oauthClientSecret` in your \
        values-gcp.yaml.",
    steps: &[
        Step {
            what: "In values-gcp.yaml, set `config.oauthClientSecret` to the new client_secret \
                (`config.oauthClientId` stays {client_id}).",
            command: None,
            restart_only: false,
        },
        Step {
            what:
                "Apply it from the chart's directory (use your release name and namespace if you \
                changed them); the upgrade rolls the pods, which start with the new value:",
            command: Some(
                "helm upgrade tether-runner . --namespace tether-runner -f values-gcp.yaml",
            ),
            restart_only: false,
        },
    ],
    note: None,
};

pub const SNOWFLAKE: Guide = Guide {
    short: "Snowflake",
    platform: "Snowflake (Snowpark Container Services)",
    secret_lives: "The client_secret of {runner} lives in the Snowflake SECRET object `tether_client_secret`, \
        which the service passes to the runner as OAUTH_CLIENT_SECRET.",
    steps: &[
        Step {
            what: "Set the secret object to the new client_secret:",
            command: Some(
                "ALTER SECRET <DATABASE>.<SCHEMA>.tether_client_secret SET SECRET_STRING = '<client_secret>';",
            ),
            restart_only: false,
        },
        Step {
            what: "Restart the service, so the runner starts with the new value:",
            command: Some(
                "ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> SUSPEND;\n\
                 ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> RESUME;",
            ),
            restart_only: true,
        },
    ],
    note: None,
};

pub const LOCAL: Guide = Guide {
    short: "local",
    platform: "local",
    secret_lives: "{runner} reads its client_secret from OAUTH_CLIENT_SECRET, or from the file \
        OAUTH_CLIENT_SECRET_FILE names.",
    steps: &[
        Step {
            what: "If the runner reads OAUTH_CLIENT_SECRET_FILE, write the new client_secret to that \
                file (or let `tether runners apply-credentials {runner} --platform local` do it); \
                the runner reloads it by itself (no restart):",
            command: Some("printf '%s' '<client_secret>' > {secret_file}"),
            restart_only: false,
        },
        Step {
            what: "Otherwise stop the runner and start it again with the new OAUTH_CLIENT_SECRET:",
            command: Some(
                "TETHER_URL={url} OAUTH_CLIENT_ID={client_id} OAUTH_CLIENT_SECRET=<client_secret> tether runner",
            ),
            restart_only: true,
        },
    ],
    note: None,
};

/// Where nothing is known about the platform (a value newer than this CLI).
pub const OTHER: Guide = Guide {
    short: "other",
    platform: "other",
    secret_lives: "{runner} reads its client_secret from OAUTH_CLIENT_SECRET, \
        OAUTH_CLIENT_SECRET_FILE or OAUTH_CLIENT_SECRET_ARN.",
    steps: &[
        Step {
            what: "Put the new client_secret where the runner reads it.",
            command: None,
            restart_only: false,
        },
        Step {
            what:
                "Restart the runner, unless it reloads the secret by itself (file or ARN source).",
            command: None,
            restart_only: true,
        },
    ],
    note: None,
};

/// The steps for a runner's `platform` as the API names it.
pub fn guide(platform: &str) -> &'static Guide {
    match Platform::parse(platform) {
        Ok(Platform::AwsFargate) => &AWS_FARGATE,
        Ok(Platform::AzureContainerApp) => &AZURE_CONTAINER_APP,
        Ok(Platform::Gke) => &GKE,
        Ok(Platform::Snowflake) => &SNOWFLAKE,
        Ok(Platform::Local) => &LOCAL,
        Err(_) => &OTHER,
    }
}

/// What fills a guide's `{...}` placeholders.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub runner: &'a str,
    pub client_id: &'a str,
    /// The control plane's URL.
    pub url: &'a str,
    pub generation: u32,
    /// The file the runner's instances read the secret from, when they said (file source).
    pub secret_file: Option<&'a str>,
}

/// A guide text with its `{...}` placeholders filled in.
pub fn fill(template: &str, v: &Vars<'_>) -> String {
    let file = v
        .secret_file
        .map_or_else(|| "<OAUTH_CLIENT_SECRET_FILE>".to_owned(), shell_quote);
    template
        .replace("{client_id}", v.client_id)
        .replace("{runner}", v.runner)
        .replace("{url}", v.url)
        .replace("{secret_file}", &file)
}

/// `path` as one shell word (single-quoted unless it needs no quoting).
fn shell_quote(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b));
    if plain && !path.is_empty() {
        path.to_owned()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// How a runner's live instances pick up a new secret, as one line (`reloading` of `live` reload it
/// by themselves); `None` when none is live. The web UI and the CLI say the same.
pub fn reload_line(reloading: usize, live: usize) -> Option<String> {
    match (reloading, live) {
        (_, 0) => None,
        (n, m) if n == m => Some(format!(
            "All {m} live instance(s) reload the secret by themselves: put the new secret in their \
             store and they pick it up; no restart is needed."
        )),
        (0, m) => Some(format!(
            "The {m} live instance(s) read OAUTH_CLIENT_SECRET: they need a restart with the new value."
        )),
        (n, m) => Some(format!(
            "{n} of {m} live instances reload the secret by themselves; the others need a restart \
             with the new value."
        )),
    }
}

/// The steps worth showing: all of them, or without the restart-only ones when every live
/// instance reloads the secret by itself.
pub fn steps(guide: &Guide, all_reload: bool) -> impl Iterator<Item = &'static Step> {
    guide
        .steps
        .iter()
        .filter(move |s| !(all_reload && s.restart_only))
}
