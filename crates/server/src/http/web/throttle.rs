//! Slows password guessing at `/login`: after [`MAX_FAILURES`] refused logins for one username from
//! one address within [`WINDOW`], further attempts from there are refused (429) until the window
//! has passed, without checking the password. The real user logging in from another address is not
//! locked out, and a successful login clears the count. In memory: it guards this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Bound on tracked (username, address) pairs; the oldest are forgotten first.
const MAX_TRACKED: usize = 10_000;

type Key = (String, Option<String>);

#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<Key, (u32, Instant)>>,
}

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long this pair must wait before it may try again, if it is locked out.
    pub fn locked_for(&self, username: &str, ip: Option<&str>) -> Option<Duration> {
        let key = (username.to_owned(), ip.map(str::to_owned));
        let (count, first) = *self.lock().get(&key)?;
        let left = WINDOW.checked_sub(first.elapsed())?;
        (count >= MAX_FAILURES).then_some(left)
    }

    pub fn failed(&self, username: &str, ip: Option<&str>) {
        let mut map = self.lock();
        map.retain(|_, (_, first)| first.elapsed() < WINDOW);
        if map.len() >= MAX_TRACKED {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let entry = map
            .entry((username.to_owned(), ip.map(str::to_owned)))
            .or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    pub fn succeeded(&self, username: &str, ip: Option<&str>) {
        self.lock()
            .remove(&(username.to_owned(), ip.map(str::to_owned)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_one_pair_and_a_success_clears_it() {
        let t = LoginThrottle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("alice", Some("10.0.0.1"));
        }
        assert_eq!(t.locked_for("alice", Some("10.0.0.1")), None);
        t.failed("alice", Some("10.0.0.1"));
        let left = t.locked_for("alice", Some("10.0.0.1")).expect("locked");
        assert!(left > WINDOW - Duration::from_secs(5) && left <= WINDOW);
        assert_eq!(
            t.locked_for("alice", Some("10.0.0.2")),
            None,
            "other address"
        );
        assert_eq!(t.locked_for("bob", Some("10.0.0.1")), None, "other user");
        t.succeeded("alice", Some("10.0.0.1"));
        assert_eq!(t.locked_for("alice", Some("10.0.0.1")), None);
    }
}
