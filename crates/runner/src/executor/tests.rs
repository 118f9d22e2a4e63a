//! The executor against real `sh` processes, observed through an attached outbox the way a
//! session sees them. Short timeouts and grace periods keep these fast.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_protocol::session::{TaskAssignment, TaskUpdate, TaskUpdateState};
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;
use crate::spool::Spool;

struct Harness {
    dir: tempfile::TempDir,
    workdir: PathBuf,
    outbox: Arc<Outbox>,
    metrics: Arc<RunnerMetrics>,
    executor: Executor,
    live: UnboundedReceiver<TaskUpdate>,
}

fn harness(max_tasks: u32) -> Harness {
    let dir = tempfile::tempdir().expect("dir");
    // Not created up front: the executor creates its workdir.
    let workdir = dir.path().join("work").join("nested");
    let outbox = Arc::new(Outbox::new(
        Spool::open(dir.path().join("spool")).expect("spool"),
        "i-test".into(),
    ));
    let (_, live) = outbox.attach();
    let metrics = Arc::new(RunnerMetrics::default());
    let grace = Grace {
        cancel: Duration::from_millis(300),
        output: Duration::from_secs(1),
    };
    let executor = Executor::new(
        workdir.clone(),
        max_tasks,
        grace,
        outbox.clone(),
        metrics.clone(),
    );
    Harness {
        dir,
        workdir,
        outbox,
        metrics,
        executor,
        live,
    }
}

fn task(id: &str, run: &str) -> TaskAssignment {
    TaskAssignment {
        task_id: id.into(),
        run_id: "run-1".into(),
        pipeline: "pipe".into(),
        name: "step".into(),
        run: run.into(),
        env: BTreeMap::new(),
        secret_env: Vec::new(),
        timeout_seconds: None,
    }
}

/// The task's updates up to and including its final one, checking the numbering on the way.
async fn until_final(h: &mut Harness, id: &str) -> Vec<TaskUpdate> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(u) = h.live.recv().await {
            if u.task_id == id {
                let last = u.state.is_final();
                got.push(u);
                if last {
                    break;
                }
            }
        }
    })
    .await
    .expect("the task ends within 10 s");
    assert_eq!(
        got.iter().map(|u| u.seq).collect::<Vec<_>>(),
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "seq counts 1, 2, 3, ..."
    );
    assert_eq!(got[0].state, TaskUpdateState::Running);
    assert_eq!(
        got[0].log_chunk, None,
        "the first update only says it started"
    );
    assert!(
        got[..got.len() - 1].iter().all(|u| !u.state.is_final()),
        "exactly one final update, and it comes last"
    );
    got
}

fn log(updates: &[TaskUpdate]) -> String {
    updates
        .iter()
        .filter_map(|u| u.log_chunk.as_deref())
        .collect()
}

fn last(updates: &[TaskUpdate]) -> &TaskUpdate {
    updates.last().expect("updates")
}

async fn idle(h: &Harness) {
    tokio::time::timeout(Duration::from_secs(5), h.executor.wait_idle())
        .await
        .expect("the executor goes idle");
}

#[tokio::test]
async fn exit_zero_succeeds_with_its_output_and_is_spooled() {
    let mut h = harness(2);
    assert_eq!(
        h.executor.start(task("ok", "echo hello")),
        Admission::Started
    );
    let updates = until_final(&mut h, "ok").await;
    let fin = last(&updates);
    assert_eq!(fin.state, TaskUpdateState::Succeeded);
    assert_eq!(fin.exit_code, Some(0));
    assert_eq!(fin.log_chunk, None, "output goes before the final update");
    assert_eq!(log(&updates), "hello\n");
    idle(&h).await;
    assert_eq!(h.metrics.active_tasks(), 0);
    let spooled = std::fs::read_to_string(h.dir.path().join("spool").join("ok.jsonl"))
        .expect("spooled before sending");
    assert_eq!(spooled.lines().count(), updates.len());
    h.outbox.ack("ok", fin.seq);
    assert!(h.outbox.is_empty());
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_exit_code() {
    let mut h = harness(2);
    h.executor.start(task("bad", "echo oops >&2; exit 3"));
    let updates = until_final(&mut h, "bad").await;
    let fin = last(&updates);
    assert_eq!(fin.state, TaskUpdateState::Failed);
    assert_eq!(fin.exit_code, Some(3));
    assert_eq!(fin.reason, None);
    assert_eq!(log(&updates), "oops\n");
}

#[tokio::test]
async fn stdout_and_stderr_are_one_stream_in_order() {
    let mut h = harness(2);
    h.executor.start(task(
        "mix",
        "echo one; echo two >&2; echo three; echo four >&2",
    ));
    let updates = until_final(&mut h, "mix").await;
    assert_eq!(log(&updates), "one\ntwo\nthree\nfour\n");
}

#[tokio::test]
async fn env_is_added_and_the_workdir_is_the_cwd() {
    let mut h = harness(2);
    let mut t = task(
        "env",
        r#"printf '%s|%s|%s' "$GREETING" "$(pwd -P)" "${PATH:+path}""#,
    );
    t.env.insert("GREETING".into(), "hi there".into());
    h.executor.start(t);
    let updates = until_final(&mut h, "env").await;
    assert_eq!(last(&updates).state, TaskUpdateState::Succeeded);
    let cwd = std::fs::canonicalize(&h.workdir).expect("the workdir was created");
    assert_eq!(
        log(&updates),
        format!("hi there|{}|path", cwd.display()),
        "task env on top of the runner's own (PATH)"
    );
}

/// The state letter from /proc/<pid>/stat, None once the process is gone.
fn process_state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let mut h = harness(2);
    let mut t = task(
        "slow",
        "sleep 30 & echo $! > bg.pid; echo started; sleep 30",
    );
    t.timeout_seconds = Some(1);
    let began = Instant::now();
    h.executor.start(t);
    let updates = until_final(&mut h, "slow").await;
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "killed promptly, took {:?}",
        began.elapsed()
    );
    let fin = last(&updates);
    assert_eq!(fin.state, TaskUpdateState::Failed);
    assert_eq!(fin.exit_code, None);
    assert_eq!(fin.reason.as_deref(), Some("timed out after 1 s"));
    assert_eq!(log(&updates), "started\n");
    let grandchild = std::fs::read_to_string(h.workdir.join("bg.pid")).expect("pid file");
    let grandchild = grandchild.trim();
    let mut state = process_state(grandchild);
    for _ in 0..20 {
        if matches!(state, None | Some('Z')) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = process_state(grandchild);
    }
    assert!(
        matches!(state, None | Some('Z')),
        "the background sleep {grandchild} was killed too (state {state:?})"
    );
}

#[tokio::test]
async fn cancel_terminates_then_kills_and_reports_cancelled() {
    let mut h = harness(2);
    // Ignoring SIGTERM (inherited by sleep) forces the SIGKILL after the grace period.
    h.executor
        .start(task("stubborn", "trap '' TERM; echo started; sleep 30"));
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let u = h.live.recv().await.expect("update");
            if u.log_chunk.is_some() {
                return u;
            }
        }
    })
    .await
    .expect("output within 5 s");
    assert_eq!(first.log_chunk.as_deref(), Some("started\n"));
    assert!(
        !h.executor.cancel("no-such-task"),
        "unknown tasks are ignored"
    );
    let began = Instant::now();
    assert!(h.executor.cancel("stubborn"));
    let rest = tokio::time::timeout(Duration::from_secs(5), h.live.recv())
        .await
        .expect("ends within 5 s")
        .expect("update");
    assert!(began.elapsed() < Duration::from_secs(3));
    assert_eq!(rest.seq, 3);
    assert_eq!(rest.state, TaskUpdateState::Cancelled);
    assert_eq!(rest.exit_code, None);
    assert_eq!(rest.reason.as_deref(), Some(CANCEL_REASON));
    idle(&h).await;
}

#[tokio::test]
async fn multibyte_output_survives_chunking() {
    let mut h = harness(2);
    // `cat` writes in large blocks, so reads come in full buffers; the leading byte makes the
    // 16 KiB cuts fall inside characters.
    let text = format!("x{}", "é€😀".repeat(6000));
    std::fs::create_dir_all(&h.workdir).expect("workdir");
    std::fs::write(h.workdir.join("big.txt"), &text).expect("write");
    h.executor.start(task("utf8", "cat big.txt"));
    let updates = until_final(&mut h, "utf8").await;
    let chunks = updates.iter().filter(|u| u.log_chunk.is_some()).count();
    assert!(chunks >= 2, "output was split into {chunks} chunk(s)");
    assert!(updates
        .iter()
        .filter_map(|u| u.log_chunk.as_ref())
        .all(|c| c.len() <= 2 * logbuf::CHUNK_BYTES));
    assert_eq!(log(&updates), text);
}

#[tokio::test]
async fn a_background_process_holding_the_output_does_not_hold_the_task() {
    let mut h = harness(2);
    let began = Instant::now();
    h.executor
        .start(task("bg", "(sleep 3; echo late) & echo early"));
    let updates = until_final(&mut h, "bg").await;
    assert!(
        began.elapsed() < Duration::from_millis(2500),
        "waited {:?}",
        began.elapsed()
    );
    assert_eq!(last(&updates).state, TaskUpdateState::Succeeded);
    assert_eq!(log(&updates), "early\n");
}

#[tokio::test]
async fn known_ids_are_ignored_and_capacity_is_enforced() {
    let mut h = harness(1);
    assert_eq!(h.executor.start(task("t1", "sleep 30")), Admission::Started);
    assert_eq!(
        h.executor.start(task("t1", "sleep 30")),
        Admission::AlreadyKnown
    );
    assert!(matches!(
        h.executor.start(task("t2", "true")),
        Admission::Rejected(reason) if reason.contains("TETHER_MAX_TASKS")
    ));
    assert_eq!(h.executor.running(), 1);
    assert_eq!(h.metrics.active_tasks(), 1);
    h.executor.cancel("t1");
    until_final(&mut h, "t1").await;
    idle(&h).await;
    assert_eq!(h.metrics.active_tasks(), 0);
    assert_eq!(
        h.executor.start(task("t1", "true")),
        Admission::AlreadyKnown,
        "finished earlier in this process"
    );
    assert_eq!(
        h.executor.start(task("t2", "true")),
        Admission::Started,
        "a rejected task may come back"
    );
    until_final(&mut h, "t2").await;
    // A task only the spool knows (from an earlier process) is not run again.
    let again = Executor::new(
        h.workdir.clone(),
        1,
        Grace::default(),
        h.outbox.clone(),
        h.metrics.clone(),
    );
    assert_eq!(again.start(task("t2", "true")), Admission::AlreadyKnown);
}

#[tokio::test]
async fn a_task_that_cannot_start_fails_with_the_reason() {
    let mut h = harness(2);
    std::fs::create_dir_all(h.workdir.parent().expect("parent")).expect("dir");
    std::fs::write(&h.workdir, "a file, not a directory").expect("write");
    h.executor.start(task("nowhere", "true"));
    let updates = until_final(&mut h, "nowhere").await;
    let fin = last(&updates);
    assert_eq!(fin.state, TaskUpdateState::Failed);
    assert!(
        fin.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("could not start the task")),
        "{fin:?}"
    );
}

#[tokio::test]
async fn secret_env_values_reach_the_task_but_not_its_log() {
    let mut h = harness(2);
    let mut t = task(
        "sec",
        // The value printed whole, split by the shell over two writes, and next to text.
        "echo \"key=$API_KEY\"; printf 'hunter'; sleep 0.3; printf '2-value!\\n'; echo plain=$MODE",
    );
    t.env.insert("API_KEY".into(), "hunter2-value".into());
    t.env.insert("MODE".into(), "release".into());
    t.secret_env = vec!["API_KEY".into()];
    assert_eq!(h.executor.start(t), Admission::Started);
    let updates = until_final(&mut h, "sec").await;
    assert_eq!(last(&updates).state, TaskUpdateState::Succeeded);
    let text = log(&updates);
    assert_eq!(text, "key=***\n***!\nplain=release\n");
    let spooled =
        std::fs::read_to_string(h.dir.path().join("spool").join("sec.jsonl")).expect("spooled");
    assert!(!spooled.contains("hunter2"), "{spooled}");
}
