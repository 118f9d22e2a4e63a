//! The command tree. Every command and flag says what it does; `--help` is the manual.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version,
    about = "tether: control plane and runner for hybrid runners, with the runner credential lifecycle",
    long_about = "tether runs a control plane (`tether server`) that hybrid runners in your cloud connect to \
        outbound (`tether runner`), authenticating with OAuth client credentials. The other commands manage \
        runners, users and the audit log through the control plane's REST API.",
    after_help = "Start here:\n  tether server --dev                         # a throwaway control plane; prints an admin token\n  \
        export TETHER_URL=http://127.0.0.1:8080 TETHER_TOKEN=tpat_...\n  \
        tether runners create my-runner --platform aws_fargate"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of the admin commands.
#[derive(Debug, Args)]
pub struct Global {
    /// Control plane URL (default: the one saved by `tether login`).
    #[arg(long, env = "TETHER_URL", global = true)]
    pub url: Option<String>,

    /// API token (default: the one saved by `tether login`).
    #[arg(long, env = "TETHER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// How to print results.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns / key-value lines for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (REST API, OAuth token endpoint, runner sessions).
    Server(tether_server::ServerArgs),
    /// Run a runner: connect outbound to the control plane and execute its tasks.
    Runner(tether_runner::RunnerArgs),
    /// Save the control plane URL and your API token for later commands.
    #[command(
        after_help = "Examples:\n  tether login --url https://tether.example.com      # then paste the token\n  \
        echo \"$TOKEN\" | tether login --url https://tether.example.com"
    )]
    Login(LoginArgs),
    /// Revoke the API token this CLI uses and forget the saved login.
    #[command(
        long_about = "Revoke the API token this CLI uses (the saved one, or --token / TETHER_TOKEN) on \
        the control plane, so it stops working everywhere at once, and delete the file `tether login` \
        saved. The file is deleted even when the control plane cannot be reached; the command then \
        fails saying the token may still work."
    )]
    Logout,
    /// Register, inspect, pause, restart and delete runners; refresh and reveal their credentials.
    #[command(subcommand)]
    Runners(RunnersCommand),
    /// List, create and delete users (admins only).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Create, list and revoke personal API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Define pipelines (named lists of shell tasks) and run them on a runner.
    #[command(subcommand)]
    Pipelines(PipelinesCommand),
    /// Inspect, follow and cancel pipeline runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Read the append-only audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the token from standard input instead of --token / TETHER_TOKEN.
    #[arg(long)]
    pub token_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunnersCommand {
    /// Register a runner and print its client credentials (the secret is shown only this once).
    #[command(
        after_help = "Example:\n  tether runners create prod-eu-1 --platform aws_fargate --description \"ECS in eu-west-1\""
    )]
    Create {
        /// Unique name: 1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit.
        name: String,
        /// Where the runner is deployed: aws_fargate, azure_container_app, gke, snowflake or local.
        #[arg(long)]
        platform: String,
        /// Free text shown with the runner.
        #[arg(long)]
        description: Option<String>,
    },
    /// List runners with their status.
    List {
        /// Show only this many (default: all, fetched page by page).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one runner: status and why, auth health, instances and the credential generation each uses.
    Show {
        /// Runner name or id.
        runner: String,
    },
    /// Stop assigning new work to a runner; running tasks finish.
    Pause {
        /// Runner name or id.
        runner: String,
        /// Resume automatically at this time (RFC 3339, e.g. 2026-12-01T08:00:00Z).
        #[arg(long)]
        until: Option<String>,
        /// Do not ask to type `pause runner`.
        #[arg(long)]
        yes: bool,
    },
    /// Let a paused runner take work again.
    Resume {
        /// Runner name or id.
        runner: String,
    },
    /// Tell every instance to finish its tasks and exit, so its orchestrator starts a fresh one.
    Restart {
        /// Runner name or id.
        runner: String,
    },
    /// Delete a runner: its credentials stop working and its instances are disconnected.
    Delete {
        /// Runner name or id.
        runner: String,
        /// Do not ask to type the runner's name.
        #[arg(long)]
        yes: bool,
    },
    /// List a runner's pipeline runs, newest first.
    #[command(after_help = "Examples:\n  tether runners runs prod-eu-1\n  \
        tether runners runs prod-eu-1 --state running      # what would a credential refresh interrupt?")]
    Runs {
        /// Runner name or id.
        runner: String,
        /// Only runs in this state.
        #[arg(long, value_parser = RUN_STATES)]
        state: Option<String>,
        /// Show at most this many (default: the server's page size).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Make a new client secret for a runner; the old one is revoked at once, or after a grace period.
    #[command(long_about = REFRESH_ABOUT, after_help = REFRESH_HELP)]
    RefreshCredentials(RefreshArgs),
    /// Show the newest client secret again, while its reveal window is open (15 minutes by default).
    #[command(after_help = "Examples:\n  tether runners reveal prod-eu-1\n  \
        tether runners reveal prod-eu-1 --output json | jq -r .client_secret")]
    Reveal {
        /// Runner name or id.
        runner: String,
    },
    /// Show a runner's client_id and its credential generations: state, expiry, last use, live sessions.
    #[command(after_help = "Examples:\n  tether runners credentials prod-eu-1\n  \
        tether runners credentials prod-eu-1 --output json   # generations[].sessions: who still uses which secret")]
    Credentials {
        /// Runner name or id.
        runner: String,
    },
    /// Revoke every generation older than the active one now, ending an overlap early; instances
    /// still using an old secret are disconnected.
    #[command(
        after_help = "Examples:\n  tether runners credentials prod-eu-1          # sessions on the old generation: 0?\n  \
        tether runners revoke-previous prod-eu-1"
    )]
    RevokePrevious {
        /// Runner name or id.
        runner: String,
        /// Do not ask to type the runner's name.
        #[arg(long)]
        yes: bool,
    },
    /// Put a runner's new client secret where its platform keeps it, and restart it if it needs
    /// one (AWS: done here with the AWS SDK; Azure, Google Cloud, Snowflake: the exact commands,
    /// run with --execute).
    #[command(long_about = APPLY_CREDENTIALS_ABOUT, after_help = APPLY_CREDENTIALS_HELP)]
    ApplyCredentials(ApplyArgs),
    /// Zero-downtime rotation on AWS: refresh (overlap), write the new secret into Secrets Manager,
    /// wait until every instance has reloaded it, then revoke the old one.
    #[command(long_about = ROTATE_ABOUT, after_help = ROTATE_HELP)]
    Rotate(RotateArgs),
}

const APPLY_CREDENTIALS_ABOUT: &str = "\
Apply a runner's new client_secret (the guide's \"Apply the new credentials\" steps) in one command.

The secret is the one the last refresh made, taken from the reveal endpoint (so run it within the
reveal window after `tether runners refresh-credentials`), or read from standard input with
--secret-stdin. It is never printed.

--platform aws (done here, with the AWS SDK and your standard AWS credential chain: environment,
profile, SSO, role):
  1. reads the Secrets Manager secret (--secret-id, ARN or name). A JSON value keeps its other keys
     (`client_id` stays; it is added if missing) and gets the new `client_secret`; a plain string
     value is replaced by the plain secret. A secret of another runner (other client_id) or one
     that holds no tether secret is refused, and nothing is written;
  2. writes the new value (PutSecretValue) and reads it back to verify it;
  3. with --cluster and --service, restarts the runner with a new ECS deployment
     (UpdateService forceNewDeployment) -- unless the runner reloads the secret by itself: that is
     detected from the service's task definition (a container whose environment sets
     OAUTH_CLIENT_SECRET_ARN), or declared with --hot-reload (no ECS call at all). Then no restart
     is needed: the runner re-reads the secret (at once when its old one is refused).

--platform azure | gcp | snowflake prints the exact steps with the runner's values:
  azure      az containerapp secret set ... and az containerapp revision restart ...
  gcp        set config.oauthClientSecret in values-gcp.yaml, then helm upgrade ...
  snowflake  ALTER SECRET ... SET SECRET_STRING, ALTER SERVICE ... SUSPEND / RESUME
With --execute it runs them with the secret (`az`, `helm` or `snowsql` must be on PATH; without it
the command says so and exits 1). --execute edits the values file in place for gcp, and passes the
SQL to snowsql in a private temporary file; `az` takes the secret as an argument.

--platform defaults to the runner's registered platform.";

const APPLY_CREDENTIALS_HELP: &str = "\
Examples:
  tether runners refresh-credentials prod-eu-1 --yes
  tether runners apply-credentials prod-eu-1 --platform aws \\
      --secret-id arn:aws:secretsmanager:eu-west-1:123456789012:secret:tether-runner/prod-eu-1-AbCdEf \\
      --cluster tether-prod-eu-1 --service tether-runner
  tether runners apply-credentials prod-eu-1 --platform aws --secret-id tether-runner/prod-eu-1 --hot-reload
  tether runners apply-credentials prod-eu-1 --platform gcp --release tether-runner --namespace tether-runner
  tether runners apply-credentials prod-eu-1 --platform gcp --values ./values-gcp.yaml --execute
  tether runners apply-credentials az-runner --platform azure --resource-group rg-tether --execute
  tether runners apply-credentials sf-runner --platform snowflake --connection prod --execute
  pass show tether/prod-eu-1 | tether runners apply-credentials prod-eu-1 --platform aws \\
      --secret-id tether-runner/prod-eu-1 --secret-stdin";

const ROTATE_ABOUT: &str = "\
Rotate a runner's client secret with no downtime and nothing to do by hand, for runners that read
their secret from AWS Secrets Manager through OAUTH_CLIENT_SECRET_ARN (the hot-reload deployment):

  0. checks the secret (--secret-id) holds this runner's credentials, before changing anything;
  1. refreshes in overlap mode: a new generation is active and the old one keeps working for
     --grace (default 1h); no session is cut and running pipelines go on;
  2. writes the new secret into the Secrets Manager secret (as apply-credentials does) and reads
     it back;
  3. waits (up to --timeout, default 10m) until every live instance of the runner uses the new
     generation on its open session -- the runners re-read the secret when told it rotated;
  4. revokes the previous generation.

If a step fails it stops there, revokes nothing, and says what to do next: the old secret keeps
working until the grace period ends. With --cluster and --service, a service whose runners do not
reload the secret themselves gets a new ECS deployment after step 2, and step 3 waits for the
new tasks to replace the old ones.

Each step is printed as it completes. Confirm by typing `rotate` (or pass --yes). The control
plane audits the refresh and the revocation.";

const ROTATE_HELP: &str = "\
Examples:
  tether runners rotate prod-eu-1 --platform aws --secret-id tether-runner/prod-eu-1
  tether runners rotate prod-eu-1 --platform aws --secret-id arn:aws:secretsmanager:... \\
      --grace 2h --timeout 15m --yes";

/// Where `apply-credentials` and `rotate` put the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetPlatform {
    /// AWS ECS Fargate with AWS Secrets Manager.
    Aws,
    /// Azure Container Apps.
    Azure,
    /// Google Kubernetes Engine with the Helm chart.
    Gcp,
    /// Snowflake Snowpark Container Services.
    Snowflake,
    /// A runner on this machine that reads OAUTH_CLIENT_SECRET_FILE (e.g. the `server --dev` one).
    Local,
}

/// `tether runners apply-credentials`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Runner name or id.
    pub runner: String,
    /// Where the runner runs (default: its registered platform).
    #[arg(long, value_enum)]
    pub platform: Option<TargetPlatform>,
    /// Where the secret lives. aws: the Secrets Manager secret's ARN or name (required).
    /// azure: the Container App secret (default tether-client-secret). snowflake: the SECRET
    /// object (default tether_db.runner.tether_client_secret).
    #[arg(long, value_name = "ID")]
    pub secret_id: Option<String>,
    /// Read the new client_secret from standard input instead of the reveal endpoint.
    #[arg(long)]
    pub secret_stdin: bool,
    /// aws: the AWS region (default: from the standard chain, e.g. AWS_REGION or the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// aws: the ECS cluster of the runner's service (with --service).
    #[arg(long, requires = "service")]
    pub cluster: Option<String>,
    /// aws: the ECS service to redeploy (with --cluster). snowflake: the service to suspend and
    /// resume (default tether_db.runner.tether_runner).
    #[arg(long)]
    pub service: Option<String>,
    /// aws: the runner reads the secret itself (OAUTH_CLIENT_SECRET_ARN); restart nothing.
    #[arg(long, conflicts_with_all = ["cluster", "service"])]
    pub hot_reload: bool,
    /// azure: the Container App's name (default: the runner's name).
    #[arg(long)]
    pub app: Option<String>,
    /// azure: the Container App's resource group (required with --execute).
    #[arg(long)]
    pub resource_group: Option<String>,
    /// gcp: the Helm release (default tether-runner).
    #[arg(long)]
    pub release: Option<String>,
    /// gcp: the Kubernetes namespace (default tether-runner).
    #[arg(long)]
    pub namespace: Option<String>,
    /// gcp: the chart (directory or reference) to upgrade with (default `.`, the chart's directory).
    #[arg(long)]
    pub chart: Option<String>,
    /// gcp: the values file holding config.oauthClientSecret (default values-gcp.yaml).
    #[arg(long, value_name = "FILE")]
    pub values: Option<String>,
    /// snowflake: the snowsql connection to run the SQL with (`snowsql -c NAME`).
    #[arg(long)]
    pub connection: Option<String>,
    /// azure, gcp, snowflake: run the printed steps with the secret (needs az, helm or snowsql).
    #[arg(long)]
    pub execute: bool,
    /// local: the file the runner reads (OAUTH_CLIENT_SECRET_FILE); default: the one its live
    /// instances report.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<std::path::PathBuf>,
}

/// `tether runners rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Runner name or id.
    pub runner: String,
    /// Where the runner runs; only aws (Secrets Manager) can be rotated without a person.
    #[arg(long, value_enum)]
    pub platform: Option<TargetPlatform>,
    /// The Secrets Manager secret (ARN or name) the runner reads through OAUTH_CLIENT_SECRET_ARN.
    #[arg(long, value_name = "ID")]
    pub secret_id: String,
    /// The AWS region (default: from the standard chain, e.g. AWS_REGION or the profile).
    #[arg(long)]
    pub region: Option<String>,
    /// How long the old secret keeps working if the rotation stops half-way (1s to 30d).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub grace: String,
    /// How long to wait for every instance to use the new secret (shorter than --grace).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,
    /// The ECS cluster of the runner's service (with --service): redeploy it after writing the
    /// secret unless its task definition sets OAUTH_CLIENT_SECRET_ARN.
    #[arg(long, requires = "service")]
    pub cluster: Option<String>,
    /// The ECS service (with --cluster).
    #[arg(long, requires = "cluster")]
    pub service: Option<String>,
    /// Do not ask to type `rotate`.
    #[arg(long)]
    pub yes: bool,
}

const REFRESH_ABOUT: &str = "\
Make a new client secret (the next credential generation) for a runner and print it once, with the
steps to apply it on the runner's platform.

Before asking, the command shows what will happen and which pipelines are running on the runner.
Confirm by typing `refresh` (or pass --yes). While runs are in progress the control plane refuses
unless you pass --force.

--mode revoke (the default): the existing credentials are revoked at once and the running runner is
disconnected. You must apply the new client_secret and restart the runner to reconnect; until then
its status shows Unknown and it can't run pipelines.

--mode overlap: the old secret keeps working until the grace period (--grace) ends and nothing is
disconnected, so you can apply the new secret and restart without downtime.";

const REFRESH_HELP: &str = "\
Examples:
  tether runners refresh-credentials prod-eu-1
  tether runners refresh-credentials prod-eu-1 --mode overlap --grace 24h
  tether runners refresh-credentials prod-eu-1 --yes --force    # even while pipelines run
  tether runners refresh-credentials prod-eu-1 --yes --output json | jq -r .client_secret";

/// `tether runners refresh-credentials`.
#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// Runner name or id.
    pub runner: String,
    /// revoke: the old secret stops working now and the running runner is disconnected.
    /// overlap: the old secret keeps working until the grace period ends; nothing is disconnected.
    #[arg(long, value_enum, default_value_t = RefreshMode::Revoke)]
    pub mode: RefreshMode,
    /// With --mode overlap: how long the old secret keeps working, e.g. 90s, 15m, 24h, 7d
    /// (1s to 30d; default: the control plane's).
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Refresh even while pipelines are running on the runner.
    #[arg(long)]
    pub force: bool,
    /// Do not ask to type `refresh`.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefreshMode {
    /// Revoke the old secret now and disconnect the runner.
    Revoke,
    /// Keep the old secret working until the grace period ends (zero-downtime rotation).
    Overlap,
}

impl RefreshMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshMode::Revoke => "revoke",
            RefreshMode::Overlap => "overlap",
        }
    }
}

/// Every run and task state; the last four are final.
pub const RUN_STATES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "lost",
];

#[derive(Debug, Subcommand)]
pub enum PipelinesCommand {
    /// Create or replace a pipeline from a YAML (or JSON) file and print what was stored.
    #[command(after_help = APPLY_HELP)]
    Apply {
        /// The pipeline file; `-` reads standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// The pipeline's name: overrides the file's `name:`, or supplies it when the file has none.
        #[arg(long)]
        name: Option<String>,
    },
    /// List pipelines.
    List,
    /// Show a pipeline and its tasks (environment values are shown only with --output json).
    Show {
        /// Pipeline name.
        name: String,
    },
    /// Delete a pipeline.
    Delete {
        /// Pipeline name.
        name: String,
        /// Do not ask to type the pipeline's name.
        #[arg(long)]
        yes: bool,
    },
    /// Start a run of a pipeline on a runner and print the run's id.
    #[command(
        long_about = "Start a run of a pipeline on a runner and print the run's id on standard output. \
            The run waits in `queued` until an instance of the runner takes its tasks.\n\n\
            With --wait or --follow the command returns when the run ends: exit code 0 if it \
            succeeded, 1 otherwise, with a one-line summary on standard error.",
        after_help = "Examples:\n  tether pipelines run nightly-export --runner prod-eu-1\n  \
        tether pipelines run nightly-export --runner prod-eu-1 --follow    # stream the log until it ends\n  \
        RUN=$(tether pipelines run nightly-export --runner prod-eu-1) && tether runs show \"$RUN\""
    )]
    Run {
        /// Pipeline name.
        name: String,
        /// The runner (name or id) to run it on.
        #[arg(long)]
        runner: String,
        /// Wait until the run ends; exit code 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
        /// Stream the run's log until the run ends (implies --wait). With --output json the log
        /// goes to standard error and standard output gets the final run.
        #[arg(long)]
        follow: bool,
    },
}

const APPLY_HELP: &str = "\
A pipeline file (YAML; JSON works too):

  name: nightly-export
  tasks:
    - name: extract
      run: ./export.sh --since yesterday
      env:
        TARGET: s3://bucket/exports
      timeout_seconds: 900
    - name: notify
      run: curl -fsS -X POST \"$WEBHOOK_URL\"

Tasks run one after the other; each `run` is a shell command the runner executes in its work
directory. `env` and `timeout_seconds` are optional; `name` may come from --name instead. Unknown
keys are an error. Applying a pipeline again replaces its tasks.

Examples:
  tether pipelines apply -f nightly-export.yaml
  tether pipelines apply -f pipeline.yaml --name nightly-export-staging
  generate-pipeline | tether pipelines apply -f - --name generated";

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show a run: its state and why, and each task's state and exit code.
    Show {
        /// Run id (printed by `tether pipelines run`).
        id: String,
    },
    /// Print a run's log (stdout and stderr of its tasks, combined).
    #[command(
        long_about = "Print a run's log: the output of its tasks, combined, as it was recorded. \
            The log is printed as is, whatever --output says.",
        after_help = "Examples:\n  tether runs logs 0190f5c2-...\n  \
        tether runs logs 0190f5c2-... --follow    # keep printing until the run ends"
    )]
    Logs {
        /// Run id.
        id: String,
        /// Keep printing new output until the run has ended and its log is read to the end.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a run: queued tasks never start, running ones are stopped.
    Cancel {
        /// Run id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users and their roles.
    List,
    /// Create a user; the password is read from standard input.
    Create {
        username: String,
        /// What the user may do: viewer reads, operator manages runners, admin also manages users.
        #[arg(long)]
        role: String,
    },
    /// Delete a user with their API tokens and web sessions (never the last admin).
    #[command(
        after_help = "Examples:\n  tether users delete alice          # asks you to type 'alice'\n  \
        tether users delete alice --yes"
    )]
    Delete {
        username: String,
        /// Do not ask to type the username.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a personal API token (printed once).
    #[command(after_help = "Examples:\n  tether tokens create --name laptop\n  \
        tether tokens create --name ci --expires-in 30d\n  \
        tether tokens create --name deploy-bot --user bot      # admins, for another user")]
    Create {
        /// A label to tell tokens apart, e.g. "laptop" or "ci".
        #[arg(long)]
        name: String,
        /// Whose token (admins only; default: yourself).
        #[arg(long)]
        user: Option<String>,
        /// Stop working after this long (`90m`, `12h`, `30d`; at most a year); default: until
        /// revoked.
        #[arg(long, value_parser = crate::duration::parse_seconds)]
        expires_in: Option<u64>,
    },
    /// List API tokens: id, name, when created, when they expire and when they were last used.
    List {
        /// Whose tokens (admins only; default: yours).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an API token by id (see `tether tokens list`): it stops working at once.
    Revoke {
        /// The token's id.
        id: String,
        /// Whose token (admins only; default: yours).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first.
    List {
        /// Only events about this runner (name or id).
        #[arg(long)]
        runner: Option<String>,
        /// How many events (default 50).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}
