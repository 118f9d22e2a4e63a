//! Credential rotation from the runner's side: hot reload of a secret file on the open session
//! (atomic rename, Kubernetes `..data` swap), `credentials_rotated`, malformed and refused new
//! secrets, coming back after a revocation, and the advice for a plain `OAUTH_CLIENT_SECRET`.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_domain::ClientSecret;
use tether_protocol::session::{RunnerMessage, ServerMessage};
use tokio::sync::watch;

use super::{ack, assign, config, exit_of, spawn_agent, Plane, TOKEN_PREFIX};
use crate::config::ReloadTiming;
use crate::config::SecretSourceConfig;
use crate::{Exit, RunnerConfig};

/// What `tether_runner` logs on this thread while the guard lives. `#[tokio::test]` runs the
/// agent on the test's own thread, so its lines land here and other tests' do not.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("tether_runner=debug")
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    async fn wait_for(&self, needle: &str) {
        for _ in 0..200 {
            if self.text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("never logged {needle:?}:\n{}", self.text());
    }

    /// Neither a client secret nor an access token ever shows up in a log line.
    fn assert_no_secrets(&self, secrets: &[&ClientSecret]) {
        let text = self.text();
        assert!(!text.is_empty(), "something was captured");
        assert!(
            !text.contains(TOKEN_PREFIX),
            "an access token was logged:\n{text}"
        );
        for s in secrets {
            assert!(
                !text.contains(s.expose()),
                "a client secret was logged:\n{text}"
            );
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn fast() -> ReloadTiming {
    ReloadTiming {
        file_poll: Duration::from_millis(50),
        rotated_poll: Duration::from_millis(50),
        rotated_window: Duration::from_secs(2),
    }
}

/// Reads its secret from `path`, which holds `secret`, accepted as generation 1.
fn file_config(plane: &Plane, dir: &Path, path: &Path, secret: &ClientSecret) -> RunnerConfig {
    plane.accept(secret, 1);
    RunnerConfig {
        secret: SecretSourceConfig::File(path.to_owned()),
        ..config(plane, dir)
    }
}

fn secret_file(dir: &Path) -> (std::path::PathBuf, ClientSecret) {
    let path = dir.join("client_secret");
    let secret = ClientSecret::generate();
    std::fs::write(&path, format!("{}\n", secret.expose())).expect("write");
    (path, secret)
}

/// How editors, `kubectl cp` and config tools replace a file: write aside, rename over it.
fn replace_atomically(path: &Path, content: &str) {
    let tmp = path.with_file_name(".client_secret.tmp");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The session drains and says goodbye on the connection it has; the agent exits cleanly.
async fn stop_on_this_session(
    plane: &mut Plane,
    stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<anyhow::Result<Exit>>,
) {
    stop.send(true).expect("stop");
    assert!(matches!(plane.next().await, RunnerMessage::Draining { .. }));
    assert!(matches!(plane.next().await, RunnerMessage::Goodbye { .. }));
    assert_eq!(exit_of(agent).await, Exit::Clean);
    plane.assert_no_new_connection();
}

#[tokio::test]
async fn an_atomic_rename_moves_the_open_session_to_the_new_secret() {
    let (logs, _guard) = Logs::capture();
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (path, old) = secret_file(dir.path());
    let (stop, stop_rx) = watch::channel(false);
    let agent = spawn_agent(
        file_config(&plane, dir.path(), &path, &old),
        fast(),
        stop_rx,
    );
    let conn = plane.connection().await;
    assert_eq!(conn.generation, 1);

    // Let the watcher take its first look, so what follows is a change it must notice.
    plane.assert_quiet(Duration::from_millis(200)).await;
    let new = ClientSecret::generate();
    plane.accept(&new, 2);
    replace_atomically(&path, &format!("{}\n", new.expose()));
    assert_eq!(
        plane.reauth().await,
        2,
        "reauth with a token of generation 2"
    );
    logs.wait_for("this session now uses credential generation 2")
        .await;
    plane.assert_no_new_connection();
    stop_on_this_session(&mut plane, stop, agent).await;
    logs.assert_no_secrets(&[&old, &new]);
}

#[tokio::test]
async fn a_kubernetes_data_symlink_swap_moves_the_open_session_too() {
    use std::os::unix::fs::symlink;
    // The kubelet's layout: client_secret -> ..data/client_secret, ..data -> ..<timestamp>.
    fn version(mount: &Path, name: &str, secret: &ClientSecret) {
        std::fs::create_dir_all(mount.join(name)).expect("dir");
        std::fs::write(mount.join(name).join("client_secret"), secret.expose()).expect("write");
    }
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let mount = dir.path().join("secret-volume");
    let old = ClientSecret::generate();
    version(&mount, "..2026_11_23_10_00_00.1", &old);
    symlink("..2026_11_23_10_00_00.1", mount.join("..data")).expect("symlink");
    let path = mount.join("client_secret");
    symlink("..data/client_secret", &path).expect("symlink");
    let (stop, stop_rx) = watch::channel(false);
    let agent = spawn_agent(
        file_config(&plane, dir.path(), &path, &old),
        fast(),
        stop_rx,
    );
    let conn = plane.connection().await;
    assert_eq!(conn.generation, 1);

    plane.assert_quiet(Duration::from_millis(200)).await;
    // The kubelet's update: a new timestamped dir, a new ..data link renamed over the old one.
    let new = ClientSecret::generate();
    plane.accept(&new, 2);
    version(&mount, "..2026_11_23_10_05_00.2", &new);
    symlink("..2026_11_23_10_05_00.2", mount.join("..data_tmp")).expect("symlink");
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("swap");
    std::fs::remove_dir_all(mount.join("..2026_11_23_10_00_00.1")).expect("clean up");
    assert_eq!(plane.reauth().await, 2);
    stop_on_this_session(&mut plane, stop, agent).await;
}

#[tokio::test]
async fn credentials_rotated_re_reads_an_updated_file_at_once() {
    let (logs, _guard) = Logs::capture();
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (path, old) = secret_file(dir.path());
    let (stop, stop_rx) = watch::channel(false);
    // The file is polled only hourly: only the message can explain a prompt reauth.
    let timing = ReloadTiming {
        file_poll: Duration::from_secs(3600),
        ..fast()
    };
    let agent = spawn_agent(
        file_config(&plane, dir.path(), &path, &old),
        timing,
        stop_rx,
    );
    let conn = plane.connection().await;

    let new = ClientSecret::generate();
    plane.accept(&new, 2);
    replace_atomically(&path, new.expose());
    plane.assert_quiet(Duration::from_millis(300)).await;
    let told = Instant::now();
    conn.send(ServerMessage::CredentialsRotated { generation: 2 });
    assert_eq!(plane.reauth().await, 2);
    assert!(
        told.elapsed() < Duration::from_secs(2),
        "{:?}",
        told.elapsed()
    );
    assert_eq!(
        logs.count("a new credential generation 2 exists; re-reading OAUTH_CLIENT_SECRET_FILE"),
        1,
        "{}",
        logs.text()
    );
    stop_on_this_session(&mut plane, stop, agent).await;
    logs.assert_no_secrets(&[&old, &new]);
}

#[tokio::test]
async fn a_malformed_new_secret_is_logged_once_and_the_session_kept() {
    let (logs, _guard) = Logs::capture();
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (path, old) = secret_file(dir.path());
    let (stop, stop_rx) = watch::channel(false);
    let agent = spawn_agent(
        file_config(&plane, dir.path(), &path, &old),
        fast(),
        stop_rx,
    );
    let _conn = plane.connection().await;

    plane.assert_quiet(Duration::from_millis(200)).await;
    replace_atomically(&path, "tcs_cut0ff\n");
    // About a dozen polls: no reauth, no reconnect, one log line.
    plane.assert_quiet(Duration::from_millis(600)).await;
    assert_eq!(logs.count("was it cut off"), 1, "{}", logs.text());
    assert!(logs
        .text()
        .contains("this session keeps the client secret it has"));
    assert_eq!(plane.refusals(), 0, "never sent to the token endpoint");
    plane.assert_no_new_connection();

    // Still watching: the corrected file moves the session.
    let new = ClientSecret::generate();
    plane.accept(&new, 2);
    replace_atomically(&path, new.expose());
    assert_eq!(plane.reauth().await, 2);
    stop_on_this_session(&mut plane, stop, agent).await;
}

#[tokio::test]
async fn a_refused_new_secret_keeps_the_session_until_the_control_plane_rotates() {
    let (logs, _guard) = Logs::capture();
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (path, old) = secret_file(dir.path());
    let (stop, stop_rx) = watch::channel(false);
    let agent = spawn_agent(
        file_config(&plane, dir.path(), &path, &old),
        fast(),
        stop_rx,
    );
    let conn = plane.connection().await;

    // Well-formed, but the control plane does not know it (yet): written before the refresh.
    plane.assert_quiet(Duration::from_millis(200)).await;
    let early = ClientSecret::generate();
    replace_atomically(&path, early.expose());
    logs.wait_for("refused the new client secret").await;
    plane.assert_quiet(Duration::from_millis(500)).await;
    assert_eq!(plane.refusals(), 1, "not retried on every poll");
    assert_eq!(logs.count("refused the new client secret"), 1);
    assert!(logs
        .text()
        .contains("this session keeps using the previous one"));

    // The refresh (overlap) makes it generation 2 and tells the session.
    plane.accept(&early, 2);
    conn.send(ServerMessage::CredentialsRotated { generation: 2 });
    assert_eq!(plane.reauth().await, 2);
    stop_on_this_session(&mut plane, stop, agent).await;
    logs.assert_no_secrets(&[&old, &early]);
}

#[tokio::test]
async fn after_a_revocation_the_same_process_comes_back_once_the_file_has_the_new_secret() {
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (path, old) = secret_file(dir.path());
    let (stop, stop_rx) = watch::channel(false);
    let agent = spawn_agent(
        file_config(&plane, dir.path(), &path, &old),
        fast(),
        stop_rx,
    );
    let conn = plane.connection().await;

    // Refresh in revoke mode: the old generation is gone and the session is cut.
    plane.revoke(1);
    conn.close_with(4401, "credentials_revoked");
    for _ in 0..100 {
        if plane.refusals() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        plane.refusals() >= 2,
        "the runner kept trying the old secret"
    );

    let new = ClientSecret::generate();
    plane.accept(&new, 2);
    replace_atomically(&path, new.expose());
    let written = Instant::now();
    let conn = plane.connection().await;
    assert_eq!(conn.generation, 2);
    assert!(
        written.elapsed() < Duration::from_secs(5),
        "back {:?} after the secret was written",
        written.elapsed()
    );
    assert!(!agent.is_finished(), "the same process reconnected");
    stop_on_this_session(&mut plane, stop, agent).await;
}

#[tokio::test]
async fn a_plain_secret_gets_the_restart_advice_once_per_generation() {
    const ADVICE: &str =
        "set OAUTH_CLIENT_SECRET to it and restart the runner before the old one expires";
    let (logs, _guard) = Logs::capture();
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = config(&plane, dir.path());
    let SecretSourceConfig::Value(secret) = config.secret.clone() else {
        panic!("a plain secret")
    };
    let (stop, stop_rx) = watch::channel(false);
    let agent = spawn_agent(config, fast(), stop_rx);

    // Told twice on one session and again on the next one.
    let conn = plane.connection().await;
    conn.send(ServerMessage::CredentialsRotated { generation: 2 });
    conn.send(ServerMessage::CredentialsRotated { generation: 2 });
    conn.close();
    let conn = plane.connection().await;
    conn.send(ServerMessage::CredentialsRotated { generation: 2 });
    // Messages are handled in order: once this task reports, the rotations were handled. Nothing
    // but the task's updates comes in between: no reauth, since the value cannot change.
    conn.send(assign("t1", "true"));
    let done = plane.until_final("t1").await;
    conn.send(ack(done.last().expect("final")));
    assert_eq!(logs.count(ADVICE), 1, "{}", logs.text());
    assert_eq!(
        logs.count(
            "the control plane has a new client secret (generation 2); set OAUTH_CLIENT_SECRET"
        ),
        1
    );

    // A later refresh deserves its own line.
    conn.send(ServerMessage::CredentialsRotated { generation: 3 });
    conn.send(assign("t2", "true"));
    let done = plane.until_final("t2").await;
    conn.send(ack(done.last().expect("final")));
    assert_eq!(logs.count(ADVICE), 2, "{}", logs.text());
    assert!(logs.text().contains("(generation 3)"));
    stop_on_this_session(&mut plane, stop, agent).await;
    logs.assert_no_secrets(&[&secret]);
}
