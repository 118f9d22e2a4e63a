//! The admin commands against a real server process.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::procs::{
    assert_help, login_with_stdin, stderr, stdout, tether, ServerProc, ADMIN_TOKEN, BIN,
};

fn env(s: &ServerProc) -> Vec<(&'static str, String)> {
    s.env()
}

fn run(s: &ServerProc, args: &[&str]) -> std::process::Output {
    let e = env(s);
    let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tether(args, &pairs)
}

#[test]
fn create_list_show_delete() {
    let s = ServerProc::start();
    let o = run(
        &s,
        &[
            "runners",
            "create",
            "cli-one",
            "--platform",
            "gke",
            "--description",
            "made by a test",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("client_id:") && out.contains("tcs_"), "{out}");
    assert!(out.contains("shown only this once"), "{out}");

    let list = stdout(&run(&s, &["runners", "list"]));
    let header = list.lines().next().expect("header");
    assert!(
        header.starts_with("NAME") && header.contains("STATUS") && header.contains("PLATFORM"),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("cli-one") && l.contains("pending") && l.contains("gke")),
        "{list}"
    );

    let show = run(&s, &["runners", "show", "cli-one", "--output", "json"]);
    let runner: Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(runner["description"], "made by a test");
    let id = runner["id"].as_str().expect("id");
    let by_id = run(&s, &["runners", "show", id]);
    assert!(
        stdout(&by_id).contains("status:") && stdout(&by_id).contains("pending"),
        "{}",
        stdout(&by_id)
    );

    let json: Value =
        serde_json::from_slice(&run(&s, &["runners", "list", "--output", "json"]).stdout)
            .expect("json");
    assert_eq!(json["runners"].as_array().expect("runners").len(), 1);

    let del = run(&s, &["runners", "delete", "cli-one", "--yes"]);
    assert!(del.status.success(), "{}", stderr(&del));
    let gone = run(&s, &["runners", "show", "cli-one"]);
    assert_eq!(gone.status.code(), Some(1));
    let err = stderr(&gone);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: ") && err.contains("runner_not_found"),
        "{err}"
    );
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let s = ServerProc::start();
    let bad = run(&s, &["runners", "create", "x", "--platform", "aws"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("platform") && err.contains("aws_fargate"),
        "{err}"
    );

    let nothing = tether(&["runners", "list"], &[]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        stderr(&nothing).contains("no control plane URL"),
        "{}",
        stderr(&nothing)
    );

    let wrong = tether(
        &["runners", "list"],
        &[("TETHER_URL", &s.url), ("TETHER_TOKEN", "tpat_wrong")],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("invalid_token"),
        "{}",
        stderr(&wrong)
    );

    let unreachable = tether(
        &["runners", "list"],
        &[("TETHER_URL", "http://127.0.0.1:1"), ("TETHER_TOKEN", "x")],
    );
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains("cannot reach"),
        "{}",
        stderr(&unreachable)
    );

    // Destructive commands refuse without a terminal unless --yes.
    run(&s, &["runners", "create", "keep", "--platform", "local"]);
    let refused = run(&s, &["runners", "delete", "keep"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert!(
        run(&s, &["runners", "show", "keep"]).status.success(),
        "still there"
    );
}

#[test]
fn login_saves_a_private_config_that_later_commands_use() {
    let s = ServerProc::start();
    let config = tempfile::tempdir().expect("dir");
    let login = |token: &str| login_with_stdin(&s.url, config.path(), token);
    let bad = login("tpat_not_valid");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        !config.path().join("config.json").exists(),
        "nothing saved on failure"
    );

    let ok = login(ADMIN_TOKEN);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("as admin (admin)"), "{}", stdout(&ok));
    let file = config.path().join("config.json");
    let mode = std::fs::metadata(&file)
        .expect("saved")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let later = Command::new(BIN)
        .args(["runners", "list"])
        .env_clear()
        .env("TETHER_CONFIG_DIR", config.path())
        .output()
        .expect("run");
    assert!(
        later.status.success(),
        "{}",
        String::from_utf8_lossy(&later.stderr)
    );
}

#[test]
fn users_tokens_and_audit() {
    let s = ServerProc::start();
    let mut child = Command::new(BIN)
        .args(["users", "create", "carol", "--role", "viewer"])
        .env("TETHER_URL", &s.url)
        .env("TETHER_TOKEN", ADMIN_TOKEN)
        .env("TETHER_CONFIG_DIR", s.data_dir.join("cfg"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a long enough password\n")
        .expect("write");
    let o = child.wait_with_output().expect("output");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let t = run(
        &s,
        &["tokens", "create", "--user", "carol", "--name", "laptop"],
    );
    assert!(t.status.success(), "{}", stderr(&t));
    let token = stdout(&t).trim().to_owned();
    assert!(token.starts_with("tpat_"));
    let as_carol = tether(
        &["runners", "create", "nope", "--platform", "local"],
        &[("TETHER_URL", &s.url), ("TETHER_TOKEN", &token)],
    );
    assert_eq!(as_carol.status.code(), Some(1));
    assert!(
        stderr(&as_carol).contains("forbidden"),
        "{}",
        stderr(&as_carol)
    );

    // Listed without its value, revoked by id, and then refused.
    let list = run(&s, &["tokens", "list", "--user", "carol"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let listed = stdout(&list);
    assert!(
        listed.contains("LAST USED") && listed.contains("laptop") && !listed.contains("tpat_"),
        "{listed}"
    );
    let id = listed
        .lines()
        .find(|l| l.contains("laptop"))
        .and_then(|l| l.split_whitespace().next())
        .expect("token id")
        .to_owned();
    let revoked = run(&s, &["tokens", "revoke", &id, "--user", "carol"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let after = tether(
        &["runners", "list"],
        &[("TETHER_URL", &s.url), ("TETHER_TOKEN", &token)],
    );
    assert_eq!(after.status.code(), Some(1));
    assert!(
        stderr(&after).contains("invalid_token"),
        "{}",
        stderr(&after)
    );
    let again = run(&s, &["tokens", "revoke", &id, "--user", "carol"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again).trim().lines().count(),
        1,
        "{}",
        stderr(&again)
    );

    // Users: listed, deleted (confirmed with --yes), the last admin kept.
    let users = stdout(&run(&s, &["users", "list"]));
    assert!(
        users.contains("carol") && users.contains("viewer"),
        "{users}"
    );
    let unconfirmed = run(&s, &["users", "delete", "carol"]);
    assert_eq!(
        unconfirmed.status.code(),
        Some(1),
        "needs --yes without a terminal"
    );
    assert!(run(&s, &["users", "delete", "carol", "--yes"])
        .status
        .success());
    assert!(!stdout(&run(&s, &["users", "list"])).contains("carol"));
    let last = run(&s, &["users", "delete", "admin", "--yes"]);
    assert_eq!(last.status.code(), Some(1));
    assert!(stderr(&last).contains("only admin"), "{}", stderr(&last));

    let audit = stdout(&run(&s, &["audit", "list"]));
    assert!(
        audit.contains("user.created")
            && audit.contains("token.created")
            && audit.contains("token.revoked")
            && audit.contains("user.deleted"),
        "{audit}"
    );
}

#[test]
fn logout_revokes_the_saved_token_and_forgets_it() {
    let s = ServerProc::start();
    let config = tempfile::tempdir().expect("dir");
    let dir = config.path().to_str().expect("utf-8 path").to_owned();
    let t = run(
        &s,
        &[
            "tokens",
            "create",
            "--name",
            "session",
            "--expires-in",
            "1h",
        ],
    );
    assert!(t.status.success(), "{}", stderr(&t));
    assert!(stderr(&t).contains("valid until"), "{}", stderr(&t));
    let token = stdout(&t).trim().to_owned();
    let login = login_with_stdin(&s.url, config.path(), &token);
    assert!(login.status.success(), "{}", stderr(&login));

    let out = tether(&["logout"], &[("TETHER_CONFIG_DIR", &dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Revoked API token"),
        "{}",
        stdout(&out)
    );
    assert!(
        !config.path().join("config.json").exists(),
        "the login is forgotten"
    );
    let used = tether(
        &["runners", "list"],
        &[("TETHER_URL", &s.url), ("TETHER_TOKEN", &token)],
    );
    assert_eq!(used.status.code(), Some(1), "the token stopped working");
    // Nothing left to log out of: one line, non-zero.
    let again = tether(&["logout"], &[("TETHER_CONFIG_DIR", &dir)]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again).trim().lines().count(),
        1,
        "{}",
        stderr(&again)
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["server", "--help"],
        vec!["runner", "--help"],
        vec!["login", "--help"],
        vec!["runners", "--help"],
        vec!["runners", "create", "--help"],
        vec!["runners", "list", "--help"],
        vec!["runners", "show", "--help"],
        vec!["runners", "pause", "--help"],
        vec!["runners", "resume", "--help"],
        vec!["runners", "restart", "--help"],
        vec!["runners", "delete", "--help"],
        vec!["logout", "--help"],
        vec!["users", "list", "--help"],
        vec!["users", "create", "--help"],
        vec!["users", "delete", "--help"],
        vec!["tokens", "create", "--help"],
        vec!["tokens", "list", "--help"],
        vec!["tokens", "revoke", "--help"],
        vec!["audit", "list", "--help"],
    ] {
        assert_help(&args);
    }
    let create = stdout(&tether(&["runners", "create", "--help"], &[]));
    assert!(
        create.contains("aws_fargate") && create.contains("Example"),
        "{create}"
    );
    let runner = stdout(&tether(&["runner", "--help"], &[]));
    assert!(
        runner.contains("OAUTH_CLIENT_SECRET_FILE") && runner.contains("OAUTH_CLIENT_SECRET_ARN"),
        "{runner}"
    );
}
