//! `tether runners refresh-credentials | reveal | credentials | revoke-previous` against a real
//! server process: what is refused changes nothing, a refresh prints the new secret once with the
//! platform's next steps, the old secret stops (or keeps) working at /oauth/token as the mode says.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tether_client::ClientError;

use crate::procs::{stderr, stdout, tether, ServerProc};

fn run(s: &ServerProc, args: &[&str]) -> Output {
    let env = s.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tether(args, &pairs)
}

fn json(s: &ServerProc, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let o = run(s, &all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

/// Registers a runner; its client id and first secret.
fn create(s: &ServerProc, name: &str, platform: &str) -> (String, String) {
    let created = json(s, &["runners", "create", name, "--platform", platform]);
    (
        created["credentials"]["client_id"]
            .as_str()
            .expect("client_id")
            .to_owned(),
        created["credentials"]["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_owned(),
    )
}

/// `POST /oauth/token` with the client credentials grant, as a runner does.
fn token(s: &ServerProc, client_id: &str, secret: &str) -> Result<(), ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let client = tether_client::Client::new(&s.url, None).expect("client");
    rt.block_on(client.client_credentials_token(client_id, secret))
        .map(|_| ())
}

fn assert_refused(s: &ServerProc, client_id: &str, secret: &str) {
    match token(s, client_id, secret) {
        Err(ClientError::OAuth { status: 401, error }) => {
            assert_eq!(error.error, "invalid_client");
        }
        other => panic!("expected 401 invalid_client, got {other:?}"),
    }
}

fn assert_works(s: &ServerProc, client_id: &str, secret: &str) {
    if let Err(e) = token(s, client_id, secret) {
        panic!("token request refused: {e}");
    }
}

/// The generation numbered `n` in a `credentials --output json` document.
fn generation(creds: &Value, n: u64) -> Value {
    creds["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .find(|g| g["generation"] == n)
        .unwrap_or_else(|| panic!("no generation {n}: {creds}"))
        .clone()
}

/// The value of a `key: value` line of table output.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no '{key}:' line in:\n{text}"))
        .trim()
        .to_owned()
}

fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(o));
    let err = stderr(o);
    let last = err.lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("error: "), "{err}");
    last
}

const REVOKE_WARNING: &str = "This will revoke the existing credentials and disconnect the running \
    runner. You must apply the new client_secret and restart the runner to reconnect; until then its \
    status shows Unknown and it can't run pipelines.";

#[test]
fn without_yes_and_without_a_terminal_a_refresh_is_refused_and_nothing_changes() {
    let s = ServerProc::start();
    let (client_id, secret) = create(&s, "cautious", "gke");
    let o = run(&s, &["runners", "refresh-credentials", "cautious"]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains(REVOKE_WARNING),
        "says what would happen: {err}"
    );
    let last = one_line_error(&o);
    assert!(
        last.contains("refusing to refresh the credentials of runner 'cautious' without --yes"),
        "{last}"
    );
    assert!(!stdout(&o).contains("tcs_"), "{}", stdout(&o));

    let creds = json(&s, &["runners", "credentials", "cautious"]);
    assert_eq!(creds["client_id"], client_id.as_str());
    assert_eq!(creds["generations"].as_array().expect("list").len(), 1);
    assert_eq!(generation(&creds, 1)["state"], "active");
    assert_works(&s, &client_id, &secret);
    assert_eq!(
        json(&s, &["runners", "show", "cautious"])["credential_generation"],
        1
    );
}

#[test]
fn yes_revokes_the_old_secret_and_prints_the_new_one_once_with_the_platforms_next_steps() {
    let s = ServerProc::start();
    let (client_id, old) = create(&s, "fargate-1", "aws_fargate");
    let o = run(
        &s,
        &["runners", "refresh-credentials", "fargate-1", "--yes"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(REVOKE_WARNING), "{}", stderr(&o));
    let out = stdout(&o);
    let secret = field(&out, "client_secret");
    assert!(secret.starts_with("tcs_") && secret != old, "{out}");
    assert_eq!(out.matches(&secret).count(), 1, "printed once: {out}");
    assert_eq!(field(&out, "client_id"), client_id);
    assert_eq!(field(&out, "generation"), "2");
    assert!(
        out.contains("`tether runners reveal fargate-1` shows it again until "),
        "{out}"
    );
    assert!(out.contains("Generation 1 is revoked"), "{out}");
    assert!(out.contains("Next steps (AWS ECS Fargate)"), "{out}");
    assert!(
        out.contains("aws secretsmanager put-secret-value --secret-id <SECRET_ARN>"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "'{{\"client_id\":\"{client_id}\",\"client_secret\":\"<client_secret>\"}}'"
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment"
        ),
        "{out}"
    );

    // Revoke mode: the old secret is refused from now on; the new one works.
    assert_refused(&s, &client_id, &old);
    assert_works(&s, &client_id, &secret);

    // Reveal gives the same secret back, as a table and as JSON.
    let revealed = run(&s, &["runners", "reveal", "fargate-1"]);
    assert!(revealed.status.success(), "{}", stderr(&revealed));
    let text = stdout(&revealed);
    assert_eq!(field(&text, "client_secret"), secret);
    assert_eq!(field(&text, "client_id"), client_id);
    assert_eq!(field(&text, "generation"), "2");
    assert!(field(&text, "reveal until").ends_with('Z'), "{text}");
    let revealed = json(&s, &["runners", "reveal", "fargate-1"]);
    assert_eq!(revealed["client_secret"], secret.as_str());
    assert_eq!(revealed["generation"], 2);

    let creds = json(&s, &["runners", "credentials", "fargate-1"]);
    assert_eq!(creds["generations"].as_array().expect("list").len(), 2);
    assert_eq!(generation(&creds, 2)["state"], "active");
    assert_eq!(generation(&creds, 1)["state"], "revoked");
    assert!(creds["reveal_until"].is_string(), "{creds}");
    assert!(
        !creds.to_string().contains(&secret),
        "never a secret: {creds}"
    );

    let table = stdout(&run(&s, &["runners", "credentials", "fargate-1"]));
    assert_eq!(field(&table, "client_id"), client_id);
    assert!(
        field(&table, "reveal window").starts_with("open until "),
        "{table}"
    );
    let header = table
        .lines()
        .find(|l| l.starts_with("GENERATION"))
        .unwrap_or_else(|| panic!("{table}"));
    for col in ["STATE", "CREATED", "BY", "EXPIRES", "LAST USED", "SESSIONS"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains("active")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("1 ") && l.contains("revoked")),
        "{table}"
    );

    // `runners show` has the auth health line and the new generation.
    let shown = json(&s, &["runners", "show", "fargate-1"]);
    let text = stdout(&run(&s, &["runners", "show", "fargate-1"]));
    assert!(
        field(&text, "credential generation").starts_with('2'),
        "{text}"
    );
    let summary = shown["auth_health"]["summary"].as_str().expect("summary");
    let auth = field(&text, "auth");
    assert!(!auth.is_empty(), "{text}");
    if !summary.is_empty() {
        assert_eq!(auth, summary);
    }
}

#[test]
fn overlap_keeps_the_previous_secret_retiring_until_revoke_previous() {
    let s = ServerProc::start();
    let (client_id, old) = create(&s, "gke-1", "gke");
    let o = run(
        &s,
        &[
            "runners",
            "refresh-credentials",
            "gke-1",
            "--mode",
            "overlap",
            "--grace",
            "1h",
            "--yes",
            "--output",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("keeps working for 1h")
            && stderr(&o).contains("nothing is disconnected"),
        "{}",
        stderr(&o)
    );
    // Standard output is the RefreshResponse and nothing else.
    let refreshed: Value = serde_json::from_slice(&o.stdout).expect("only JSON on stdout");
    assert_eq!(refreshed["mode"], "overlap");
    assert_eq!(refreshed["generation"], 2);
    assert_eq!(refreshed["previous_generation"], 1);
    assert_eq!(refreshed["sessions_closed"], 0);
    let new = refreshed["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(new.starts_with("tcs_"));
    let expires = time::OffsetDateTime::parse(
        refreshed["previous_expires_at"]
            .as_str()
            .expect("previous_expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(55) && left <= time::Duration::minutes(61),
        "expires in {left}"
    );

    let creds = json(&s, &["runners", "credentials", "gke-1"]);
    assert_eq!(generation(&creds, 2)["state"], "active");
    let previous = generation(&creds, 1);
    assert_eq!(previous["state"], "retiring");
    assert!(previous["expires_at"].is_string(), "{creds}");
    assert_works(&s, &client_id, &old);
    assert_works(&s, &client_id, &new);

    // Revoking early asks first: without a terminal and --yes nothing changes.
    let o = run(&s, &["runners", "revoke-previous", "gke-1"]);
    assert!(
        one_line_error(&o).contains("without --yes"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("Generation 1 (accepted until "),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        generation(&json(&s, &["runners", "credentials", "gke-1"]), 1)["state"],
        "retiring"
    );

    let o = run(&s, &["runners", "revoke-previous", "gke-1", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("1 ") && l.contains("revoked")),
        "prints the credentials afterwards: {out}"
    );
    let creds = json(&s, &["runners", "credentials", "gke-1"]);
    assert_eq!(generation(&creds, 1)["state"], "revoked");
    assert_eq!(generation(&creds, 2)["state"], "active");
    assert_refused(&s, &client_id, &old);
    assert_works(&s, &client_id, &new);
}

#[test]
fn grace_is_only_for_overlap_and_must_be_a_duration() {
    let s = ServerProc::start();
    let (client_id, secret) = create(&s, "strict", "snowflake");
    for (args, says) in [
        (
            vec!["--grace", "1h"],
            "--grace only applies to --mode overlap",
        ),
        (
            vec!["--mode", "revoke", "--grace", "1h"],
            "--grace only applies to --mode overlap",
        ),
        (
            vec!["--mode", "overlap", "--grace", "90"],
            "add a unit to 90",
        ),
        (
            vec!["--mode", "overlap", "--grace", "soon"],
            "not a duration",
        ),
        (
            vec!["--mode", "overlap", "--grace", "31d"],
            "between 1s and 30d",
        ),
        (
            vec!["--mode", "overlap", "--grace", "0s"],
            "between 1s and 30d",
        ),
    ] {
        let mut all = vec!["runners", "refresh-credentials", "strict", "--yes"];
        all.extend(&args);
        let o = run(&s, &all);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(one_line_error(&o).contains(says), "{args:?}: {err}");
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
    }
    let o = run(
        &s,
        &[
            "runners",
            "refresh-credentials",
            "strict",
            "--mode",
            "sideways",
            "--yes",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "clap rejects the mode");
    assert!(stderr(&o).contains("overlap"), "{}", stderr(&o));

    let creds = json(&s, &["runners", "credentials", "strict"]);
    assert_eq!(creds["generations"].as_array().expect("list").len(), 1);
    assert_eq!(generation(&creds, 1)["state"], "active");
    assert_works(&s, &client_id, &secret);
}

#[test]
fn after_the_reveal_window_closes_reveal_says_so_in_one_line() {
    let s = ServerProc::start_with_env(&[("TETHER_REVEAL_WINDOW_SECONDS", "1")]);
    create(&s, "brief", "local");
    let refreshed = json(&s, &["runners", "refresh-credentials", "brief", "--yes"]);
    assert_eq!(refreshed["generation"], 2);
    std::thread::sleep(Duration::from_millis(2100));
    let o = run(&s, &["runners", "reveal", "brief"]);
    assert_eq!(
        stderr(&o).trim_end(),
        "error: the reveal window has closed; refresh the credentials again to get a new secret"
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let table = stdout(&run(&s, &["runners", "credentials", "brief"]));
    assert_eq!(field(&table, "reveal window"), "closed", "{table}");
}

#[test]
fn every_credentials_command_has_help_with_an_example() {
    for (cmd, mentions) in [
        (
            "refresh-credentials",
            vec![
                "--mode", "overlap", "--grace", "24h", "--force", "--yes", "refresh",
            ],
        ),
        ("reveal", vec!["reveal window"]),
        ("credentials", vec!["generation"]),
        ("revoke-previous", vec!["--yes", "overlap"]),
    ] {
        let o = tether(&["runners", cmd, "--help"], &[]);
        assert!(o.status.success(), "{cmd}");
        let text = stdout(&o);
        assert!(
            text.contains("Usage:") && text.contains("Example"),
            "{cmd}: {text}"
        );
        assert!(
            text.contains(&format!("tether runners {cmd} prod-eu-1")),
            "{cmd}: {text}"
        );
        for m in mentions {
            assert!(text.contains(m), "{cmd}: {m}: {text}");
        }
    }
}
