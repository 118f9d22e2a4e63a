//! How a runner's task update is judged before either backend applies it: one rule for both, so
//! SQLite and PostgreSQL accept and refuse the same updates and cut a run's log at the same byte.
//!
//! An update is applied only when its task is running on the very instance that sent it (claimed
//! by it, not queued, not another instance's) and its `seq` is the next one, last stored + 1. A
//! `seq` already stored is a replay (acknowledged, nothing changes); anything else is refused.
//! A run's log keeps at most `max_log_bytes` of output: the chunk that crosses the limit is cut
//! at a character boundary below it and ends with [`truncation_note`], which takes the count past
//! the limit, so every later chunk of the run is dropped while its updates still apply.

use std::borrow::Cow;

use tether_domain::RunState;

use crate::rows::UpdateTargetRow;
use crate::{StoreResult, TaskProgress, UpdateOutcome};

/// What to do with an update.
#[derive(Debug)]
pub(crate) enum Judgement<'a> {
    /// Answer this without changing anything.
    Refuse(UpdateOutcome),
    /// Store it, with this much of its log chunk (`None`: nothing to append).
    Apply {
        seq: i64,
        log: Option<Cow<'a, str>>,
        log_truncated: bool,
    },
}

/// The line that ends a run's log cut at its limit.
pub fn truncation_note(max_log_bytes: u64) -> String {
    format!(
        "\n[tether: this run's log reached its limit of {max_log_bytes} bytes; later output is not kept]\n"
    )
}

pub(crate) fn judge<'a>(
    row: &UpdateTargetRow,
    update: &'a TaskProgress,
    max_log_bytes: u64,
) -> StoreResult<Judgement<'a>> {
    let current = row.state()?;
    if current.is_final() {
        return Ok(Judgement::Refuse(UpdateOutcome::AlreadyFinished(current)));
    }
    let last = u64::try_from(row.last_seq).unwrap_or(0);
    if (1..=last).contains(&update.seq) {
        return Ok(Judgement::Refuse(UpdateOutcome::Duplicate));
    }
    let assigned_here = current == RunState::Running
        && row.instance_id.as_deref() == Some(update.instance_id.as_str());
    if !assigned_here {
        return Ok(Judgement::Refuse(UpdateOutcome::NotAssigned));
    }
    if update.seq != last + 1 {
        return Ok(Judgement::Refuse(UpdateOutcome::OutOfOrder {
            expected: last + 1,
        }));
    }
    let seq = i64::try_from(update.seq).unwrap_or(i64::MAX);
    let (log, log_truncated) = match update.log_chunk.as_deref().filter(|c| !c.is_empty()) {
        None => (None, false),
        Some(chunk) => cut(
            u64::try_from(row.log_bytes).unwrap_or(0),
            chunk,
            max_log_bytes,
        ),
    };
    Ok(Judgement::Apply {
        seq,
        log,
        log_truncated,
    })
}

/// What of `chunk` a log already `stored` bytes long keeps; true when this cut it.
fn cut(stored: u64, chunk: &str, max: u64) -> (Option<Cow<'_, str>>, bool) {
    let room = max.saturating_sub(stored);
    if room == 0 {
        return (None, false);
    }
    if (chunk.len() as u64) <= room {
        return (Some(Cow::Borrowed(chunk)), false);
    }
    let mut end = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
    while !chunk.is_char_boundary(end) {
        end -= 1;
    }
    let mut kept = String::with_capacity(end + 100);
    kept.push_str(&chunk[..end]);
    kept.push_str(&truncation_note(max));
    (Some(Cow::Owned(kept)), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_within_the_room_is_kept_whole() {
        assert_eq!(cut(0, "abc", 10), (Some(Cow::Borrowed("abc")), false));
        assert_eq!(cut(7, "abc", 10), (Some(Cow::Borrowed("abc")), false));
    }

    #[test]
    fn the_chunk_crossing_the_limit_is_cut_and_says_so_and_later_ones_are_dropped() {
        let (kept, truncated) = cut(8, "abcdef", 10);
        assert!(truncated);
        let kept = kept.expect("kept");
        assert!(kept.starts_with("ab\n[tether: this run's log reached its limit of 10 bytes"));
        // The note takes the count past the limit: nothing more fits.
        assert!(8 + kept.len() as u64 > 10);
        assert_eq!(cut(8 + kept.len() as u64, "more", 10), (None, false));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // 'é' is two bytes: a limit between them keeps the character out.
        let (kept, truncated) = cut(0, "aé", 2);
        assert!(truncated);
        assert!(kept.expect("kept").starts_with("a\n[tether:"));
    }
}
