//! Tasks across sessions: assignments, updates, acks, replay after a reconnect, drain and shutdown.

use std::time::Duration;

use tether_protocol::session::{RunnerMessage, ServerMessage, TaskUpdate, TaskUpdateState};
use tokio::sync::watch;

use super::{ack, assign, config, exit_of, Plane};
use crate::spool::Spool;
use crate::Exit;

#[tokio::test]
async fn updates_survive_a_reconnect_and_a_drain_waits_for_tasks_and_acks() {
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (_stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(crate::run_until(config(&plane, dir.path()), stop_rx));

    let conn = plane.connection().await;
    conn.send(assign("t1", "echo hi"));
    let sent = plane.until_final("t1").await;
    let last = sent.last().expect("final").clone();
    assert_eq!(last.state, TaskUpdateState::Succeeded);
    assert_eq!(sent[1].log_chunk.as_deref(), Some("hi\n"));

    // Nothing was acked: a new session gets all of it again, in order.
    conn.close();
    let conn = plane.connection().await;
    assert_eq!(
        plane.until_final("t1").await,
        sent,
        "replayed from the spool"
    );
    conn.send(ack(&last));
    let spooled = dir.path().join("spool").join("t1.jsonl");
    for _ in 0..100 {
        if !spooled.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!spooled.exists(), "the acked task left the spool");

    conn.send(assign("t1", "echo again"));
    conn.send(assign("t2", "sleep 0.3; echo two"));
    conn.send(ServerMessage::Drain {
        reason: "restart".into(),
    });
    conn.send(assign("t3", "echo never"));
    let mut t2 = Vec::new();
    let (mut drained, mut rejected) = (false, false);
    while !(drained && rejected && t2.last().is_some_and(|u: &TaskUpdate| u.state.is_final())) {
        match plane.next().await {
            RunnerMessage::Draining { reason } => {
                assert_eq!(reason, "restart");
                drained = true;
            }
            RunnerMessage::Reject { task_id, reason } => {
                assert_eq!(task_id, "t3");
                assert!(reason.contains("draining"), "{reason}");
                rejected = true;
            }
            RunnerMessage::TaskUpdate(u) => {
                assert_eq!(u.task_id, "t2", "t1 was not run twice");
                t2.push(u);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let t2_final = t2.last().expect("final");
    assert_eq!(t2_final.state, TaskUpdateState::Succeeded);
    // Goodbye only once the final update is acked.
    conn.send(ack(t2_final));
    assert_eq!(
        plane.next().await,
        RunnerMessage::Goodbye {
            reason: "restart".into()
        }
    );
    assert_eq!(exit_of(agent).await, Exit::Clean);
}

#[tokio::test]
async fn shutdown_without_a_control_plane_waits_for_tasks_and_keeps_the_spool() {
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(crate::run_until(config(&plane, dir.path()), stop_rx));
    let conn = plane.connection().await;
    conn.send(assign("t1", "sleep 1; echo finished"));
    assert_eq!(plane.update().await.seq, 1);

    // The control plane goes away for good, then the process is told to stop.
    plane.server.abort();
    conn.close();
    stop.send(true).expect("stop");
    assert_eq!(exit_of(agent).await, Exit::Clean);

    let spool = Spool::open(dir.path().join("spool")).expect("spool");
    let left = spool.unacked().expect("unacked");
    let last = left.last().expect("updates stay on disk");
    assert_eq!(
        last.state,
        TaskUpdateState::Succeeded,
        "the task ran to its end before the exit"
    );
    assert!(left
        .iter()
        .any(|u| u.log_chunk.as_deref() == Some("finished\n")));
}

#[tokio::test]
async fn a_shutdown_signal_drains_across_reconnects_before_saying_goodbye() {
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(crate::run_until(config(&plane, dir.path()), stop_rx));
    let conn = plane.connection().await;
    conn.send(assign("t1", "sleep 1; echo done"));
    assert_eq!(plane.update().await.seq, 1);
    stop.send(true).expect("stop");
    let draining = RunnerMessage::Draining {
        reason: crate::instance::SHUTDOWN_REASON.into(),
    };
    assert_eq!(plane.next().await, draining);

    // While the task still runs: a new session hears that the instance drains before anything
    // else, and a re-sent assignment of the running task is neither run again nor rejected.
    conn.close();
    let conn = plane.connection().await;
    assert_eq!(plane.next().await, draining);
    conn.send(assign("t1", "echo twice"));
    let done = plane.until_final("t1").await;
    assert_eq!(done[0].seq, 1, "seq 1 was never acked, so it comes again");
    assert!(done
        .iter()
        .all(|u| u.log_chunk.as_deref() != Some("twice\n")));

    // The task has ended, its final update is not acked: the runner comes back to deliver it.
    conn.close();
    let conn = plane.connection().await;
    assert_eq!(plane.next().await, draining);
    let again = plane.until_final("t1").await;
    assert_eq!(again, done, "replayed from the spool");
    let last = again.last().expect("final");
    assert_eq!(last.state, TaskUpdateState::Succeeded);
    conn.send(ack(last));
    assert!(matches!(plane.next().await, RunnerMessage::Goodbye { .. }));
    assert_eq!(exit_of(agent).await, Exit::Clean);
}
