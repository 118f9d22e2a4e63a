//! The on-disk spool of task updates, `<workdir>/spool/<task_id>.jsonl`: every update is appended
//! before it is sent, acks are appended as they arrive, and a task's file is deleted once its final
//! update is acked. This is what carries updates across disconnects, restarts and `kill -9`.
//! It only stores; when to send what is the outbox's business.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tether_protocol::session::{TaskUpdate, TaskUpdateState};

/// The final update recorded for a task that a previous runner process left without one.
pub const INTERRUPTED_REASON: &str =
    "the runner stopped while the task was running; its outcome is unknown";

/// One line of a spool file.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Update(TaskUpdate),
    /// The control plane stored every update up to `seq`.
    Ack {
        seq: u64,
    },
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// The instance that ran the task, as its updates say.
    instance_id: Option<String>,
    last_seq: u64,
    acked: u64,
    final_seq: Option<u64>,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    tasks: BTreeMap<String, Entry>,
}

impl Spool {
    /// Opens (creating) the spool directory and loads what a previous process left there. Tasks
    /// that never reached a final update get one (`failed`, [`INTERRUPTED_REASON`]): nothing
    /// runs them any more, and the control plane should not wait for them forever.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let mut spool = Spool {
            dir,
            tasks: BTreeMap::new(),
        };
        for dirent in fs::read_dir(&spool.dir)? {
            let path = dirent?.path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                spool.load(path)?;
            }
        }
        let interrupted: Vec<(String, u64, Option<String>)> = spool
            .tasks
            .iter()
            .filter(|(_, e)| e.final_seq.is_none())
            .map(|(id, e)| (id.clone(), e.last_seq, e.instance_id.clone()))
            .collect();
        for (task_id, last_seq, instance_id) in interrupted {
            tracing::warn!(task.id = %task_id, "a task was still running when the previous runner process stopped; reporting it failed");
            spool.append(&TaskUpdate {
                task_id,
                seq: last_seq + 1,
                state: TaskUpdateState::Failed,
                instance_id,
                log_chunk: None,
                exit_code: None,
                reason: Some(INTERRUPTED_REASON.to_owned()),
            })?;
        }
        Ok(spool)
    }

    fn load(&mut self, path: PathBuf) -> io::Result<()> {
        let bytes = fs::read(&path)?;
        // A crash mid-write leaves a last line without its newline: cut it off, so that later
        // appends start on a clean line.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(file = %path.display(), bytes = bytes.len() - complete,
                "skipping a truncated last line in the update spool (the runner stopped mid-write)");
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(complete as u64)?;
        }
        let (updates, acked) = parse(&bytes[..complete], &path);
        let Some(task_id) = updates.first().map(|u| u.task_id.clone()) else {
            tracing::warn!(file = %path.display(), "removing a spool file without any update");
            return fs::remove_file(&path);
        };
        let last_seq = updates.iter().map(|u| u.seq).max().unwrap_or(0);
        let final_seq = updates
            .iter()
            .filter(|u| u.state.is_final())
            .map(|u| u.seq)
            .min();
        if final_seq.is_some_and(|f| acked >= f) {
            return fs::remove_file(&path);
        }
        let instance_id = updates.iter().rev().find_map(|u| u.instance_id.clone());
        self.tasks.insert(
            task_id,
            Entry {
                path,
                instance_id,
                last_seq,
                acked,
                final_seq,
            },
        );
        Ok(())
    }

    /// Appends `update` to its task's file. Final updates are synced to disk before this returns:
    /// they are the ones the control plane must never miss.
    pub fn append(&mut self, update: &TaskUpdate) -> io::Result<()> {
        let dir = &self.dir;
        let entry = self
            .tasks
            .entry(update.task_id.clone())
            .or_insert_with(|| Entry {
                path: dir.join(file_name(&update.task_id)),
                instance_id: None,
                last_seq: 0,
                acked: 0,
                final_seq: None,
            });
        let mut line = serde_json::to_vec(&Line::Update(update.clone()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&entry.path)?;
        // One write per line, so a crash leaves at most one partial line at the end.
        file.write_all(&line)?;
        if update.state.is_final() {
            file.sync_data()?;
            entry.final_seq = Some(update.seq);
        }
        entry.last_seq = entry.last_seq.max(update.seq);
        if update.instance_id.is_some() {
            entry.instance_id.clone_from(&update.instance_id);
        }
        Ok(())
    }

    /// Records that the control plane stored `task_id`'s updates up to `seq`; deletes the task's
    /// file once its final update is acked. Acks for unknown tasks are ignored.
    pub fn ack(&mut self, task_id: &str, seq: u64) -> io::Result<()> {
        let Some(entry) = self.tasks.get_mut(task_id) else {
            return Ok(());
        };
        if seq <= entry.acked {
            return Ok(());
        }
        entry.acked = seq;
        if entry.final_seq.is_some_and(|f| seq >= f) {
            let path = entry.path.clone();
            self.tasks.remove(task_id);
            return fs::remove_file(path);
        }
        // Not synced: a lost ack only means the update is sent once more.
        let mut line = serde_json::to_vec(&Line::Ack { seq })?;
        line.push(b'\n');
        OpenOptions::new()
            .append(true)
            .open(&entry.path)?
            .write_all(&line)
    }

    /// Every update not acked yet, per task in `seq` order, read back from disk.
    pub fn unacked(&self) -> io::Result<Vec<TaskUpdate>> {
        let mut out = Vec::new();
        for entry in self.tasks.values().filter(|e| e.last_seq > e.acked) {
            let (mut updates, _) = parse(&fs::read(&entry.path)?, &entry.path);
            updates.retain(|u| u.seq > entry.acked);
            updates.sort_by_key(|u| u.seq);
            updates.dedup_by_key(|u| u.seq);
            out.extend(updates);
        }
        Ok(out)
    }

    /// True when every task's final update was acked.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Ids of the tasks the spool holds updates for.
    pub fn task_ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }
}

/// The updates and the highest ack in a spool file; lines that do not parse are skipped.
fn parse(bytes: &[u8], path: &Path) -> (Vec<TaskUpdate>, u64) {
    let mut updates = Vec::new();
    let mut acked = 0;
    for raw in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Line>(raw) {
            Ok(Line::Update(u)) => updates.push(u),
            Ok(Line::Ack { seq }) => acked = acked.max(seq),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping a corrupt line in the update spool");
            }
        }
    }
    (updates, acked)
}

/// Task ids come from the control plane: anything but `[A-Za-z0-9_-]` is percent-encoded so an id
/// can never name a path outside the spool.
fn file_name(task_id: &str) -> String {
    let mut name = String::with_capacity(task_id.len() + 6);
    for b in task_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            name.push(char::from(b));
        } else {
            let _ = write!(name, "%{b:02X}");
        }
    }
    name.push_str(".jsonl");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(task: &str, seq: u64, state: TaskUpdateState, log: Option<&str>) -> TaskUpdate {
        TaskUpdate {
            task_id: task.into(),
            seq,
            state,
            instance_id: Some("i-old".into()),
            log_chunk: log.map(str::to_owned),
            exit_code: (state == TaskUpdateState::Succeeded).then_some(0),
            reason: None,
        }
    }

    fn seqs(updates: &[TaskUpdate], task: &str) -> Vec<u64> {
        updates
            .iter()
            .filter(|u| u.task_id == task)
            .map(|u| u.seq)
            .collect()
    }

    #[test]
    fn append_ack_and_delete_after_the_final_ack() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(dir.path()).expect("open");
        assert!(spool.is_empty());
        spool
            .append(&update("t1", 1, TaskUpdateState::Running, None))
            .expect("append");
        spool
            .append(&update("t1", 2, TaskUpdateState::Running, Some("hello\n")))
            .expect("append");
        let file = dir.path().join("t1.jsonl");
        assert_eq!(
            fs::read_to_string(&file).expect("read").lines().count(),
            2,
            "one JSON line per update"
        );
        spool.ack("t1", 2).expect("ack");
        assert!(!spool.is_empty(), "no final update yet");
        assert!(spool.unacked().expect("unacked").is_empty());
        spool
            .append(&update("t1", 3, TaskUpdateState::Succeeded, None))
            .expect("append");
        assert_eq!(seqs(&spool.unacked().expect("unacked"), "t1"), [3]);
        spool.ack("t1", 3).expect("ack");
        assert!(spool.is_empty());
        assert!(
            !file.exists(),
            "the file goes once the final update is acked"
        );
        spool
            .ack("unknown", 1)
            .expect("an ack for an unknown task is ignored");
    }

    #[test]
    fn replays_only_unacked_updates_in_seq_order() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(dir.path()).expect("open");
        for seq in 1..=4 {
            spool
                .append(&update("a", seq, TaskUpdateState::Running, Some("x")))
                .expect("append");
        }
        spool
            .append(&update("b", 1, TaskUpdateState::Running, None))
            .expect("append");
        spool.ack("a", 2).expect("ack");
        spool.ack("a", 1).expect("an older ack changes nothing");
        let pending = spool.unacked().expect("unacked");
        assert_eq!(seqs(&pending, "a"), [3, 4]);
        assert_eq!(seqs(&pending, "b"), [1]);
    }

    #[test]
    fn a_new_spool_reloads_what_the_previous_process_left() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let mut spool = Spool::open(dir.path()).expect("open");
            for seq in 1..=2 {
                spool
                    .append(&update("done", seq, TaskUpdateState::Running, Some("out")))
                    .expect("append");
            }
            spool
                .append(&update("done", 3, TaskUpdateState::Succeeded, None))
                .expect("append");
            spool.ack("done", 1).expect("ack");
            spool
                .append(&update("gone", 1, TaskUpdateState::Failed, None))
                .expect("append");
            spool.ack("gone", 1).expect("ack");
        }
        let spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(spool.task_ids().collect::<Vec<_>>(), ["done"]);
        let pending = spool.unacked().expect("unacked");
        assert_eq!(seqs(&pending, "done"), [2, 3], "the ack was persisted");
        assert_eq!(pending[0].log_chunk.as_deref(), Some("out"));
        assert_eq!(pending[1].state, TaskUpdateState::Succeeded);
    }

    #[test]
    fn a_task_interrupted_by_a_restart_is_reported_failed() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let mut spool = Spool::open(dir.path()).expect("open");
            spool
                .append(&update("t", 1, TaskUpdateState::Running, None))
                .expect("append");
            spool.ack("t", 1).expect("ack");
        }
        let mut spool = Spool::open(dir.path()).expect("reopen");
        let pending = spool.unacked().expect("unacked");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].seq, 2);
        assert_eq!(pending[0].state, TaskUpdateState::Failed);
        assert_eq!(pending[0].reason.as_deref(), Some(INTERRUPTED_REASON));
        // It names the instance the task ran on, so the control plane takes it from the next one.
        assert_eq!(pending[0].instance_id.as_deref(), Some("i-old"));
        spool.ack("t", 2).expect("ack");
        assert!(spool.is_empty());
    }

    #[test]
    fn a_truncated_last_line_is_skipped_and_cut_off() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let mut spool = Spool::open(dir.path()).expect("open");
            spool
                .append(&update("t", 1, TaskUpdateState::Running, None))
                .expect("append");
            spool
                .append(&update("t", 2, TaskUpdateState::Running, Some("a")))
                .expect("append");
        }
        let file = dir.path().join("t.jsonl");
        let mut f = OpenOptions::new().append(true).open(&file).expect("open");
        f.write_all(br#"{"kind":"update","task_id":"t","seq":3,"sta"#)
            .expect("write");
        drop(f);
        let mut spool = Spool::open(dir.path()).expect("a torn line is not fatal");
        // 1 and 2 survive; the torn 3 is gone; the interrupted task got a final 3.
        let pending = spool.unacked().expect("unacked");
        assert_eq!(seqs(&pending, "t"), [1, 2, 3]);
        assert_eq!(pending[2].state, TaskUpdateState::Failed);
        spool
            .ack("t", 2)
            .expect("ack after the cut line still parses");
        let reopened = Spool::open(dir.path()).expect("reopen");
        assert_eq!(seqs(&reopened.unacked().expect("unacked"), "t"), [3]);
    }

    #[test]
    fn task_ids_cannot_escape_the_spool_directory() {
        assert_eq!(file_name("task_01-ab"), "task_01-ab.jsonl");
        assert_eq!(file_name("../etc/x"), "%2E%2E%2Fetc%2Fx.jsonl");
        let dir = tempfile::tempdir().expect("dir");
        let spool_dir = dir.path().join("spool");
        let mut spool = Spool::open(&spool_dir).expect("open");
        spool
            .append(&update("../evil", 1, TaskUpdateState::Running, None))
            .expect("append");
        assert!(!dir.path().join("evil.jsonl").exists());
        assert_eq!(fs::read_dir(&spool_dir).expect("list").count(), 1);
        let reopened = Spool::open(&spool_dir).expect("reopen");
        assert_eq!(reopened.task_ids().collect::<Vec<_>>(), ["../evil"]);
    }
}
