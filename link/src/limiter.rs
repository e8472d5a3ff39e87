//! Per-address budget of failed handshakes, so one host cannot make a listener spend its CPU and
//! log on a stream of bad connection attempts (a password-guessing loop, a misconfigured peer in
//! a tight reconnect loop, a port scanner), without ever keeping out a peer that proves the
//! secret: an address is shared (containers, NAT, co-located hosts), and garbage from it must not
//! lock out the real workers behind it.
//!
//! So the limit is on unauthenticated work, per connection, and never on the accept or the
//! challenge: every connection gets the server's hello and one chance to answer it. A generic
//! cell rate algorithm (a token bucket kept as one timestamp) per IP address decides how much
//! each gets: a connection admitted with a token (taken before any handshake work, given back
//! when its handshake succeeds, so failures, timeouts and handshakes still in flight all use the
//! address's tokens) is served in full: the normal handshake timeout, and its failure logged
//! with the reason. An address with no token left is *over budget*: its connections are served
//! lean, with at most [`LEAN_TIMEOUT`] to answer (a real peer answers in milliseconds), their
//! failures counted by the caller but logged here once per window with the number since the last
//! line, never once per attempt. The bucket holds `max_failures` tokens and refills one every
//! `window / max_failures`.
//!
//! A peer that proves the secret always gets in, whatever the address's other connections do.
//! A host with a wrong secret gets `max_failures` fully served attempts, then lean ones; after it
//! stops failing its tokens come back. Other addresses are not affected. What one lean attempt
//! costs is bounded by the handshake's frame limit and [`LEAN_TIMEOUT`]; how many run at once by
//! the listener's cap on pending handshakes.
//!
//! The table is bounded: entries whose bucket is full again carry no information and are pruned;
//! if [`MAX_TRACKED`] busy addresses are tracked at once, new addresses are admitted untracked
//! (fail open: a flood from many addresses must not lock out the real peers), still bounded by
//! the handshake's own timeout and frame limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 4096;

/// Time a connection from an address over its budget has to complete the handshake.
pub const LEAN_TIMEOUT: Duration = Duration::from_secs(2);

/// How many failures, within which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Failed or pending handshakes an address may have before it is served lean (the burst).
    pub max_failures: u32,
    /// Time for an address over its budget to earn all its attempts back; also the log interval.
    pub window: Duration,
}

impl Default for LimiterConfig {
    /// 32 failures, then one more every 312.5 ms. The burst is that large because handshakes in
    /// flight count too: a host starting many workers at once must not be refused.
    fn default() -> Self {
        Self { max_failures: 32, window: Duration::from_secs(10) }
    }
}

impl From<&gw_config::LinkConfig> for LimiterConfig {
    /// `[link] failed_handshakes` within `failed_handshake_window`.
    fn from(link: &gw_config::LinkConfig) -> Self {
        Self { max_failures: link.failed_handshakes, window: link.failed_handshake_window }
    }
}

impl LimiterConfig {
    /// How many handshakes from one address can fail within `elapsed` at most: the burst, plus
    /// one per refill interval.
    pub fn max_failures_within(&self, elapsed: Duration) -> u64 {
        let interval = self.window / self.max_failures.max(1);
        u64::from(self.max_failures) + (elapsed.as_nanos() / interval.as_nanos().max(1)) as u64
    }
}

#[derive(Debug)]
struct Entry {
    /// When the bucket is full again (GCRA's theoretical arrival time); in the past = full.
    full_at: Instant,
    /// Connections admitted over budget since the last log line about this address.
    over: u64,
    /// When the last "over budget" line for this address was logged.
    logged: Option<Instant>,
}

/// Limits failed handshakes per IP address. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct HandshakeLimiter {
    config: LimiterConfig,
    /// Time one token takes to come back.
    interval: Duration,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl Default for HandshakeLimiter {
    fn default() -> Self {
        Self::new(LimiterConfig::default())
    }
}

/// An admitted connection and, unless it is [over budget](Permit::over_budget), its token. Call
/// [`succeeded`](Permit::succeeded) after a successful handshake to give it back; dropping it any
/// other way counts as a failure.
#[derive(Debug)]
#[must_use = "a permit dropped without `succeeded` counts as a failed handshake"]
pub struct Permit<'a> {
    limiter: &'a HandshakeLimiter,
    /// The address whose token this connection holds; `None` when it holds none (over budget, or
    /// admitted untracked because the table is full).
    ip: Option<IpAddr>,
    over_budget: bool,
}

impl Permit<'_> {
    /// The address has no token left: serve this connection lean (at most [`LEAN_TIMEOUT`] for
    /// the handshake) and do not log its failure (the limiter logs these once per window).
    pub fn over_budget(&self) -> bool {
        self.over_budget
    }

    /// The handshake timeout for this connection: `normal`, or [`LEAN_TIMEOUT`] if shorter and
    /// the address is over budget.
    pub fn timeout(&self, normal: Duration) -> Duration {
        if self.over_budget { normal.min(LEAN_TIMEOUT) } else { normal }
    }

    /// The handshake succeeded: the address gets its token back.
    pub fn succeeded(self) {
        if let Some(ip) = self.ip {
            self.limiter.refund(ip);
        }
    }

    /// The handshake failed (the same as dropping the permit; reads better at the call site).
    pub fn failed(self) {}
}

impl HandshakeLimiter {
    /// A limiter with no address tracked yet.
    pub fn new(config: LimiterConfig) -> Self {
        let config = LimiterConfig { max_failures: config.max_failures.max(1), window: config.window };
        let interval = config.window / config.max_failures;
        Self { config, interval, entries: Mutex::new(HashMap::new()) }
    }

    /// The budget it enforces (`max_failures` at least 1).
    pub fn config(&self) -> LimiterConfig {
        self.config
    }

    /// Called when a connection is accepted, before any handshake work. Every connection is
    /// admitted; see [`Permit::over_budget`] for how to serve it (the line about an address over
    /// budget is already logged when one is due).
    pub fn admit(&self, ip: IpAddr) -> Permit<'_> {
        self.admit_at(ip.to_canonical(), Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> Permit<'_> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&ip) && entries.len() >= MAX_TRACKED {
            entries.retain(|_, e| e.full_at > now);
            if entries.len() >= MAX_TRACKED {
                return Permit { limiter: self, ip: None, over_budget: false };
            }
        }
        let entry = entries.entry(ip).or_insert(Entry { full_at: now, over: 0, logged: None });
        let full_at = entry.full_at.max(now);
        // Admitting takes one token: the bucket would be full `interval` later. More than the
        // whole window away means the tokens are gone.
        if full_at + self.interval > now + self.config.window {
            entry.over += 1;
            if entry.logged.is_none_or(|t| now.duration_since(t) >= self.config.window) {
                tracing::warn!(
                    peer = %ip,
                    over_budget = entry.over,
                    max_failures = self.config.max_failures,
                    window = ?self.config.window,
                    "too many failed or unfinished handshakes from this address: serving its connections lean \
                     (short deadline, failures not logged one by one; a peer with the secret still gets in)"
                );
                entry.logged = Some(now);
                entry.over = 0;
            }
            return Permit { limiter: self, ip: None, over_budget: true };
        }
        entry.full_at = full_at + self.interval;
        Permit { limiter: self, ip: Some(ip), over_budget: false }
    }

    fn refund(&self, ip: IpAddr) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&ip) {
            entry.full_at = entry.full_at.checked_sub(self.interval).unwrap_or(entry.full_at);
        }
    }

    /// Addresses tracked now (for tests).
    pub fn tracked(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Permit<'_> {
        /// This connection holds a token: it is served in full.
        fn served(self, why: &str) -> Self {
            assert!(!self.over_budget(), "{why}: over budget");
            self
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(max: u32, window_ms: u64) -> HandshakeLimiter {
        HandshakeLimiter::new(LimiterConfig { max_failures: max, window: Duration::from_millis(window_ms) })
    }

    #[test]
    fn serves_lean_after_the_burst_and_recovers_one_token_per_interval() {
        let l = limiter(5, 1000);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..5 {
            l.admit_at(a, t0).served("within the burst").failed();
        }
        assert!(l.admit_at(a, t0).over_budget());
        assert!(l.admit_at(a, t0 + Duration::from_millis(150)).over_budget());
        // One token back after 200 ms (1000 ms / 5), then refused again.
        l.admit_at(a, t0 + Duration::from_millis(200)).served("one token back").failed();
        assert!(l.admit_at(a, t0 + Duration::from_millis(210)).over_budget());
        // After a whole window of quiet, the whole burst is back.
        let later = t0 + Duration::from_millis(1200);
        for _ in 0..5 {
            l.admit_at(a, later).served("burst back").failed();
        }
        assert!(l.admit_at(a, later).over_budget());
    }

    #[test]
    fn other_addresses_are_not_affected() {
        let l = limiter(3, 1000);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.admit_at(ip("10.0.0.1"), t0).served("within the budget").failed();
        }
        assert!(l.admit_at(ip("10.0.0.1"), t0).over_budget());
        assert!(!l.admit_at(ip("10.0.0.2"), t0).over_budget());
        assert!(!l.admit_at(ip("::1"), t0).over_budget());
    }

    #[test]
    fn successful_handshakes_never_use_up_tokens() {
        let l = limiter(3, 10_000);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..1000 {
            l.admit_at(a, t0).served("successes are refunded").succeeded();
        }
        // Failures still count after the successes.
        for _ in 0..3 {
            l.admit_at(a, t0).served("within the budget").failed();
        }
        assert!(l.admit_at(a, t0).over_budget());
    }

    #[test]
    fn handshakes_in_flight_count_until_they_finish() {
        let l = limiter(2, 10_000);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        let p1 = l.admit_at(a, t0).served("first");
        let p2 = l.admit_at(a, t0).served("second");
        assert!(l.admit_at(a, t0).over_budget(), "a third concurrent handshake from one address");
        p1.succeeded();
        let p3 = l.admit_at(a, t0).served("a finished handshake frees its slot");
        drop((p2, p3));
        assert!(l.admit_at(a, t0).over_budget(), "dropped permits are failures");
    }

    #[test]
    fn ipv4_mapped_addresses_share_the_ipv4_bucket() {
        let l = limiter(1, 10_000);
        l.admit(ip("::ffff:10.0.0.1")).served("within the budget").failed();
        assert!(l.admit(ip("10.0.0.1")).over_budget());
    }

    #[test]
    fn the_table_is_bounded_and_fails_open_when_full() {
        let l = limiter(1, 10_000);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            l.admit_at(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0).served("within the budget").failed();
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
        // Full of busy addresses: a new one is admitted untracked.
        let stranger = ip("192.168.1.1");
        l.admit_at(stranger, t0).served("within the budget").failed();
        assert!(!l.admit_at(stranger, t0).over_budget());
        assert_eq!(l.tracked(), MAX_TRACKED);
        // Once the old entries are full again they are pruned and the stranger is tracked.
        let later = t0 + Duration::from_secs(11);
        l.admit_at(stranger, later).served("within the budget").failed();
        assert_eq!(l.tracked(), 1);
        assert!(l.admit_at(stranger, later).over_budget());
    }

    #[test]
    fn an_address_over_budget_is_still_served_and_a_success_costs_nothing() {
        let l = limiter(2, 10_000);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..100 {
            drop(l.admit_at(a, t0));
        }
        // A peer with the secret from the same address: admitted (lean), and it succeeds.
        let p = l.admit_at(a, t0);
        assert!(p.over_budget());
        assert_eq!(p.timeout(Duration::from_secs(10)), LEAN_TIMEOUT);
        assert_eq!(p.timeout(Duration::from_millis(500)), Duration::from_millis(500));
        p.succeeded();
        // A connection with a token keeps the normal timeout.
        let fresh = l.admit_at(ip("10.0.0.2"), t0).served("another address");
        assert_eq!(fresh.timeout(Duration::from_secs(10)), Duration::from_secs(10));
        fresh.succeeded();
        // The flood's address earns its tokens back at the usual rate once it stops failing.
        l.admit_at(a, t0 + Duration::from_secs(11)).served("after a quiet window").succeeded();
    }
}
