//! `tether server --database-url`: which backend it runs on is printed, the password never is (not
//! in the banner, the log or an error), and a URL it cannot use is one line and a non-zero exit.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::procs::{stderr, wait_child, ADMIN_TOKEN, BIN};

const SECRET: &str = "pw-n0t-for-logs";

/// `postgres://postgres:<SECRET>@host:port/db` for a fresh database (the test cluster trusts
/// loopback, so the password is accepted and ignored: it only has to stay out of sight).
fn url_with_password(db: &tether_pgtest::TestDatabase) -> String {
    db.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{SECRET}@"),
        1,
    )
}

#[test]
fn a_server_on_postgres_says_so_and_never_shows_the_password() {
    let db = tether_pgtest::TestDatabase::create_blocking();
    let url = url_with_password(&db);
    assert!(url.contains(SECRET), "{url}");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("server.log");
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("TETHER_DATABASE_URL", &url)
        .env("TETHER_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("server starts");
    let mut banner = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        banner.contains("  database:  postgres (postgres://postgres:***@127.0.0.1:"),
        "{banner}"
    );
    let logged = std::fs::read_to_string(&log).expect("log");
    for (what, text) in [("banner", &banner), ("log", &logged)] {
        assert!(
            !text.contains(SECRET),
            "the password is in the {what}:\n{text}"
        );
    }
}

#[test]
fn a_database_url_tether_cannot_use_is_one_line_without_the_password() {
    let dir = tempfile::tempdir().expect("dir");
    for url in [
        format!("mysql://root:{SECRET}@127.0.0.1/tether"),
        // Nothing listens on port 1: the pool gives up after its acquire timeout.
        format!("postgres://tether:{SECRET}@127.0.0.1:1/tether"),
    ] {
        let mut child = Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("TETHER_DATABASE_URL", &url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let code = wait_child(&mut child, Duration::from_secs(30));
        let out = child.wait_with_output().expect("output");
        assert!(matches!(code, Some(c) if c != 0), "{url}: exit {code:?}");
        let err = stderr(&out);
        assert!(!err.contains(SECRET), "{url}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(error_lines.len(), 1, "{url}: {err}");
    }
}
