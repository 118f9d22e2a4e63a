//! What to do after a refresh, per platform, for a terminal: the "Apply the new credentials" steps
//! (data shared with the web UI, in `tether_domain::apply_guide`) numbered, with commands indented
//! and a last step to check the runner came back. The secret is never part of the text: commands
//! say `<client_secret>`, and the caller prints the value once, next to them.

pub use tether_domain::apply_guide::{fill, guide, Guide, Vars};
use tether_protocol::api::Instance;

/// How a runner's live instances pick up a new secret, as one line; `None` when none is live.
pub fn reload_line(instances: &[Instance]) -> Option<String> {
    let reloading = instances
        .iter()
        .filter(|i| i.hot_reload == Some(true))
        .count();
    tether_domain::apply_guide::reload_line(reloading, instances.len())
}

/// The guide as text for a terminal: numbered steps, commands indented under them, and a last
/// step to check the runner reconnected with the new generation. `all_reload`: every live
/// instance reloads the secret by itself, so restart-only steps are left out.
pub fn render(guide: &Guide, v: &Vars<'_>, all_reload: bool) -> String {
    let mut out = format!(
        "Next steps ({}):\n{}\nReplace <client_secret> with the client_secret above and the other \
         <PLACEHOLDERS> with your deployment's names.\n\n",
        guide.platform,
        fill(guide.secret_lives, v)
    );
    let mut n = 0;
    for step in tether_domain::apply_guide::steps(guide, all_reload) {
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
    use tether_domain::apply_guide::OTHER;
    use tether_domain::Platform;

    fn text(platform: &str) -> String {
        render(
            guide(platform),
            &Vars {
                runner: "prod-eu-1",
                client_id: "tcid_abc",
                url: "http://127.0.0.1:8080",
                generation: 2,
                secret_file: None,
            },
            false,
        )
    }

    /// The commands of a platform, placeholders filled, joined into single lines.
    fn commands(platform: &str) -> Vec<String> {
        let v = Vars {
            runner: "prod-eu-1",
            client_id: "tcid_abc",
            url: "http://127.0.0.1:8080",
            generation: 2,
            secret_file: None,
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
