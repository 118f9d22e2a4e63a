//! `apply-credentials` for Azure Container Apps, GKE (Helm) and Snowflake: the guide's steps of
//! `next_steps` with the runner's values filled in, for people, and the same steps as programs and
//! arguments, for `--execute`. Shown text says `<client_secret>`; only the argument lists built
//! for execution carry the secret, and [`shown`] turns those back into text without it.

use tether_domain::ClientSecret;

use crate::next_steps::{self, Vars};

/// The secret in shown text.
pub const PLACEHOLDER: &str = "<client_secret>";

/// Default names, as in deploy/ and the guides.
pub const AZURE_SECRET: &str = "tether-client-secret";
pub const HELM_RELEASE: &str = "tether-runner";
pub const HELM_NAMESPACE: &str = "tether-runner";
pub const HELM_CHART: &str = ".";
pub const HELM_VALUES: &str = "values-gcp.yaml";
pub const SNOWFLAKE_SECRET: &str = "tether_db.runner.tether_client_secret";
pub const SNOWFLAKE_SERVICE: &str = "tether_db.runner.tether_runner";

/// One platform's deployment names, from the flags or the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Azure {
        app: String,
        resource_group: Option<String>,
        secret: String,
    },
    Gke {
        release: String,
        namespace: String,
        chart: String,
        values: String,
    },
    Snowflake {
        secret: String,
        service: String,
        connection: Option<String>,
    },
}

impl Target {
    /// The platform as the API names it (for `next_steps::guide`).
    pub fn api_platform(&self) -> &'static str {
        match self {
            Target::Azure { .. } => "azure_container_app",
            Target::Gke { .. } => "gke",
            Target::Snowflake { .. } => "snowflake",
        }
    }

    /// The program `--execute` runs.
    pub fn tool(&self) -> &'static str {
        match self {
            Target::Azure { .. } => "az",
            Target::Gke { .. } => "helm",
            Target::Snowflake { .. } => "snowsql",
        }
    }

    /// Refuses names that would not survive being put into a command line or SQL unquoted.
    pub fn check(&self) -> Result<(), String> {
        let word = |flag: &str, v: &str, extra: &str| {
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c) || extra.contains(c));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{flag} '{v}' has characters that are not allowed there (use letters, digits, '-', '_'{})",
                    extra.chars().map(|c| format!(", '{c}'")).collect::<String>()
                ))
            }
        };
        match self {
            Target::Azure {
                app,
                resource_group,
                secret,
            } => {
                word("--app", app, "")?;
                if let Some(rg) = resource_group {
                    word("--resource-group", rg, ".()")?;
                }
                word("--secret-id", secret, ".")
            }
            Target::Gke {
                release, namespace, ..
            } => {
                word("--release", release, "")?;
                word("--namespace", namespace, "")
            }
            Target::Snowflake {
                secret, service, ..
            } => {
                word("--secret-id", secret, ".$")?;
                word("--service", service, ".$")
            }
        }
    }
}

/// A command and its arguments; [`Arg::Secret`] is the client secret, with text before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Text(String),
    Secret { prefix: String },
}

fn text(s: &str) -> Arg {
    Arg::Text(s.to_owned())
}

/// The arguments with the secret filled in, for running.
pub fn argv(args: &[Arg], secret: &ClientSecret) -> Vec<String> {
    args.iter()
        .map(|a| match a {
            Arg::Text(t) => t.clone(),
            Arg::Secret { prefix } => format!("{prefix}{}", secret.expose()),
        })
        .collect()
}

/// The arguments as a shell command line, the secret shown as `<client_secret>`.
pub fn shown(args: &[Arg]) -> String {
    args.iter()
        .map(|a| match a {
            Arg::Text(t) => sh_quote(t),
            Arg::Secret { prefix } => format!("{}{PLACEHOLDER}", sh_quote(prefix)),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Arguments without a secret as a shell command line.
pub fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn azure_secret_set(app: &str, resource_group: &str, secret: &str) -> Vec<Arg> {
    vec![
        text("az"),
        text("containerapp"),
        text("secret"),
        text("set"),
        text("--name"),
        text(app),
        text("--resource-group"),
        text(resource_group),
        text("--secrets"),
        Arg::Secret {
            prefix: format!("{secret}="),
        },
    ]
}

pub fn azure_latest_revision(app: &str, resource_group: &str) -> Vec<String> {
    [
        "az",
        "containerapp",
        "show",
        "--name",
        app,
        "--resource-group",
        resource_group,
        "--query",
        "properties.latestRevisionName",
        "--output",
        "tsv",
    ]
    .map(str::to_owned)
    .to_vec()
}

pub fn azure_revision_restart(app: &str, resource_group: &str, revision: &str) -> Vec<String> {
    [
        "az",
        "containerapp",
        "revision",
        "restart",
        "--name",
        app,
        "--resource-group",
        resource_group,
        "--revision",
        revision,
    ]
    .map(str::to_owned)
    .to_vec()
}

pub fn helm_upgrade(release: &str, chart: &str, namespace: &str, values: &str) -> Vec<String> {
    [
        "helm",
        "upgrade",
        release,
        chart,
        "--namespace",
        namespace,
        "-f",
        values,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The SQL of the Snowflake steps; `secret` is the value or [`PLACEHOLDER`].
pub fn snowflake_sql(secret_object: &str, service: &str, secret: &str) -> String {
    format!(
        "ALTER SECRET {secret_object} SET SECRET_STRING = '{secret}';\n\
         ALTER SERVICE {service} SUSPEND;\n\
         ALTER SERVICE {service} RESUME;\n"
    )
}

pub fn snowsql(connection: Option<&str>, file: &str) -> Vec<String> {
    let mut args = vec!["snowsql".to_owned()];
    if let Some(c) = connection {
        args.extend(["-c".to_owned(), c.to_owned()]);
    }
    args.extend(
        [
            "-o",
            "exit_on_error=true",
            "-o",
            "friendly=false",
            "-f",
            file,
        ]
        .map(str::to_owned),
    );
    args
}

/// One step as shown: what to do, and the command (may span lines) when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownStep {
    pub what: String,
    pub command: Option<String>,
}

/// The platform's steps with the runner's values, as people read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub platform: &'static str,
    pub secret_lives: String,
    pub steps: Vec<ShownStep>,
    pub note: Option<String>,
}

/// The guide of `next_steps` for the target, with the flags' names put in for its placeholders.
pub fn plan(target: &Target, v: &Vars<'_>) -> Plan {
    let guide = next_steps::guide(target.api_platform());
    let put = |s: &str| -> String {
        let s = next_steps::fill(s, v);
        match target {
            Target::Azure {
                app,
                resource_group,
                secret,
            } => s
                .replace("<APP>", app)
                .replace(
                    "<RESOURCE_GROUP>",
                    resource_group.as_deref().unwrap_or("<RESOURCE_GROUP>"),
                )
                .replace(AZURE_SECRET, secret),
            Target::Gke {
                release,
                namespace,
                chart,
                values,
            } => s
                .replace(&next_steps_helm(), "\u{0}")
                .replace(HELM_VALUES, values)
                .replace(
                    '\u{0}',
                    &shell_line(&helm_upgrade(release, chart, namespace, values)),
                ),
            Target::Snowflake {
                secret, service, ..
            } => s
                .replace("<DATABASE>.<SCHEMA>.tether_client_secret", secret)
                .replace("`tether_client_secret`", &format!("`{secret}`"))
                .replace("<DATABASE>.<SCHEMA>.<SERVICE>", service),
        }
    };
    let steps = guide
        .steps
        .iter()
        .map(|s| ShownStep {
            what: put(s.what),
            command: s.command.map(put),
        })
        .collect();
    let note = match target {
        Target::Gke {
            release,
            namespace,
            chart,
            values,
        } => Some(format!(
            "Without editing the file: {} --set-string config.oauthClientSecret={PLACEHOLDER} \
             (then put the new secret into {} too, or the next upgrade from it brings the old one back).",
            shell_line(&helm_upgrade(release, chart, namespace, values)),
            values
        )),
        Target::Snowflake { connection, .. } => Some(format!(
            "Run the SQL in a Snowsight worksheet, or save it as refresh.sql and run `{}`.",
            shell_line(&snowsql(connection.as_deref(), "refresh.sql"))
        )),
        Target::Azure { .. } => guide.note.map(put),
    };
    Plan {
        platform: guide.platform,
        secret_lives: put(guide.secret_lives),
        steps,
        note,
    }
}

/// The helm command of the GKE guide, which [`plan`] replaces with the flags' names.
fn next_steps_helm() -> String {
    helm_upgrade(HELM_RELEASE, HELM_CHART, HELM_NAMESPACE, HELM_VALUES).join(" ")
}

/// Renders a plan for a terminal, numbered like `next_steps::render`, ending with the check step.
pub fn render(plan: &Plan, v: &Vars<'_>) -> String {
    let mut out = format!("{}\n\n", plan.secret_lives);
    let mut n = 0;
    for step in &plan.steps {
        n += 1;
        out.push_str(&format!("  {n}. {}\n", step.what));
        if let Some(command) = &step.command {
            for line in command.lines() {
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
    if let Some(note) = &plan.note {
        out.push_str(&format!("\n{note}\n"));
    }
    out
}

/// Sets `config.oauthClientSecret` in a Helm values file, changing only that line (comments and
/// the rest of the file stay as they are). Adds the key under `config:` when it is missing.
pub fn set_values_secret(yaml: &str, secret: &ClientSecret) -> Result<String, String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    };
    let is_key = |l: &str, key: &str| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    };
    let config = lines
        .iter()
        .position(|l| indent(l) == 0 && is_key(l, "config"))
        .ok_or_else(|| "has no top-level `config:` section".to_owned())?;
    let after_key = lines[config]
        .split_once(':')
        .map(|(_, rest)| rest.trim())
        .unwrap_or_default();
    if !after_key.is_empty() && !after_key.starts_with('#') {
        return Err(
            "writes `config:` in flow style; set config.oauthClientSecret by hand".to_owned(),
        );
    }
    let end = lines[config + 1..]
        .iter()
        .position(|l| content(l) && indent(l) == 0)
        .map_or(lines.len(), |p| config + 1 + p);
    let child_indent = lines[config + 1..end]
        .iter()
        .find(|l| content(l))
        .map_or(2, |l| indent(l));
    let value = format!("\"{}\"", secret.expose());
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let found: Vec<usize> = (config + 1..end)
        .filter(|&i| indent(lines[i]) == child_indent && is_key(lines[i], "oauthClientSecret"))
        .collect();
    match found.as_slice() {
        [] => out.insert(
            config + 1,
            format!("{}oauthClientSecret: {value}", " ".repeat(child_indent)),
        ),
        [i] => out[*i] = format!("{}oauthClientSecret: {value}", " ".repeat(child_indent)),
        _ => return Err("sets config.oauthClientSecret more than once".to_owned()),
    }
    let mut text = out.join("\n");
    if yaml.ends_with('\n') {
        text.push('\n');
    }
    // The result must still be YAML that says what we meant.
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|_| {
        "is not valid YAML after the edit; set config.oauthClientSecret by hand".to_owned()
    })?;
    if parsed["config"]["oauthClientSecret"].as_str() != Some(secret.expose()) {
        return Err("could not be edited safely; set config.oauthClientSecret by hand".to_owned());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            runner: "prod-eu-1",
            client_id: "tcid_abc",
            url: "http://127.0.0.1:8080",
            generation: 2,
            secret_file: None,
        }
    }

    fn gke(release: &str, namespace: &str) -> Target {
        Target::Gke {
            release: release.into(),
            namespace: namespace.into(),
            chart: HELM_CHART.into(),
            values: HELM_VALUES.into(),
        }
    }

    /// The defaults give exactly the commands of the guides in `next_steps`.
    #[test]
    fn defaults_are_the_guides_commands() {
        let guide_cmd = |p: &str, i: usize| {
            next_steps::fill(
                next_steps::guide(p).steps[i].command.expect("command"),
                &vars(),
            )
        };
        assert_eq!(
            helm_upgrade(HELM_RELEASE, HELM_CHART, HELM_NAMESPACE, HELM_VALUES).join(" "),
            guide_cmd("gke", 1)
        );
        assert_eq!(
            shown(&azure_secret_set("<APP>", "<RESOURCE_GROUP>", AZURE_SECRET)).replace('\'', ""),
            guide_cmd("azure_container_app", 0).replace("\\\n  ", ""),
        );
        let sql = snowflake_sql(
            "<DATABASE>.<SCHEMA>.tether_client_secret",
            "<DATABASE>.<SCHEMA>.<SERVICE>",
            PLACEHOLDER,
        );
        assert_eq!(
            sql,
            format!(
                "{}\n{}\n",
                guide_cmd("snowflake", 0),
                guide_cmd("snowflake", 1)
            )
        );
    }

    #[test]
    fn gke_plan_has_the_runners_release_namespace_and_client_id() {
        let text = render(
            &plan(&gke("tether-runner", "tether-runner"), &vars()),
            &vars(),
        );
        assert!(
            text.contains("       helm upgrade tether-runner . --namespace tether-runner -f values-gcp.yaml\n"),
            "{text}"
        );
        assert!(
            text.contains("`config.oauthClientId` stays tcid_abc"),
            "{text}"
        );
        assert!(text.contains("generation 2"), "{text}");
        let text = render(
            &plan(
                &Target::Gke {
                    release: "prod".into(),
                    namespace: "runners".into(),
                    chart: "oci://registry/tether-runner".into(),
                    values: "envs/prod.yaml".into(),
                },
                &vars(),
            ),
            &vars(),
        );
        assert!(
            text.contains("helm upgrade prod oci://registry/tether-runner --namespace runners -f envs/prod.yaml"),
            "{text}"
        );
        assert!(
            text.contains("In envs/prod.yaml, set `config.oauthClientSecret`"),
            "{text}"
        );
        assert!(
            text.contains("--set-string config.oauthClientSecret=<client_secret>"),
            "{text}"
        );
        assert!(!text.contains("values-gcp.yaml"), "{text}");
    }

    #[test]
    fn azure_and_snowflake_plans_fill_the_names() {
        let az = Target::Azure {
            app: "runner-app".into(),
            resource_group: Some("rg-1".into()),
            secret: AZURE_SECRET.into(),
        };
        let text = render(&plan(&az, &vars()), &vars());
        assert!(
            text.contains("az containerapp secret set --name runner-app --resource-group rg-1"),
            "{text}"
        );
        assert!(
            text.contains("--secrets tether-client-secret=<client_secret>"),
            "{text}"
        );
        assert!(
            text.contains(
                "az containerapp revision restart --name runner-app --resource-group rg-1"
            ),
            "{text}"
        );
        assert!(
            !text.contains("<APP>") && !text.contains("<RESOURCE_GROUP>"),
            "{text}"
        );
        let no_rg = Target::Azure {
            app: "runner-app".into(),
            resource_group: None,
            secret: "my-secret".into(),
        };
        let text = render(&plan(&no_rg, &vars()), &vars());
        assert!(
            text.contains("<RESOURCE_GROUP>")
                && text.contains("--secrets my-secret=<client_secret>"),
            "{text}"
        );

        let sf = Target::Snowflake {
            secret: SNOWFLAKE_SECRET.into(),
            service: SNOWFLAKE_SERVICE.into(),
            connection: Some("prod".into()),
        };
        let text = render(&plan(&sf, &vars()), &vars());
        assert!(text.contains("ALTER SECRET tether_db.runner.tether_client_secret SET SECRET_STRING = '<client_secret>';"), "{text}");
        assert!(
            text.contains("ALTER SERVICE tether_db.runner.tether_runner SUSPEND;"),
            "{text}"
        );
        assert!(
            text.contains("ALTER SERVICE tether_db.runner.tether_runner RESUME;"),
            "{text}"
        );
        assert!(
            text.contains("snowsql -c prod -o exit_on_error=true -o friendly=false -f refresh.sql"),
            "{text}"
        );
        assert!(!text.contains("<DATABASE>"), "{text}");
    }

    #[test]
    fn the_secret_is_only_in_the_argument_list_for_running() {
        let secret = ClientSecret::generate();
        let args = azure_secret_set("app", "rg", "tether-client-secret");
        let run = argv(&args, &secret);
        assert_eq!(
            run.last().expect("last"),
            &format!("tether-client-secret={}", secret.expose())
        );
        assert!(!shown(&args).contains(secret.expose()));
        assert!(shown(&args).ends_with("--secrets tether-client-secret=<client_secret>"));
        assert_eq!(sh_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(sh_quote("values-gcp.yaml"), "values-gcp.yaml");
    }

    #[test]
    fn names_that_would_break_a_command_are_refused() {
        assert!(gke("tether-runner", "ns").check().is_ok());
        let err = gke("x; rm -rf /", "ns").check().expect_err("refused");
        assert!(err.contains("--release"), "{err}");
        let sf = Target::Snowflake {
            secret: "db.s.x'; DROP".into(),
            service: SNOWFLAKE_SERVICE.into(),
            connection: None,
        };
        assert!(sf.check().expect_err("refused").contains("--secret-id"));
    }

    #[test]
    fn values_file_edit_changes_only_the_secret_line() {
        let secret = ClientSecret::generate();
        let yaml = "# values for GKE\nimage:\n  tag: 0.1.0\nconfig:\n  url: https://tether.example.com\n  oauthClientId: tcid_abc  # stays\n  oauthClientSecret: \"tcs_old\"\nreplicas: 2\n";
        let edited = set_values_secret(yaml, &secret).expect("edit");
        assert_eq!(
            edited,
            yaml.replace("\"tcs_old\"", &format!("\"{}\"", secret.expose()))
        );
        // Missing key: added under config.
        let yaml = "config:\n    url: https://x\n    oauthClientId: tcid_abc\nreplicas: 2\n";
        let edited = set_values_secret(yaml, &secret).expect("edit");
        assert!(
            edited.starts_with(&format!(
                "config:\n    oauthClientSecret: \"{}\"\n    url:",
                secret.expose()
            )),
            "{edited}"
        );
        // A nested key of the same name elsewhere is not touched.
        let yaml = "other:\n  oauthClientSecret: keep\nconfig:\n  oauthClientSecret: old\n";
        let edited = set_values_secret(yaml, &secret).expect("edit");
        assert!(
            edited.contains("other:\n  oauthClientSecret: keep\n"),
            "{edited}"
        );
        for (bad, says) in [
            ("image:\n  tag: x\n", "no top-level `config:`"),
            ("config: {oauthClientSecret: x}\n", "flow style"),
            (
                "config:\n  oauthClientSecret: a\n  oauthClientSecret: b\n",
                "more than once",
            ),
        ] {
            let err = set_values_secret(bad, &secret).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
