//! `tether runners apply-credentials --platform local`: write the new client secret into the file
//! a local runner reads (`OAUTH_CLIENT_SECRET_FILE`, which it watches), then wait until every live
//! instance has moved to the new generation. The file is replaced atomically (a new file in the
//! same directory, mode 0600, renamed over the old one), so the runner never reads half a secret.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tether_client::Client;
use tether_domain::ClientSecret;
use tether_protocol::api::Runner;

use super::{new_secret, Steps};
use crate::cli::{ApplyArgs, Output};
use crate::output;

/// How long to wait for the instances to pick the new secret up.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for an instance when none is connected (a cut runner reconnects within
/// seconds of reading the new secret; one that is not running at all never will).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(
    client: &Client,
    out: Output,
    args: &ApplyArgs,
    runner: &Runner,
) -> anyhow::Result<()> {
    let file = target_file(args, runner)?;
    let new = new_secret(client, runner, args.secret_stdin).await?;
    let mut steps = Steps::new(out);
    steps.done(format!(
        "Took the client_secret of generation {} from {}.",
        new.generation, new.from
    ));
    replace_file(&file, &new.secret)
        .with_context(|| format!("writing the new client_secret to {}", file.display()))?;
    steps.done(format!(
        "Wrote it to {} (the runner watches this file and reloads it).",
        file.display()
    ));
    let moved = wait_until_moved(client, &runner.id, new.generation).await?;
    match moved {
        Some(n) => steps.done(format!(
            "All {n} live instance(s) of '{}' use generation {} now.",
            runner.name, new.generation
        )),
        None => steps.done(format!(
            "No instance of '{}' is connected; it picks the new secret up when it starts.",
            runner.name
        )),
    }
    if out == Output::Json {
        return output::json(&serde_json::json!({
            "runner": runner.name,
            "platform": "local",
            "generation": new.generation,
            "secret_file": file,
            "instances_moved": moved.unwrap_or(0),
        }));
    }
    Ok(())
}

/// `--secret-file`, else the one file every live instance said it reads.
fn target_file(args: &ApplyArgs, runner: &Runner) -> anyhow::Result<PathBuf> {
    if let Some(f) = &args.secret_file {
        return Ok(f.clone());
    }
    if let Some(f) = &runner.secret_file {
        return Ok(PathBuf::from(f));
    }
    if runner.instances.is_empty() {
        bail!(
            "no instance of runner '{}' is connected to say where it reads its secret: pass \
             --secret-file with the runner's OAUTH_CLIENT_SECRET_FILE",
            runner.name
        );
    }
    bail!(
        "the instances of runner '{}' do not all read one secret file (a restart with the new \
         OAUTH_CLIENT_SECRET is needed for those that read the variable): pass --secret-file, or \
         restart them with the new value",
        runner.name
    )
}

/// Replaces `path` with the secret, atomically and readable only by its owner.
fn replace_file(path: &Path, secret: &ClientSecret) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "client_secret".to_owned());
    let tmp = dir.join(format!(".{name}.tether-{}", std::process::id()));
    // A temporary file left by an earlier run that was killed would make `create_new` fail.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret.expose().as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Waits until every live instance is on `generation`: `Some(count)`, or `None` if none
/// connected within [`CONNECT_TIMEOUT`].
async fn wait_until_moved(
    client: &Client,
    runner: &str,
    generation: u32,
) -> anyhow::Result<Option<usize>> {
    let started = tokio::time::Instant::now();
    let deadline = started + MOVE_TIMEOUT;
    loop {
        let r = client.get_runner(runner).await?;
        let on_new = r
            .instances
            .iter()
            .filter(|i| i.credential_generation >= generation)
            .count();
        if r.instances.is_empty() {
            if started.elapsed() >= CONNECT_TIMEOUT {
                return Ok(None);
            }
        } else if on_new == r.instances.len() {
            return Ok(Some(on_new));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the secret was written, but after {} s {} of {} instance(s) of '{}' still use an \
                 older generation: check the runner's log (`tether runners show {}`)",
                MOVE_TIMEOUT.as_secs(),
                r.instances.len() - on_new,
                r.instances.len(),
                r.name,
                r.name
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("client_secret");
        std::fs::write(&path, "old").expect("write");
        let secret = ClientSecret::generate();
        replace_file(&path, &secret).expect("replace");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            secret.expose()
        );
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
