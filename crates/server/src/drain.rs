//! Draining a replica before it stops (`--shutdown-drain-seconds`), so a rolling update moves its
//! runners to the other replicas gradually instead of all in one instant.
//!
//! The drain window `W` starts when the shutdown does:
//! - at once, `/readyz` answers 503 (`draining`) and new runner sessions are refused with 503
//!   (`draining`), so the load balancer (or Kubernetes) takes this replica out of rotation;
//! - the first quarter of `W` is the balancer's time to notice; nothing is closed during it;
//! - over the other three quarters, the sessions are closed with 1012 (service restart) on an even
//!   schedule: by time `t`, the share `(t - W/4) / (3W/4)` of the sessions held when the drain
//!   started has been asked to close ([`due`]). Each runner reconnects after its own backoff with
//!   jitter, through the balancer, to another replica.
//!
//! HTTP requests (API, token grants) are served normally throughout: the balancer stops sending
//! them once it sees `/readyz` fail, and the ones in flight finish.
//!
//! **Invariant**: when the drain ends, every session this replica holds has been asked to close,
//! whenever it registered. A connect that passed the `draining` check just before the flag was set
//! may register during the drain; each tick closes sessions from the live registry (not from a
//! list taken at the start), skipping those already asked, and counts the ones it has not asked
//! into the schedule's total, so such a late session is closed by a later tick or, at the latest,
//! by the final [`RunnerLink::close_some`] with no limit.
//!
//! [`RunnerLink::close_some`]: crate::runner_link::RunnerLink::close_some

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::AppState;

/// WebSocket close code 1012 (service restart): reconnect, the service is coming back (elsewhere).
pub const SERVICE_RESTART: u16 = 1012;

/// How often the drain closes its next batch.
const TICK: Duration = Duration::from_millis(100);

/// How many of `total` sessions must have been asked to close `elapsed` into a drain window of
/// `window`: none during the first quarter, then evenly more until all at the end.
pub fn due(total: usize, elapsed: Duration, window: Duration) -> usize {
    if elapsed >= window {
        return total;
    }
    let notice = window / 4;
    if elapsed <= notice {
        return 0;
    }
    let spread = window - notice;
    let share = (elapsed - notice).as_secs_f64() / spread.as_secs_f64();
    ((total as f64 * share).ceil() as usize).min(total)
}

/// Drains this replica for `window` (see the module doc); returns when every session it holds has
/// been asked to close.
pub async fn run(state: &AppState, window: Duration) {
    state.draining.store(true, Ordering::Release);
    let started = Instant::now();
    let total = state.link.session_count();
    tracing::info!(
        sessions = total,
        drain_s = window.as_secs_f64(),
        "draining: /readyz fails and new runner sessions are refused; closing the sessions held, evenly spread"
    );
    let reason = "this control-plane replica is restarting; reconnect";
    let mut asked = HashSet::new();
    // Sessions that register during the drain join the schedule.
    let mut total = total;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        if elapsed >= window {
            break;
        }
        let more = due(total, elapsed, window).saturating_sub(asked.len());
        let (_, left) = state
            .link
            .close_some(more, &mut asked, SERVICE_RESTART, reason);
        total = total.max(asked.len() + left);
    }
    let (late, _) = state
        .link
        .close_some(usize::MAX, &mut asked, SERVICE_RESTART, reason);
    tracing::info!(
        closed = asked.len(),
        late,
        "drained: every runner session was asked to close"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(8);

    #[test]
    fn nothing_closes_while_the_balancer_notices() {
        for ms in [0, 1000, 2000] {
            assert_eq!(due(1000, Duration::from_millis(ms), W), 0, "{ms} ms");
        }
    }

    #[test]
    fn sessions_close_evenly_over_the_rest_and_all_by_the_end() {
        assert_eq!(due(1000, Duration::from_secs(5), W), 500);
        assert_eq!(due(1000, Duration::from_millis(3500), W), 250);
        assert_eq!(due(1000, W, W), 1000);
        assert_eq!(due(1000, W * 2, W), 1000);
        // Never decreases, never exceeds the total.
        let mut last = 0;
        for ms in (0..=9000).step_by(7) {
            let d = due(1000, Duration::from_millis(ms), W);
            assert!(d >= last && d <= 1000, "{ms} ms: {d} after {last}");
            last = d;
        }
    }

    #[test]
    fn a_few_sessions_are_spread_one_by_one() {
        // 4 sessions over 6 s after the notice: the first right after it, the last at the end.
        assert_eq!(due(4, Duration::from_millis(2100), W), 1);
        assert_eq!(due(4, Duration::from_millis(3400), W), 1);
        assert_eq!(due(4, Duration::from_millis(3600), W), 2);
        assert_eq!(due(4, Duration::from_millis(6600), W), 4);
    }

    #[test]
    fn a_zero_window_closes_everything_at_once() {
        assert_eq!(due(7, Duration::ZERO, Duration::ZERO), 7);
    }
}
