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
    /// Register, inspect, pause, restart and delete runners.
    #[command(subcommand)]
    Runners(RunnersCommand),
    /// Manage users (admins only).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Create personal API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
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
    /// Show one runner: status and why, instances, credential generation.
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
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input.
    Create {
        username: String,
        /// What the user may do: viewer reads, operator manages runners, admin also manages users.
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a personal API token (printed once).
    Create {
        /// A label to tell tokens apart, e.g. "laptop" or "ci".
        #[arg(long)]
        name: String,
        /// Whose token (admins only; default: yourself).
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
