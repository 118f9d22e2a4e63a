//! `tether audit list`: the audit log, newest first, optionally for one runner.

use tether_client::Client;

use crate::cli::{AuditCommand, Output};
use crate::output;

pub async fn run(client: &Client, out: Output, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List { runner, limit } => {
            let list = client
                .list_audit(runner.as_deref(), Some(limit.clamp(1, 500)), None)
                .await?;
            if out == Output::Json {
                return output::json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .events
                .iter()
                .map(|e| {
                    vec![
                        output::time(e.at),
                        e.actor.clone(),
                        e.action.clone(),
                        e.runner.clone().unwrap_or_else(|| "-".into()),
                        e.detail.to_string(),
                    ]
                })
                .collect();
            output::table(&["AT", "ACTOR", "ACTION", "RUNNER", "DETAIL"], &rows);
            Ok(())
        }
    }
}
