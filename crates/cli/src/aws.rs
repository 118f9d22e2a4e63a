//! The AWS side of `apply-credentials` and `rotate`: the runner's Secrets Manager secret and its
//! ECS service, through the AWS SDK with the operator's standard credential chain
//! (`AWS_ENDPOINT_URL` is honoured, which is how the tests reach the moto emulator).
//!
//! What a secret holds is decided by pure functions ([`StoredSecret::with_new_secret`],
//! [`StoredSecret::holds`]) so the rules are tested without AWS. No error built here contains a
//! secret value: only ids, ARNs, versions and the AWS error's code and message.

use aws_sdk_ecs::config::Region;
use tether_domain::ClientSecret;

/// The environment variable that makes a runner read (and re-read) its secret from Secrets Manager.
pub const HOT_RELOAD_ENV: &str = "OAUTH_CLIENT_SECRET_ARN";

#[derive(Debug, Clone)]
pub struct Aws {
    secrets: aws_sdk_secretsmanager::Client,
    ecs: aws_sdk_ecs::Client,
}

/// The current value of a secret.
#[derive(Clone)]
pub struct Current {
    pub arn: String,
    pub version_id: String,
    pub value: StoredSecret,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("arn", &self.arn)
            .field("version_id", &self.version_id)
            .finish_non_exhaustive()
    }
}

/// A secret value in one of the two shapes the runner reads: JSON `{"client_id", "client_secret",
/// ...}` or the plain client secret.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredSecret {
    Json(serde_json::Map<String, serde_json::Value>),
    Plain(String),
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoredSecret::Json(_) => "StoredSecret::Json([redacted])",
            StoredSecret::Plain(_) => "StoredSecret::Plain([redacted])",
        })
    }
}

impl StoredSecret {
    /// Reads a secret string. Refuses text that is neither shape, so a wrong `--secret-id` (a
    /// database password, another application's JSON) is never overwritten.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('{') {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(trimmed)
                .map_err(|_| {
                    "holds text that starts with '{' but is not a JSON object".to_owned()
                })?;
            if !map.contains_key("client_secret") && !map.contains_key("client_id") {
                return Err(
                    "holds JSON without \"client_id\" or \"client_secret\": not a tether runner's credentials"
                        .to_owned(),
                );
            }
            if map.get("client_id").is_some_and(|v| !v.is_string()) {
                return Err("holds JSON whose \"client_id\" is not a string".to_owned());
            }
            return Ok(StoredSecret::Json(map));
        }
        if !trimmed.starts_with(ClientSecret::PREFIX) {
            return Err(format!(
                "holds neither JSON {{\"client_id\", \"client_secret\"}} nor a tether client secret ({}...)",
                ClientSecret::PREFIX
            ));
        }
        Ok(StoredSecret::Plain(trimmed.to_owned()))
    }

    pub fn shape(&self) -> &'static str {
        match self {
            StoredSecret::Json(_) => "JSON",
            StoredSecret::Plain(_) => "a plain string",
        }
    }

    /// "JSON with this runner's client_id tcid_…", "a plain string": what the value holds, for
    /// the steps a command prints (never the secret).
    pub fn describe(&self) -> String {
        match self.client_id() {
            Some(id) => format!("{} with this runner's client_id {id}", self.shape()),
            None => self.shape().to_owned(),
        }
    }

    /// The `client_id` a JSON value names.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            StoredSecret::Json(map) => map.get("client_id").and_then(|v| v.as_str()),
            StoredSecret::Plain(_) => None,
        }
    }

    /// Refuses a secret that belongs to another runner.
    pub fn check_client_id(&self, client_id: &str, secret_id: &str) -> Result<(), String> {
        match self.client_id() {
            Some(found) if found != client_id => Err(format!(
                "AWS secret {secret_id} holds the credentials of client_id {found}, not this runner's \
                 {client_id}"
            )),
            _ => Ok(()),
        }
    }

    /// The same value with the new secret: JSON keeps its other keys and gets `client_id` if it
    /// had none; a plain string becomes the plain new secret.
    pub fn with_new_secret(&self, client_id: &str, secret: &ClientSecret) -> Self {
        match self {
            StoredSecret::Json(map) => {
                let mut map = map.clone();
                map.insert("client_id".into(), client_id.into());
                map.insert("client_secret".into(), secret.expose().into());
                StoredSecret::Json(map)
            }
            StoredSecret::Plain(_) => StoredSecret::Plain(secret.expose().to_owned()),
        }
    }

    /// Whether the value holds exactly this client secret (and, for JSON, this client id).
    pub fn holds(&self, client_id: &str, secret: &ClientSecret) -> bool {
        match self {
            StoredSecret::Json(map) => {
                map.get("client_secret").and_then(|v| v.as_str()) == Some(secret.expose())
                    && map.get("client_id").and_then(|v| v.as_str()) == Some(client_id)
            }
            StoredSecret::Plain(s) => s == secret.expose(),
        }
    }

    pub fn to_secret_string(&self) -> String {
        match self {
            StoredSecret::Json(map) => serde_json::Value::Object(map.clone()).to_string(),
            StoredSecret::Plain(s) => s.clone(),
        }
    }
}

/// What an ECS service runs.
#[derive(Debug, Clone)]
pub struct Service {
    pub arn: String,
    pub task_definition: String,
    /// The id of the PRIMARY deployment.
    pub deployment: Option<String>,
}

/// A container of a task definition that reads its secret through `OAUTH_CLIENT_SECRET_ARN`.
#[derive(Debug, Clone)]
pub struct HotReload {
    pub container: String,
    pub secret_arn: String,
}

impl Aws {
    pub async fn new(region: Option<&str>) -> Self {
        let conf = tether_runner::secret::aws_sdk_config().await;
        let mut secrets = aws_sdk_secretsmanager::config::Builder::from(&conf);
        let mut ecs = aws_sdk_ecs::config::Builder::from(&conf);
        if let Some(r) = region {
            secrets = secrets.region(aws_sdk_secretsmanager::config::Region::new(r.to_owned()));
            ecs = ecs.region(Region::new(r.to_owned()));
        }
        Self {
            secrets: aws_sdk_secretsmanager::Client::from_conf(secrets.build()),
            ecs: aws_sdk_ecs::Client::from_conf(ecs.build()),
        }
    }

    /// The secret's current value (stage AWSCURRENT).
    pub async fn read(&self, secret_id: &str) -> anyhow::Result<Current> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read AWS secret {secret_id}: {}", sdk_error(e)))?;
        let text = out.secret_string().ok_or_else(|| {
            anyhow::anyhow!("AWS secret {secret_id} holds binary data, not a string")
        })?;
        let value = StoredSecret::parse(text)
            .map_err(|why| anyhow::anyhow!("AWS secret {secret_id} {why}"))?;
        Ok(Current {
            arn: out.arn().unwrap_or(secret_id).to_owned(),
            version_id: out.version_id().unwrap_or("-").to_owned(),
            value,
        })
    }

    /// Writes a new current version; returns its version id.
    pub async fn write(&self, secret_id: &str, value: &StoredSecret) -> anyhow::Result<String> {
        let out = self
            .secrets
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(value.to_secret_string())
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot write AWS secret {secret_id}: {}", sdk_error(e))
            })?;
        Ok(out.version_id().unwrap_or("-").to_owned())
    }

    pub async fn service(&self, cluster: &str, service: &str) -> anyhow::Result<Service> {
        let out = self
            .ecs
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot describe ECS service {service} in cluster {cluster}: {}",
                    sdk_error(e)
                )
            })?;
        let Some(s) = out.services().first() else {
            let why = out
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("not found");
            anyhow::bail!("ECS service {service} in cluster {cluster}: {why}");
        };
        Ok(Service {
            arn: s.service_arn().unwrap_or(service).to_owned(),
            task_definition: s.task_definition().unwrap_or_default().to_owned(),
            deployment: primary_deployment(s.deployments()),
        })
    }

    /// The container of the task definition that sets `OAUTH_CLIENT_SECRET_ARN`, if any.
    pub async fn hot_reload(&self, task_definition: &str) -> anyhow::Result<Option<HotReload>> {
        let out = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot describe ECS task definition {task_definition}: {}",
                    sdk_error(e)
                )
            })?;
        let containers = out
            .task_definition()
            .map(|t| t.container_definitions())
            .unwrap_or_default();
        Ok(containers.iter().find_map(|c| {
            c.environment()
                .iter()
                .find(|kv| kv.name() == Some(HOT_RELOAD_ENV))
                .map(|kv| HotReload {
                    container: c.name().unwrap_or("-").to_owned(),
                    secret_arn: kv.value().unwrap_or_default().to_owned(),
                })
        }))
    }

    /// `UpdateService --force-new-deployment`; returns the new PRIMARY deployment's id.
    pub async fn force_new_deployment(
        &self,
        cluster: &str,
        service: &str,
    ) -> anyhow::Result<Option<String>> {
        let out = self
            .ecs
            .update_service()
            .cluster(cluster)
            .service(service)
            .force_new_deployment(true)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start a new deployment of ECS service {service} in cluster {cluster}: {}",
                    sdk_error(e)
                )
            })?;
        Ok(out
            .service()
            .and_then(|s| primary_deployment(s.deployments())))
    }
}

fn primary_deployment(deployments: &[aws_sdk_ecs::types::Deployment]) -> Option<String> {
    deployments
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .or_else(|| deployments.first())
        .and_then(|d| d.id())
        .map(str::to_owned)
}

/// An AWS SDK error as one line: the service's code and message, or the cause chain.
fn sdk_error<E, R>(e: aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_sdk_secretsmanager::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let line = match &e {
        aws_sdk_secretsmanager::error::SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            }
        }
        _ => aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
    };
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.contains("no region") || line.contains("region") && line.contains("not set") {
        format!("{line} (set AWS_REGION or pass --region)")
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "tcid_abc";

    #[test]
    fn json_keeps_other_keys_and_client_id_and_gets_the_new_secret() {
        let new = ClientSecret::generate();
        let old = StoredSecret::parse(
            r#"{"client_id":"tcid_abc","client_secret":"tcs_old","note":"prod","n":1}"#,
        )
        .expect("json");
        assert_eq!(old.shape(), "JSON");
        let updated = old.with_new_secret(ID, &new);
        let StoredSecret::Json(map) = &updated else {
            panic!("json")
        };
        assert_eq!(map["client_id"], "tcid_abc");
        assert_eq!(map["client_secret"], new.expose());
        assert_eq!(map["note"], "prod");
        assert_eq!(map["n"], 1);
        assert!(updated.holds(ID, &new));
        assert!(!old.holds(ID, &new));
        assert!(!updated.holds("tcid_other", &new));
        let text = updated.to_secret_string();
        assert_eq!(StoredSecret::parse(&text).expect("round trip"), updated);
    }

    #[test]
    fn json_without_client_id_gets_it() {
        let new = ClientSecret::generate();
        let old = StoredSecret::parse(r#"{"client_secret":"tcs_old"}"#).expect("json");
        assert_eq!(old.client_id(), None);
        assert!(old.check_client_id(ID, "s").is_ok());
        assert!(old.with_new_secret(ID, &new).holds(ID, &new));
    }

    #[test]
    fn a_plain_string_stays_a_plain_string() {
        let new = ClientSecret::generate();
        let old = StoredSecret::parse(&format!("{}\n", ClientSecret::generate().expose()))
            .expect("plain");
        assert_eq!(old.shape(), "a plain string");
        let updated = old.with_new_secret(ID, &new);
        assert_eq!(updated.to_secret_string(), new.expose());
        assert!(updated.holds(ID, &new));
    }

    #[test]
    fn another_runners_secret_or_foreign_data_is_refused_without_showing_it() {
        let other = StoredSecret::parse(r#"{"client_id":"tcid_zzz","client_secret":"tcs_x"}"#)
            .expect("json");
        let err = other
            .check_client_id(ID, "arn:s")
            .expect_err("other runner");
        assert!(
            err.contains("tcid_zzz") && err.contains("tcid_abc"),
            "{err}"
        );
        assert!(!err.contains("tcs_x"), "{err}");
        for (text, says) in [
            ("hunter2", "neither JSON"),
            (r#"{"password":"hunter2"}"#, "without \"client_id\""),
            ("{not json", "not a JSON object"),
            (r#"{"client_id":7,"client_secret":"x"}"#, "not a string"),
        ] {
            let err = StoredSecret::parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(!format!("{other:?}").contains("tcs_x"));
    }
}
