//! A timer set: when each key expires, for the held (disconnected) clients of recovery, whose
//! state is dropped at the end of their window unless they come back.
//!
//! One sorted set of `(deadline, key)` plus a map from key to deadline: insert, re-arm, remove
//! and each expiry are O(log n), so a million held clients cost a million small entries and one
//! timer, not a million sleeping tasks.
//!
//! # Wiring
//!
//! New (recovery, issue 25). The gateway keeps one `Mutex<Deadlines<ClientKey, Instant>>` and
//! one task that sleeps until [`next_deadline`](Deadlines::next_deadline) (woken by a `Notify`
//! when an insert returns an earlier deadline than it slept for), then ends the held state of
//! every key [`expired`](Deadlines::expired) returns. A client that resumes is
//! [`remove`](Deadlines::remove)d.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// When each key expires; `T` is the caller's time (`u64` milliseconds, `Instant`, ...).
///
/// # Examples
///
/// ```
/// use gw_delivery::Deadlines;
///
/// let mut held: Deadlines<u64, u64> = Deadlines::new();
/// held.insert(7, 120_000);
/// held.insert(8, 60_000);
/// held.insert(9, 90_000);
/// assert_eq!(held.next_deadline(), Some(60_000));
/// held.remove(&9); // client 9 resumed
/// assert_eq!(held.expired(100_000), [8]);
/// assert_eq!(held.expired(200_000), [7]);
/// assert!(held.is_empty());
/// ```
#[derive(Debug)]
pub struct Deadlines<K, T> {
    /// Every entry, soonest first; keys break ties.
    by_time: BTreeSet<(T, K)>,
    /// Each key's deadline, to find its entry in `by_time`.
    by_key: HashMap<K, T>,
}

impl<K, T> Default for Deadlines<K, T> {
    fn default() -> Self {
        Self { by_time: BTreeSet::new(), by_key: HashMap::new() }
    }
}

impl<K: Ord + Hash + Clone, T: Ord + Copy> Deadlines<K, T> {
    /// No key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to expire at `at`, replacing its earlier deadline (returned) if it had one.
    pub fn insert(&mut self, key: K, at: T) -> Option<T> {
        let previous = self.by_key.insert(key.clone(), at);
        if let Some(old) = previous {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
        previous
    }

    /// Forgets `key`; returns its deadline if it had one.
    pub fn remove(&mut self, key: &K) -> Option<T> {
        let at = self.by_key.remove(key)?;
        self.by_time.remove(&(at, key.clone()));
        Some(at)
    }

    /// Removes and returns every key whose deadline is at or before `now`, soonest first (keys
    /// with the same deadline in key order).
    pub fn expired(&mut self, now: T) -> Vec<K> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.by_time.pop_first() else { break };
            self.by_key.remove(&key);
            out.push(key);
        }
        out
    }

    /// The soonest deadline: when the timer should wake next.
    pub fn next_deadline(&self) -> Option<T> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// `key`'s deadline.
    pub fn deadline(&self, key: &K) -> Option<T> {
        self.by_key.get(key).copied()
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn expires_in_deadline_order_with_keys_breaking_ties() {
        let mut d: Deadlines<&str, u64> = Deadlines::new();
        d.insert("c", 10);
        d.insert("a", 30);
        d.insert("b", 10);
        d.insert("d", 20);
        assert_eq!(d.next_deadline(), Some(10));
        assert_eq!(d.expired(9), Vec::<&str>::new());
        assert_eq!(d.expired(20), ["b", "c", "d"]);
        assert_eq!((d.len(), d.next_deadline()), (1, Some(30)));
        assert_eq!(d.expired(u64::MAX), ["a"]);
        assert_eq!((d.len(), d.next_deadline()), (0, None));
    }

    #[test]
    fn insert_re_arms_and_remove_forgets() {
        let mut d: Deadlines<u32, u64> = Deadlines::new();
        assert_eq!(d.insert(1, 50), None);
        assert_eq!(d.insert(1, 5), Some(50), "re-armed earlier");
        assert_eq!(d.len(), 1);
        assert_eq!(d.deadline(&1), Some(5));
        assert_eq!(d.insert(2, 7), None);
        assert_eq!(d.remove(&2), Some(7));
        assert_eq!(d.remove(&2), None, "removing twice is harmless");
        assert_eq!(d.remove(&99), None);
        assert_eq!(d.expired(49), [1], "the old deadline is gone with the re-arm");
        assert_eq!(d.expired(1000), Vec::<u32>::new());
    }

    #[test]
    fn works_with_instants() {
        let t0 = Instant::now();
        let mut d: Deadlines<u64, Instant> = Deadlines::new();
        d.insert(1, t0 + Duration::from_secs(120));
        d.insert(2, t0 + Duration::from_secs(60));
        assert_eq!(d.next_deadline(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(d.expired(t0 + Duration::from_secs(61)), [2]);
    }

    #[test]
    fn a_hundred_thousand_held_keys_cost_log_n_each() {
        // A hundred thousand keeps this test quick in a debug build; see the ignored test below
        // for a million.
        let n = 100_000u64;
        let mut d: Deadlines<u64, u64> = Deadlines::new();
        for k in 0..n {
            // Deadlines out of key order.
            d.insert(k, (k * 7919) % n);
        }
        for k in (0..n).step_by(2) {
            d.remove(&k);
        }
        assert_eq!(d.len(), (n / 2) as usize);
        let first = d.expired(n / 2);
        let rest = d.expired(n);
        assert_eq!(first.len() + rest.len(), (n / 2) as usize);
        assert!(first.iter().chain(&rest).all(|k| k % 2 == 1));
        assert!(d.is_empty());
    }

    /// A million held clients: `cargo test -p gw-delivery --release --lib -- --ignored million`.
    #[test]
    #[ignore = "timing; run in release"]
    fn a_million_held_keys() {
        let n = 1_000_000u64;
        let rss_before = rss_kib();
        let mut d: Deadlines<u64, u64> = Deadlines::new();
        let started = Instant::now();
        for k in 0..n {
            d.insert(k, (k * 7919) % n);
        }
        let inserted = started.elapsed();
        let held = rss_kib().saturating_sub(rss_before);
        let started = Instant::now();
        for k in (0..n).step_by(2) {
            d.remove(&k);
        }
        let removed = started.elapsed();
        let started = Instant::now();
        let mut expired = 0;
        for now in (0..n).step_by(1000) {
            expired += d.expired(now + 999).len();
        }
        let expiring = started.elapsed();
        assert_eq!(expired, (n / 2) as usize);
        println!(
            "{n} inserts {inserted:?} ({} bytes per key), {} removes {removed:?}, all expired in {:?}",
            held * 1024 / n,
            n / 2,
            expiring
        );
    }

    /// The process's resident memory (Linux; 0 elsewhere).
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}
