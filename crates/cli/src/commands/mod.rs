//! Admin commands: each resolves the control plane URL and token, calls the API, prints.

pub mod apply;
pub mod audit;
pub mod credentials;
pub mod login;
pub mod pipelines;
pub mod rotate;
pub mod runners;
pub mod runs;
pub mod server;
pub mod users;

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{anyhow, bail};
use tether_client::Client;

use crate::cli::{Command, Global};
use crate::config;

pub async fn dispatch(global: &Global, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Login(args) => login::run(global, args).await,
        Command::Logout => login::logout(global).await,
        Command::Runners(c) => runners::run(&client(global)?, global.output, c).await,
        Command::Users(c) => users::run(&client(global)?, global.output, c).await,
        Command::Tokens(c) => users::tokens(&client(global)?, global.output, c).await,
        Command::Pipelines(c) => pipelines::run(&client(global)?, global.output, c).await,
        Command::Runs(c) => runs::run(&client(global)?, global.output, c).await,
        Command::Audit(c) => audit::run(&client(global)?, global.output, c).await,
        Command::Server(_) | Command::Runner(_) => bail!("not an admin command"),
    }
}

/// The API client: URL and token from flags/environment first, then `tether login`'s file.
pub fn client(global: &Global) -> anyhow::Result<Client> {
    let saved = config::load()?;
    let url = global
        .url
        .clone()
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
        .ok_or_else(|| {
            anyhow!("no control plane URL: pass --url, set TETHER_URL or run `tether login`")
        })?;
    let token = global
        .token
        .clone()
        .or_else(|| saved.map(|s| s.token))
        .ok_or_else(|| {
            anyhow!("no API token: pass --token, set TETHER_TOKEN or run `tether login`")
        })?;
    Ok(Client::new(&url, Some(token))?)
}

/// Reads one line from stdin, prompting on stderr only when a person is typing.
pub fn read_line(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Asks the user to type `expected` to confirm. Without a terminal, refuses unless `--yes` was given.
pub fn confirm(what: &str, expected: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without --yes (stdin is not a terminal to confirm on)");
    }
    let typed = read_line(&format!("To {what}, type `{expected}`: "))?;
    if typed.trim() != expected {
        bail!(
            "not confirmed: you typed '{}', nothing was changed",
            typed.trim()
        );
    }
    Ok(())
}
