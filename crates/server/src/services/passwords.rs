//! Password hashing and verification (argon2id, 19 MiB and 2 passes by default) under a bound.
//!
//! One argon2 computation needs its whole memory at once, so unbounded concurrent logins are a
//! memory attack: 64 failed logins at once used to take the server past 3 GB. Here at most
//! `slots` computations (one per core by default) run at once, each in a buffer of its own that
//! is allocated once and reused, so logins cost at most `slots` × 19 MiB however many arrive, and
//! that memory is not handed back and forth to the allocator per attempt. Requests beyond the
//! slots wait in arrival order (the semaphore is fair) for at most `wait`; then they are refused
//! as busy (503, retry shortly) instead of piling up.
//!
//! **Invariant**: a buffer is used by one computation at a time, and there are never more
//! buffers than slots. A buffer is taken from the pool only by a holder of a permit and put back
//! before the permit is released ([`Slot`] holds both and returns the buffer on drop), so the
//! pool never runs dry while a permit is free and never grows past `slots`.

use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tether_domain::random_bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest a login waits for a free slot before it is refused as busy.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// No free slot within the wait: the caller answers 503 and the client retries.
#[derive(Debug)]
pub struct Busy;

#[derive(Debug)]
pub struct Passwords {
    permits: std::sync::Arc<Semaphore>,
    buffers: Mutex<Vec<Vec<Block>>>,
    slots: usize,
    wait: Duration,
}

/// A permit with the buffer it may use; gives the buffer back to the pool when dropped.
struct Slot<'a> {
    owner: &'a Passwords,
    buffer: Option<Vec<Block>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.owner.lock().push(b);
        }
    }
}

impl Passwords {
    /// `slots` concurrent computations (at least 1), each waiting at most `wait` for its turn.
    pub fn new(slots: usize, wait: Duration) -> Self {
        let slots = slots.max(1);
        Self {
            permits: std::sync::Arc::new(Semaphore::new(slots)),
            buffers: Mutex::new(Vec::new()),
            slots,
            wait,
        }
    }

    /// One slot per core.
    pub fn per_core() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, DEFAULT_WAIT)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn slot(&self) -> Result<Slot<'_>, Busy> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        // Made lazily, one per slot at most: the pool only ever holds buffers slots gave back.
        let buffer = self.lock().pop().unwrap_or_default();
        Ok(Slot {
            owner: self,
            buffer: Some(buffer),
            _permit: permit,
        })
    }

    /// How many buffers exist (in the pool; none is out while no computation runs).
    pub fn buffers(&self) -> usize {
        self.lock().len()
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Whether `password` matches the PHC string `hash`. A hash that does not parse, or of
    /// another algorithm, matches nothing.
    pub async fn verify(&self, hash: &str, password: &str) -> Result<bool, Busy> {
        let mut slot = self.slot().await?;
        let mut buffer = slot.buffer.take().unwrap_or_default();
        let (hash, password) = (hash.to_owned(), password.to_owned());
        let (matched, buffer) = tokio::task::spawn_blocking(move || {
            let matched = verify_in(&hash, password.as_bytes(), &mut buffer);
            (matched, buffer)
        })
        .await
        .map_err(|_| Busy)?;
        slot.buffer = Some(buffer);
        Ok(matched)
    }

    /// A new argon2id PHC string for `password` (defaults: 19 MiB, 2 passes).
    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let _slot = self
            .slot()
            .await
            .map_err(|_| anyhow::anyhow!("too many password computations at once"))?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&random_bytes::<16>())
                .map_err(|e| anyhow::anyhow!("encoding salt: {e}"))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
        })
        .await?
    }
}

/// Verifies in `buffer` (grown to the hash's memory cost if it is smaller). The comparison of the
/// outputs is constant-time (`password_hash::Output`'s equality).
fn verify_in(hash: &str, password: &[u8], buffer: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from);
    let (Ok(version), Some(salt), Some(expected)) = (version, parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if buffer.len() < blocks {
        buffer.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    if argon
        .hash_password_into_with_memory(password, salt, &mut out, &mut buffer[..])
        .is_err()
    {
        return false;
    }
    argon2::password_hash::Output::new(&out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let p = Passwords::new(1, DEFAULT_WAIT);
        let hash = p.hash("correct horse battery").await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(p
            .verify(&hash, "correct horse battery")
            .await
            .expect("slot"));
        assert!(!p.verify(&hash, "correct horse batter").await.expect("slot"));
        assert!(!p.verify("not a phc string", "x").await.expect("slot"));
        assert!(!p
            .verify("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA", "x")
            .await
            .expect("slot"));
    }

    /// The interleaving the bound is for: every slot taken, one more request waits its whole
    /// wait and is refused; once a slot frees up, the next one gets it, with a pooled buffer.
    #[tokio::test]
    async fn a_request_beyond_the_slots_waits_then_is_refused_as_busy() {
        let p = Passwords::new(2, Duration::from_millis(100));
        let first = p.slot().await.expect("slot");
        let second = p.slot().await.expect("slot");
        assert!(p.slot().await.is_err(), "a third computation ran at once");
        drop(first);
        assert_eq!(
            p.buffers(),
            1,
            "the freed slot's buffer went back to the pool"
        );
        let third = p.slot().await.expect("a slot after one freed up");
        assert_eq!(p.buffers(), 0, "the pooled buffer was reused");
        drop((second, third));
        assert_eq!(p.buffers(), 2);
    }

    /// Stress: many verifications at once through 2 slots all answer right, and afterwards there
    /// are exactly as many buffers as slots (no buffer shared, none leaked or duplicated).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_verifications_share_the_slots_buffers_only() {
        let p = std::sync::Arc::new(Passwords::new(2, Duration::from_secs(60)));
        let hash = p.hash("right").await.expect("hash");
        let checks: Vec<_> = (0..24)
            .map(|i| {
                let (p, hash) = (p.clone(), hash.clone());
                tokio::spawn(async move {
                    let guess = if i % 3 == 0 { "right" } else { "wrong" };
                    (i, p.verify(&hash, guess).await.expect("slot"))
                })
            })
            .collect();
        for c in checks {
            let (i, matched) = c.await.expect("task");
            assert_eq!(matched, i % 3 == 0, "check {i}");
        }
        assert_eq!(p.buffers(), 2);
    }
}
