//! What to do after a refresh, per platform: where the runner's client_secret lives and how the
//! runner is restarted to read it (the "Apply the new credentials" steps of the guide). Kept as
//! data so other front ends can show the same steps. The secret itself is never put into the text:
//! commands say `<client_secret>`, and the caller prints the value once, next to them.

use tether_domain::Platform;

/// One thing for the operator to do, with the command that does it when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub what: &'static str,
    /// May span several lines; `{client_id}`, `{runner}` and `{url}` are filled in by [`render`].
    pub command: Option<&'static str>,
}

/// How one platform keeps the secret, then the steps in order, then a note (hot reload, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guide {
    pub platform: &'static str,
    pub secret_lives: &'static str,
    pub steps: &'static [Step],
    pub note: Option<&'static str>,
}

const AWS_FARGATE: Guide = Guide {
    platform: "AWS ECS Fargate",
    secret_lives: "The client_secret lives in the runner's AWS Secrets Manager secret (JSON \
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
        },
        Step {
            what: "Restart the runner with a new deployment, so its tasks start with the new value:",
            command: Some(
                "aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment",
            ),
        },
    ],
    note: Some(
        "A runner that reads the secret itself through OAUTH_CLIENT_SECRET_ARN needs nothing more \
         after step 1: it re-reads the secret when the old one is refused and reconnects.",
    ),
};

const AZURE_CONTAINER_APP: Guide = Guide {
    platform: "Azure Container Apps",
    secret_lives: "The client_secret lives in the Container App secret `tether-client-secret`, which \
        the OAUTH_CLIENT_SECRET environment variable references.",
    steps: &[
        Step {
            what: "Set the Container App secret to the new client_secret:",
            command: Some(
                "az containerapp secret set --name <APP> --resource-group <RESOURCE_GROUP> \\\n  \
                 --secrets tether-client-secret=<client_secret>",
            ),
        },
        Step {
            what: "Restart the active revision, so the runner starts with the new value:",
            command: Some(
                "az containerapp revision restart --name <APP> --resource-group <RESOURCE_GROUP> \\\n  \
                 --revision \"$(az containerapp show --name <APP> --resource-group <RESOURCE_GROUP> \
                 --query properties.latestRevisionName --output tsv)\"",
            ),
        },
    ],
    note: Some(
        "In the Azure portal: Container App > Settings > Secrets, edit `tether-client-secret` \
         (the secret OAUTH_CLIENT_SECRET names), save, then restart the revision.",
    ),
};

const GKE: Guide = Guide {
    platform: "Google Kubernetes Engine (Helm)",
    secret_lives: "The client_secret is the Helm value `config.oauthClientSecret` in your \
        values-gcp.yaml.",
    steps: &[
        Step {
            what: "In values-gcp.yaml, set `config.oauthClientSecret` to the new client_secret \
                (`config.oauthClientId` stays {client_id}).",
            command: None,
        },
        Step {
            what:
                "Apply it from the chart's directory (use your release name and namespace if you \
                changed them); the upgrade rolls the pods, which start with the new value:",
            command: Some(
                "helm upgrade tether-runner . --namespace tether-runner -f values-gcp.yaml",
            ),
        },
    ],
    note: None,
};

const SNOWFLAKE: Guide = Guide {
    platform: "Snowflake (Snowpark Container Services)",
    secret_lives: "The client_secret lives in the Snowflake SECRET object `tether_client_secret`, \
        which the service passes to the runner as OAUTH_CLIENT_SECRET.",
    steps: &[
        Step {
            what: "Set the secret object to the new client_secret:",
            command: Some(
                "ALTER SECRET <DATABASE>.<SCHEMA>.tether_client_secret SET SECRET_STRING = '<client_secret>';",
            ),
        },
        Step {
            what: "Restart the service, so the runner starts with the new value:",
            command: Some(
                "ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> SUSPEND;\n\
                 ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> RESUME;",
            ),
        },
    ],
    note: None,
};

const LOCAL: Guide = Guide {
    platform: "local",
    secret_lives: "The runner reads the client_secret from OAUTH_CLIENT_SECRET, or from the file \
        OAUTH_CLIENT_SECRET_FILE names.",
    steps: &[
        Step {
            what: "If the runner reads OAUTH_CLIENT_SECRET_FILE, write the new client_secret to that \
                file; the runner reloads it by itself (no restart):",
            command: Some("printf '%s' '<client_secret>' > <OAUTH_CLIENT_SECRET_FILE>"),
        },
        Step {
            what: "Otherwise stop the runner and start it again with the new OAUTH_CLIENT_SECRET:",
            command: Some(
                "TETHER_URL={url} OAUTH_CLIENT_ID={client_id} OAUTH_CLIENT_SECRET=<client_secret> tether runner",
            ),
        },
    ],
    note: None,
};

/// Where nothing is known about the platform (a value newer than this CLI).
const OTHER: Guide = Guide {
    platform: "other",
    secret_lives: "The runner reads the client_secret from OAUTH_CLIENT_SECRET, \
        OAUTH_CLIENT_SECRET_FILE or OAUTH_CLIENT_SECRET_ARN.",
    steps: &[
        Step {
            what: "Put the new client_secret where the runner reads it.",
            command: None,
        },
        Step {
            what:
                "Restart the runner, unless it reloads the secret by itself (file or ARN source).",
            command: None,
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
pub struct Vars<'a> {
    pub runner: &'a str,
    pub client_id: &'a str,
    /// The control plane's URL.
    pub url: &'a str,
    pub generation: u32,
}

/// A guide text with its `{...}` placeholders filled in.
pub fn fill(template: &str, v: &Vars<'_>) -> String {
    template
        .replace("{client_id}", v.client_id)
        .replace("{runner}", v.runner)
        .replace("{url}", v.url)
}

/// The guide as text for a terminal: numbered steps, commands indented under them, and a last
/// step to check the runner reconnected with the new generation.
pub fn render(guide: &Guide, v: &Vars<'_>) -> String {
    let mut out = format!(
        "Next steps ({}):\n{}\nReplace <client_secret> with the client_secret above and the other \
         <PLACEHOLDERS> with your deployment's names.\n\n",
        guide.platform,
        fill(guide.secret_lives, v)
    );
    let mut n = 0;
    for step in guide.steps {
        n += 1;
        out.push_str(&format!("  {n}. {}\n", fill(step.what, v)));
        if let Some(command) = step.command {
            for line in fill(command, v).lines() {
                out.push_str(&format!("       {line}\n"));
            }
        }
    }
    out.push_str(&format!(
        "  {}. Check that it is back: `tether runners show {}` shows it running, with its \
         instances on generation {}.\n",
        n + 1,
        v.runner,
        v.generation
    ));
    if let Some(note) = guide.note {
        out.push_str(&format!("\n{}\n", fill(note, v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(platform: &str) -> String {
        render(
            guide(platform),
            &Vars {
                runner: "prod-eu-1",
                client_id: "tcid_abc",
                url: "http://127.0.0.1:8080",
                generation: 2,
            },
        )
    }

    /// The commands of a platform, placeholders filled, joined into single lines.
    fn commands(platform: &str) -> Vec<String> {
        let v = Vars {
            runner: "prod-eu-1",
            client_id: "tcid_abc",
            url: "http://127.0.0.1:8080",
            generation: 2,
        };
        guide(platform)
            .steps
            .iter()
            .filter_map(|s| s.command)
            .map(|c| fill(c, &v).replace("\\\n  ", ""))
            .collect()
    }

    #[test]
    fn aws_fargate_updates_the_secrets_manager_json_then_redeploys() {
        assert_eq!(
            commands("aws_fargate"),
            [
                "aws secretsmanager put-secret-value --secret-id <SECRET_ARN> --secret-string \
                 '{\"client_id\":\"tcid_abc\",\"client_secret\":\"<client_secret>\"}'",
                "aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment",
            ]
        );
        let t = text("aws_fargate");
        assert!(
            t.contains("Secrets Manager") && t.contains("`client_secret`"),
            "{t}"
        );
        assert!(t.contains("OAUTH_CLIENT_SECRET_ARN"), "hot reload: {t}");
    }

    #[test]
    fn azure_sets_the_container_app_secret_then_restarts_the_revision() {
        assert_eq!(
            commands("azure_container_app"),
            [
                "az containerapp secret set --name <APP> --resource-group <RESOURCE_GROUP> \
                 --secrets tether-client-secret=<client_secret>",
                "az containerapp revision restart --name <APP> --resource-group <RESOURCE_GROUP> \
                 --revision \"$(az containerapp show --name <APP> --resource-group <RESOURCE_GROUP> \
                 --query properties.latestRevisionName --output tsv)\"",
            ]
        );
        assert!(text("azure_container_app").contains("OAUTH_CLIENT_SECRET"));
    }

    #[test]
    fn gke_edits_values_gcp_then_helm_upgrades() {
        assert_eq!(
            commands("gke"),
            ["helm upgrade tether-runner . --namespace tether-runner -f values-gcp.yaml"]
        );
        let t = text("gke");
        assert!(
            t.contains("`config.oauthClientSecret`") && t.contains("values-gcp.yaml"),
            "{t}"
        );
        assert!(t.contains("`config.oauthClientId` stays tcid_abc"), "{t}");
    }

    #[test]
    fn snowflake_alters_the_secret_then_suspends_and_resumes_the_service() {
        assert_eq!(
            commands("snowflake"),
            [
                "ALTER SECRET <DATABASE>.<SCHEMA>.tether_client_secret SET SECRET_STRING = '<client_secret>';",
                "ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> SUSPEND;\n\
                 ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> RESUME;",
            ]
        );
    }

    #[test]
    fn local_writes_the_file_or_restarts_with_the_new_value() {
        assert_eq!(
            commands("local"),
            [
                "printf '%s' '<client_secret>' > <OAUTH_CLIENT_SECRET_FILE>",
                "TETHER_URL=http://127.0.0.1:8080 OAUTH_CLIENT_ID=tcid_abc \
                 OAUTH_CLIENT_SECRET=<client_secret> tether runner",
            ]
        );
        let t = text("local");
        assert!(
            t.contains("OAUTH_CLIENT_SECRET_FILE") && t.contains("no restart"),
            "{t}"
        );
    }

    #[test]
    fn every_platform_has_its_own_guide_and_a_check_step() {
        let mut seen = Vec::new();
        for p in Platform::ALL {
            let g = guide(p.as_str());
            assert_ne!(g, &OTHER, "{p}");
            assert!(!seen.contains(&g.platform), "{p} shares a guide");
            seen.push(g.platform);
            let t = text(p.as_str());
            assert!(t.starts_with("Next steps ("), "{t}");
            assert!(
                t.contains("`tether runners show prod-eu-1`") && t.contains("generation 2"),
                "{t}"
            );
            assert!(
                !t.contains('{') || p == Platform::AwsFargate,
                "unfilled: {t}"
            );
            assert!(!t.contains("{client_id}") && !t.contains("{url}"), "{t}");
        }
        assert_eq!(guide("mainframe"), &OTHER);
        assert!(text("mainframe").contains("Restart the runner"));
    }

    #[test]
    fn commands_are_indented_under_their_step() {
        let t = text("snowflake");
        assert!(t.contains(
            "  1. Set the secret object to the new client_secret:\n       ALTER SECRET "
        ));
        assert!(t.contains(
            "       ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> SUSPEND;\n       ALTER SERVICE"
        ));
    }
}
