//! Where task updates go: into the spool first, then to the live session if one is attached.
//! A session attaches after `welcome` and gets the backlog (every spooled update not acked yet)
//! plus a channel of the updates that follow; while no session is attached, updates only go to
//! disk, so nothing piles up in memory during an outage.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tether_protocol::session::TaskUpdate;
use tokio::sync::mpsc;

use crate::spool::Spool;

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// This process's instance id, written into every update it publishes: a later process
    /// replaying the spool names the instance the task was assigned to.
    instance_id: String,
}

#[derive(Debug)]
struct State {
    spool: Spool,
    live: Option<mpsc::UnboundedSender<TaskUpdate>>,
}

impl Outbox {
    pub fn new(spool: Spool, instance_id: String) -> Self {
        Self {
            state: Mutex::new(State { spool, live: None }),
            instance_id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spools `update`, then hands it to the attached session, if any. Spool and channel change
    /// under one lock, so a session sees each update exactly once: in its backlog or live.
    pub fn publish(&self, mut update: TaskUpdate) {
        if update.instance_id.is_none() {
            update.instance_id = Some(self.instance_id.clone());
        }
        let mut state = self.lock();
        if let Err(e) = state.spool.append(&update) {
            // Still deliver it live: a full disk should not also cost the control plane the update.
            tracing::error!(task.id = %update.task_id, seq = update.seq, error = %e,
                "cannot write a task update to the spool; it will be lost if the session drops");
        }
        if let Some(live) = &state.live {
            let _ = live.send(update);
        }
    }

    /// Starts delivering to a new session: drops whatever an earlier session left queued, returns
    /// the unacked backlog from the spool and the receiver for new updates.
    pub fn attach(&self) -> (Vec<TaskUpdate>, mpsc::UnboundedReceiver<TaskUpdate>) {
        let mut state = self.lock();
        let (tx, rx) = mpsc::unbounded_channel();
        state.live = Some(tx);
        let backlog = state.spool.unacked().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the update spool; only new updates will be sent");
            Vec::new()
        });
        (backlog, rx)
    }

    /// The session ended: updates go to disk only until the next [`Outbox::attach`].
    pub fn detach(&self) {
        self.lock().live = None;
    }

    /// The control plane stored `task_id`'s updates up to `seq`.
    pub fn ack(&self, task_id: &str, seq: u64) {
        if let Err(e) = self.lock().spool.ack(task_id, seq) {
            tracing::warn!(task.id = %task_id, seq, error = %e, "cannot record an ack in the update spool");
        }
    }

    /// True when every task's final update was acked.
    pub fn is_empty(&self) -> bool {
        self.lock().spool.is_empty()
    }

    /// Ids of the tasks that still have updates in the spool.
    pub fn task_ids(&self) -> Vec<String> {
        self.lock().spool.task_ids().map(str::to_owned).collect()
    }
}

#[cfg(test)]
mod tests {
    use tether_protocol::session::TaskUpdateState;

    use super::*;

    fn update(seq: u64, state: TaskUpdateState) -> TaskUpdate {
        TaskUpdate {
            task_id: "t".into(),
            seq,
            state,
            instance_id: None,
            log_chunk: None,
            exit_code: None,
            reason: None,
        }
    }

    #[test]
    fn updates_made_while_detached_arrive_as_backlog_then_live() {
        let dir = tempfile::tempdir().expect("dir");
        let outbox = Outbox::new(Spool::open(dir.path()).expect("open"), "i-test".into());
        let (backlog, mut first) = outbox.attach();
        assert!(backlog.is_empty());
        outbox.publish(update(1, TaskUpdateState::Running));
        let live = first.try_recv().expect("live");
        assert_eq!(live.seq, 1);
        assert_eq!(
            live.instance_id.as_deref(),
            Some("i-test"),
            "the outbox names its instance"
        );
        outbox.detach();
        outbox.publish(update(2, TaskUpdateState::Running));
        outbox.ack("t", 1);
        let (backlog, mut second) = outbox.attach();
        assert_eq!(
            backlog.iter().map(|u| u.seq).collect::<Vec<_>>(),
            [2],
            "acked updates are not sent again"
        );
        assert!(first.try_recv().is_err(), "the old session gets nothing");
        outbox.publish(update(3, TaskUpdateState::Failed));
        assert_eq!(second.try_recv().expect("live").seq, 3);
        assert!(second.try_recv().is_err(), "each update once per session");
        assert!(!outbox.is_empty());
        outbox.ack("t", 3);
        assert!(outbox.is_empty());
    }
}
