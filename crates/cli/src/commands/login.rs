//! `tether login`: checks a control plane URL and API token and saves them to the CLI's config
//! file (mode 0600), so later commands need neither flag.

use anyhow::{bail, Context};
use tether_client::Client;

use crate::cli::{Global, LoginArgs};
use crate::config::{self, Saved};

/// Verifies the URL and token with `GET /api/v1/me`, then saves them.
pub async fn run(global: &Global, args: LoginArgs) -> anyhow::Result<()> {
    let saved = config::load().ok().flatten();
    let Some(url) = global.url.clone().or_else(|| saved.map(|s| s.url)) else {
        bail!("which control plane? pass --url or set TETHER_URL");
    };
    let token = match (&global.token, args.token_stdin) {
        (Some(t), false) => t.clone(),
        _ => super::read_line("API token: ")?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("no API token given");
    }
    let client = Client::new(&url, Some(token.clone()))?;
    let me = client.me().await.context("checking the token")?;
    let path = config::save(&Saved {
        url: client.base_url().to_owned(),
        token,
    })?;
    println!(
        "Logged in to {} as {} ({}). Saved to {}.",
        client.base_url(),
        me.username,
        me.role,
        path.display()
    );
    Ok(())
}
