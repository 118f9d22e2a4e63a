//! docs/platforms: each guide has the deploy, apply-the-new-credentials and no-restart sections,
//! follows the product guide's steps for its platform, and links only to files that exist.

use crate::support::{read, repo_root};

const GUIDES: [(&str, &str); 4] = [
    ("aws", "## Apply the new credentials (AWS)"),
    ("azure", "## Apply the new credentials (Azure)"),
    ("gcp", "## Apply the new credentials (Google Cloud)"),
    ("snowflake", "## Apply the new credentials (Snowflake)"),
];

fn guide(name: &str) -> String {
    read(&format!("docs/platforms/{name}.md"))
}

#[test]
fn every_guide_deploys_applies_and_refreshes_the_tether_way() {
    for (name, apply) in GUIDES {
        let text = guide(name);
        for needle in [
            "## Deploy",
            apply,
            "tether runners refresh-credentials",
            "tether runners reveal",
            "--mode overlap",
        ] {
            assert!(text.contains(needle), "{name}.md lacks `{needle}`");
        }
    }
}

#[test]
fn the_guides_keep_the_product_guides_steps() {
    let aws = guide("aws");
    for step in [
        "locate the ECS service running your tether runner. Note the name assigned",
        "In Secrets Manager, locate and select the secret that corresponds to the tether runner name",
        "Click **Retrieve secret value** to display the existing value, then click **Edit**.",
        "Don't change the secret name.",
        "5. Click **Save**.",
        "--force-new-deployment",
        "SecretHotReload=true",
    ] {
        assert!(aws.contains(step), "aws.md lacks `{step}`");
    }
    let azure = guide("azure");
    for step in [
        "select **Application** then **containers**",
        "Click the **Environment variables** tab.",
        "The **OAUTH_CLIENT_SECRET** variable tells you the name of the secret",
        "click **Settings** → **Secrets**",
        "Click the edit (pencil) icon",
        "paste it into the **Value** field",
        "Click the checkbox at the bottom to acknowledge",
        "9. Click **Save**.",
        "az containerapp revision restart",
    ] {
        assert!(azure.contains(step), "azure.md lacks `{step}`");
    }
    let gcp = guide("gcp");
    for step in [
        "Open your `values-gcp.yaml` file.",
        "Replace the value of `config.oauthClientSecret`",
        "helm upgrade <RELEASE_NAME> . \\\n  --namespace <NAMESPACE> \\\n  -f values-gcp.yaml",
        "(both\ndefault to `tether-runner`)",
        "rolling restart",
        "hotReload.enabled",
        "OAUTH_CLIENT_SECRET_FILE",
    ] {
        assert!(gcp.contains(step), "gcp.md lacks `{step}`");
    }
    let snowflake = guide("snowflake");
    for step in [
        "ALTER SECRET tether_db.runner.tether_client_secret",
        "SET SECRET_STRING",
        "ALTER SERVICE tether_db.runner.tether_runner SUSPEND;",
        "ALTER SERVICE tether_db.runner.tether_runner RESUME;",
    ] {
        assert!(snowflake.contains(step), "snowflake.md lacks `{step}`");
    }
}

#[test]
fn relative_links_point_at_files_that_exist() {
    for (name, _) in GUIDES {
        let text = guide(name);
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').expect("a closing parenthesis")];
            if target.starts_with('#') || target.contains("://") {
                continue;
            }
            let path = target.split('#').next().unwrap_or(target);
            let resolved = repo_root().join("docs/platforms").join(path);
            assert!(
                resolved.exists(),
                "{name}.md links to {target}, which does not exist"
            );
        }
    }
}
