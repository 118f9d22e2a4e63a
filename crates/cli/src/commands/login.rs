//! `tether login`: checks a control plane URL and API token and saves them to the CLI's config
//! file (mode 0600), so later commands need neither flag. `tether logout` revokes that token and
//! deletes the file.

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

/// Revokes the token in use on the control plane, then deletes the saved login (whatever the
/// control plane said: a logout must not leave the token on disk).
pub async fn logout(global: &Global) -> anyhow::Result<()> {
    let revoked = match super::client(global) {
        Ok(client) => revoke_own(&client).await,
        Err(e) => Err(e),
    };
    let forgotten = config::forget()?;
    match (revoked, forgotten) {
        (Ok(Some(id)), _) => {
            println!("Revoked API token {id} and logged out.");
            Ok(())
        }
        (Ok(None), _) => {
            println!("The API token no longer worked; logged out.");
            Ok(())
        }
        (Err(e), Some(path)) => bail!(
            "deleted {}, but the token may still work: revoking it failed: {e:#}",
            path.display()
        ),
        (Err(e), None) => Err(e),
    }
}

/// Revokes the token the client uses; `None` if it was not valid any more.
async fn revoke_own(client: &Client) -> anyhow::Result<Option<String>> {
    let me = match client.me().await {
        Ok(me) => me,
        Err(tether_client::ClientError::Api { status: 401, .. }) => return Ok(None),
        Err(e) => return Err(e).context("checking the token"),
    };
    let Some(id) = me.token_id else {
        bail!("the control plane did not say which token this is; revoke it with `tether tokens revoke`");
    };
    client
        .revoke_token(&me.username, &id)
        .await
        .context("revoking the token")?;
    Ok(Some(id))
}
