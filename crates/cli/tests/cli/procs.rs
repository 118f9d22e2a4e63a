//! Helpers to run `tether` as a child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tether");
pub const ADMIN_TOKEN: &str = "cli-test-bootstrap-token-0123456789abcdef";

/// Runs an admin command to completion with only the given environment (plus PATH/HOME).
pub fn tether(args: &[&str], env: &[(&str, &str)]) -> Output {
    let config = tempfile::tempdir().expect("config dir");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("TETHER_CONFIG_DIR", config.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().expect("tether runs")
}

/// Runs `tether <args>` (ending in `--help`) and checks it printed real help; returns the text.
pub fn assert_help(args: &[&str]) -> String {
    let o = tether(args, &[]);
    assert!(o.status.success(), "{args:?}");
    let text = stdout(&o);
    assert!(
        text.contains("Usage:") && text.lines().count() > 3,
        "{args:?}: {text}"
    );
    text
}

/// `tether` with the server's URL and admin token, its own config dir and a clean environment;
/// the caller sets the arguments and standard streams.
pub fn admin_command(s: &ServerProc) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TETHER_URL", &s.url)
        .env("TETHER_TOKEN", ADMIN_TOKEN)
        .env("TETHER_CONFIG_DIR", s.data_dir.join("cfg"));
    cmd
}

/// `tether login --url <url> --token-stdin` with `token` typed on standard input and the login
/// saved under `config_dir`.
pub fn login_with_stdin(url: &str, config_dir: &Path, token: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["login", "--url", url, "--token-stdin"])
        .env_clear()
        .env("TETHER_CONFIG_DIR", config_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{token}\n").as_bytes())
        .expect("write");
    child.wait_with_output().expect("output")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `tether server` process with its own data directory.
pub struct ServerProc {
    pub child: Child,
    pub url: String,
    pub addr: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    /// With `TETHER_TEST_BACKEND=postgres`, this server's database (kept across restarts).
    database: Option<std::sync::Arc<tether_pgtest::TestDatabase>>,
}

impl ServerProc {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().to_path_buf();
        let mut s = Self::start_at(&data, "127.0.0.1:0");
        s._dir = Some(dir);
        s
    }

    /// Like [`Self::start`], with extra server settings (e.g. `TETHER_REVEAL_WINDOW_SECONDS`).
    pub fn start_with_env(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().to_path_buf();
        let mut s = Self::spawn(&data, "127.0.0.1:0", extra);
        s._dir = Some(dir);
        s
    }

    pub fn start_at(data_dir: &Path, listen: &str) -> Self {
        Self::spawn(data_dir, listen, &[])
    }

    fn spawn(data_dir: &Path, listen: &str, extra: &[(&str, &str)]) -> Self {
        let database = tether_pgtest::TestDatabase::wanted()
            .then(|| std::sync::Arc::new(tether_pgtest::TestDatabase::create_blocking()));
        Self::spawn_on(data_dir, listen, extra, database)
    }

    /// A replica: `listen` fixed, its database (`TETHER_DATABASE_URL`) and other settings in
    /// `extra`, shared with the other replicas.
    pub fn start_replica(data_dir: &Path, listen: &str, extra: &[(&str, &str)]) -> Self {
        Self::spawn_on(data_dir, listen, extra, None)
    }

    fn spawn_on(
        data_dir: &Path,
        listen: &str,
        extra: &[(&str, &str)],
        database: Option<std::sync::Arc<tether_pgtest::TestDatabase>>,
    ) -> Self {
        let log = std::fs::File::create(data_dir.with_extension("server.log")).expect("log");
        let mut child = Command::new(BIN)
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .env("TETHER_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
            .env("TETHER_HEARTBEAT_SECONDS", "1")
            .env("TETHER_FLUSH_SECONDS", "1")
            .env("TETHER_LOST_AFTER_SECONDS", "8")
            .envs(
                database
                    .as_ref()
                    .map(|db| ("TETHER_DATABASE_URL", db.url())),
            )
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = std::io::BufReader::new(stdout);
        let mut first = String::new();
        std::io::BufRead::read_line(&mut reader, &mut first).expect("banner");
        // Keep reading so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = first
            .trim()
            .strip_prefix("tether control plane listening on ")
            .unwrap_or_else(|| panic!("unexpected banner: {first}"))
            .to_owned();
        Self {
            child,
            url: format!("http://{addr}"),
            addr,
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            database,
        }
    }

    /// `kill -9`s the server and starts a new one on the same address and data directory.
    pub fn kill_and_restart(&mut self) {
        self.kill_and_restart_after(Duration::ZERO);
    }

    /// Like [`Self::kill_and_restart`], with the control plane down for `down` in between.
    pub fn kill_and_restart_after(&mut self, down: Duration) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(5));
        std::thread::sleep(down);
        self.start_again();
    }

    /// Starts a new server on the same address and data directory (the old one has exited).
    pub fn start_again(&mut self) {
        let mut next = Self::spawn_on(&self.data_dir, &self.addr, &[], self.database.clone());
        next._dir = self._dir.take();
        *self = next;
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TETHER_URL", self.url.clone()),
            ("TETHER_TOKEN", ADMIN_TOKEN.to_owned()),
        ]
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        wait_child(&mut self.child, within)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tether runner` process; stderr goes to a file for assertions.
pub struct RunnerProc {
    pub child: Child,
    pub log: PathBuf,
}

impl RunnerProc {
    pub fn start(env: &[(&str, String)], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(BIN);
        cmd.arg("runner")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
        ] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("runner starts");
        Self { child, log }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        wait_child(&mut self.child, within)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunnerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_child(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// HAProxy (Debian's package) in the foreground in front of replicas, with the configuration of
/// `docs/operations/replicas.md`: WebSocket tunnels, health checks on `/readyz`. Servers marked
/// `backup` take traffic only when every other one is down, which lets a test choose where a
/// session lands.
pub struct Haproxy {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// On `port` (replicas' public URL must name it before the balancer starts); `servers`:
    /// (name, address, backup).
    pub fn start_on(port: u16, servers: &[(&str, &str, bool)]) -> Self {
        let mut cfg = format!(
            "global\n  maxconn 2000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
             timeout server 60s\n  timeout tunnel 1h\nfrontend tether\n  bind 127.0.0.1:{port}\n  \
             default_backend replicas\nbackend replicas\n  balance leastconn\n  option httpchk GET /readyz\n  \
             http-check expect status 200\n"
        );
        for (name, addr, backup) in servers {
            let backup = if *backup { " backup" } else { "" };
            cfg.push_str(&format!(
                "  server {name} {addr} check inter 200ms fall 2 rise 1{backup}\n"
            ));
        }
        Self::start_with(port, &cfg)
    }

    /// With the configuration `cfg`, whose frontend binds 127.0.0.1:`port`.
    pub fn start_with(port: u16, cfg: &str) -> Self {
        let bin = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("HAProxy is installed (scripts/test installs Debian's haproxy)");
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, cfg).expect("config");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log");
        let child = Command::new(bin)
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy starts");
        let url = format!("http://127.0.0.1:{port}");
        let h = Self {
            child,
            url,
            _dir: dir,
        };
        h.wait_ready(Duration::from_secs(10));
        h
    }

    /// Waits until the balancer passes `/readyz` through to a ready replica.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if http(&self.url, reqwest::Method::GET, "/readyz", None, None).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("HAProxy did not pass /readyz through to a replica within {within:?}");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request from a test without a runtime of its own: `(status, body)`, status 0 if the
/// request got no answer.
pub fn http(
    base: &str,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .timeout(Duration::from_secs(10));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    })
}

/// The status of a client-credentials token request with `secret` at `base`.
/// An access token for the client, from `base`'s token endpoint.
pub fn access_token(base: &str, client_id: &str, secret: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body: serde_json::Value = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/oauth/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token json")
    });
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// The HTTP status of a runner-session upgrade to `base` with `token` (101 when accepted); the
/// connection is dropped right after.
pub fn connect_status(base: &str, token: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/runner/v1/connect"))
            .bearer_auth(token)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

pub fn token_status(base: &str, client_id: &str, secret: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/oauth/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}
