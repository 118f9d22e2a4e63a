//! `tether users create` and `tether tokens create`: users with a role, and API tokens for them
//! (printed once).

use anyhow::bail;
use tether_client::Client;
use tether_protocol::api::CreateUserRequest;

use crate::cli::{Output, TokensCommand, UsersCommand};
use crate::output;

pub async fn run(client: &Client, out: Output, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create { username, role } => {
            let password = super::read_line("Password (12+ characters): ")?;
            if password.is_empty() {
                bail!("no password given on standard input");
            }
            let user = client
                .create_user(&CreateUserRequest {
                    username,
                    password,
                    role,
                })
                .await?;
            if out == Output::Json {
                return output::json(&user);
            }
            println!("Created user '{}' with role {}.", user.username, user.role);
            Ok(())
        }
    }
}

pub async fn tokens(client: &Client, out: Output, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { name, user } => {
            let user = match user {
                Some(u) => u,
                None => client.me().await?.username,
            };
            let token = client.create_token(&user, &name).await?;
            if out == Output::Json {
                return output::json(&serde_json::json!({
                    "token": token.token, "name": token.name, "username": token.username, "created_at": output::time(token.created_at)
                }));
            }
            println!("{}", token.token);
            eprintln!(
                "API token '{}' for {}: shown only once; store it now.",
                token.name, token.username
            );
            Ok(())
        }
    }
}
