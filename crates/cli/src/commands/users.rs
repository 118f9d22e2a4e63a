//! `tether users list|create|delete` and `tether tokens create|list|revoke`: users with a role,
//! and API tokens for them (a new one is printed once).

use anyhow::bail;
use tether_client::Client;
use tether_protocol::api::CreateUserRequest;

use crate::cli::{Output, TokensCommand, UsersCommand};
use crate::output;

pub async fn run(client: &Client, out: Output, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::List => {
            let list = client.list_users().await?;
            if out == Output::Json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .users
                .iter()
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.role.clone(),
                        output::time(u.created_at),
                    ]
                })
                .collect();
            output::table(&["USERNAME", "ROLE", "CREATED"], &rows);
            Ok(())
        }
        UsersCommand::Delete { username, yes } => {
            super::confirm(&format!("delete user '{username}'"), &username, yes)?;
            client.delete_user(&username).await?;
            println!(
                "Deleted user '{username}': their API tokens and web sessions stopped working."
            );
            Ok(())
        }
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
    let whose = |user: Option<String>| async move {
        match user {
            Some(u) => Ok::<_, anyhow::Error>(u),
            None => Ok(client.me().await?.username),
        }
    };
    match command {
        TokensCommand::Create {
            name,
            user,
            expires_in,
        } => {
            let user = whose(user).await?;
            let token = client.create_token(&user, &name, expires_in).await?;
            if out == Output::Json {
                return output::json(&serde_json::json!({
                    "token": token.token, "id": token.id, "name": token.name,
                    "username": token.username, "created_at": output::time(token.created_at),
                    "expires_at": token.expires_at.map(output::time),
                }));
            }
            println!("{}", token.token);
            let until = token.expires_at.map_or_else(
                || "until revoked".to_owned(),
                |t| format!("until {}", output::time(t)),
            );
            eprintln!(
                "API token '{}' ({}) for {}, valid {until}: shown only once; store it now.",
                token.name, token.id, token.username
            );
            Ok(())
        }
        TokensCommand::List { user } => {
            let user = whose(user).await?;
            let list = client.list_tokens(&user).await?;
            if out == Output::Json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        output::time(t.created_at),
                        t.expires_at
                            .map_or_else(|| "never".to_owned(), output::time),
                        t.last_used_at
                            .map_or_else(|| "never".to_owned(), output::time),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "CREATED", "EXPIRES", "LAST USED"], &rows);
            Ok(())
        }
        TokensCommand::Revoke { id, user } => {
            let user = whose(user).await?;
            client.revoke_token(&user, &id).await?;
            println!("Revoked API token {id} of {user}: it stops working at once.");
            Ok(())
        }
    }
}
