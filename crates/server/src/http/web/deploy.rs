//! "Deploy the runner": what to run once a runner is created, per platform, with its name, client
//! id, client secret and this control plane's URL filled in. Shown once, on the page that shows the
//! new credentials; the names match what "Apply the new credentials" later refers to.

use tether_domain::Platform;

#[derive(Debug, Clone)]
pub struct DeployStep {
    pub what: String,
    pub snippet: String,
}

/// Values to fill in.
#[derive(Debug)]
pub struct DeployVars<'a> {
    pub runner: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub url: &'a str,
}

pub fn steps(platform: Platform, v: &DeployVars<'_>) -> Vec<DeployStep> {
    let DeployVars {
        runner,
        client_id,
        client_secret,
        url,
    } = v;
    let step = |what: &str, snippet: String| DeployStep {
        what: what.to_owned(),
        snippet,
    };
    match platform {
        Platform::AwsFargate => vec![
            step(
                "Store the credentials in AWS Secrets Manager (note the ARN it prints):",
                format!(
                    "aws secretsmanager create-secret --name tether/{runner} \\\n  \
                     --secret-string '{{\"client_id\":\"{client_id}\",\"client_secret\":\"{client_secret}\"}}'"
                ),
            ),
            step(
                "In the ECS task definition of the runner's container, set the environment and \
                 point OAUTH_CLIENT_SECRET at the secret (the task execution role needs \
                 secretsmanager:GetSecretValue on it):",
                format!(
                    "\"environment\": [\n  {{\"name\": \"TETHER_URL\", \"value\": \"{url}\"}},\n  \
                     {{\"name\": \"OAUTH_CLIENT_ID\", \"value\": \"{client_id}\"}}\n],\n\
                     \"secrets\": [\n  {{\"name\": \"OAUTH_CLIENT_SECRET\", \"valueFrom\": \"<SECRET_ARN>:client_secret::\"}}\n]"
                ),
            ),
        ],
        Platform::AzureContainerApp => vec![step(
            "Create the Container App with the credentials as secrets:",
            format!(
                "az containerapp create --name {runner} --resource-group <RESOURCE_GROUP> \\\n  \
                 --environment <ENVIRONMENT> --image <TETHER_IMAGE> \\\n  \
                 --secrets tether-client-id={client_id} tether-client-secret={client_secret} \\\n  \
                 --env-vars TETHER_URL={url} OAUTH_CLIENT_ID=secretref:tether-client-id \
                 OAUTH_CLIENT_SECRET=secretref:tether-client-secret"
            ),
        )],
        Platform::Gke => vec![
            step(
                "Put the credentials in values-gcp.yaml:",
                format!(
                    "config:\n  tetherUrl: \"{url}\"\n  oauthClientId: \"{client_id}\"\n  \
                     oauthClientSecret: \"{client_secret}\""
                ),
            ),
            step(
                "Install the chart from its directory:",
                "helm install tether-runner . --namespace tether-runner --create-namespace -f values-gcp.yaml"
                    .to_owned(),
            ),
        ],
        Platform::Snowflake => vec![
            step(
                "Create the secret object:",
                format!(
                    "CREATE SECRET <DATABASE>.<SCHEMA>.tether_client_secret\n  \
                     TYPE = GENERIC_STRING SECRET_STRING = '{client_secret}';"
                ),
            ),
            step(
                "In the service specification, pass the URL, the client id and the secret:",
                format!(
                    "spec:\n  containers:\n  - name: runner\n    image: <TETHER_IMAGE>\n    env:\n      \
                     TETHER_URL: \"{url}\"\n      OAUTH_CLIENT_ID: \"{client_id}\"\n    secrets:\n    \
                     - snowflakeSecret: <DATABASE>.<SCHEMA>.tether_client_secret\n      \
                     secretKeyRef: secret_string\n      envVarName: OAUTH_CLIENT_SECRET"
                ),
            ),
        ],
        Platform::Local => vec![step(
            "Start the runner:",
            format!(
                "TETHER_URL={url} OAUTH_CLIENT_ID={client_id} \\\n  \
                 OAUTH_CLIENT_SECRET={client_secret} tether runner"
            ),
        )],
    }
}
