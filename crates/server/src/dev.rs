//! `tether server --dev`: the local runner it registers, and where its secret is written.

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Credentials of the local runner `tether server --dev` registers, handed to whoever runs it.
/// The secret is in a file (mode 0600) in the dev data directory, which the runner watches: the
/// refresh guide can be tried on it, applying the new secret by writing that file.
#[derive(Debug)]
pub struct DevRunner {
    pub url: String,
    pub client_id: tether_domain::ClientId,
    pub secret_file: std::path::PathBuf,
    /// Turns true when the server is shutting down: the runner should say goodbye and stop.
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the `--dev` local runner (the CLI supplies it, so this crate need not depend on the agent).
pub type DevRunnerLauncher = Box<dyn FnOnce(DevRunner) -> JoinHandle<()> + Send>;

/// Writes the dev runner's secret to `<data dir>/local-runner/client_secret`, readable only by us.
pub(crate) fn write_dev_secret(
    data_dir: &std::path::Path,
    secret: &tether_domain::ClientSecret,
) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = data_dir.join("local-runner");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("client_secret");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(secret.expose().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
