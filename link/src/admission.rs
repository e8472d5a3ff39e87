//! The one admission path of every listener whose peers must authenticate before they are
//! served: our internal listeners (gateway, register) and the GatewayWorker-protocol listeners.
//!
//! Until a peer has proved it knows the secret it costs as little as can be arranged:
//! - **A cap on pending connections**, in all and per address, taken at accept ([`Admission::enter`]):
//!   unauthenticated peers cannot use up the descriptors kept for real peers. Over the cap a
//!   connection is closed at once and counted.
//! - **A deadline** for the whole unauthenticated phase (the handshake timeout), shorter for an
//!   address over its failed-handshake budget (see [`HandshakeLimiter`]).
//! - **Failures logged with the reason while the address is within its budget, and counted**;
//!   past the budget counted and summed up by the limiter once per window, never one line per
//!   attempt.
//!
//! What the unauthenticated phase is depends on the protocol (our HMAC handshake, a PHP peer's
//! first packet with its `secret_key`); [`Admission::admit`] runs it and does the rest.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::limits::{ConnLimits, ConnSlot};
use crate::{HandshakeLimiter, LimiterConfig};

/// The limits of one admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Connections in their unauthenticated phase at most, all addresses together.
    pub max_pending: usize,
    /// Of those, from one address.
    pub max_pending_per_ip: usize,
    /// Time allowed for the unauthenticated phase.
    pub timeout: Duration,
    /// Failed handshakes one address may have before it is served lean.
    pub limiter: LimiterConfig,
}

impl AdmissionConfig {
    /// The `[link]` handshake timeout and failure budget, with these caps on pending connections.
    pub fn from_link(link: &gw_config::LinkConfig, max_pending: usize, max_pending_per_ip: usize) -> Self {
        Self { max_pending, max_pending_per_ip, timeout: link.handshake_timeout, limiter: LimiterConfig::from(link) }
    }
}

/// What an admission counts, in the owner's own metrics.
#[derive(Debug, Clone, Copy)]
pub struct Counters<'a> {
    /// Connections closed at accept because too many were pending.
    pub busy: &'a AtomicU64,
    /// Handshakes that failed (each logged with its reason).
    pub failed: &'a AtomicU64,
    /// Handshakes that failed from an address over its budget (summed up by the limiter).
    pub rate_limited: &'a AtomicU64,
}

/// Admits the connections of one or more listeners. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Admission {
    pending: Arc<ConnLimits>,
    limiter: HandshakeLimiter,
    timeout: Duration,
}

/// A connection in its unauthenticated phase, counted against the pending cap until dropped.
#[derive(Debug)]
#[must_use = "dropping it ends the connection's pending phase"]
pub struct Pending {
    _slot: ConnSlot,
    peer: SocketAddr,
}

impl Admission {
    /// An admission with nothing pending yet.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            pending: Arc::new(ConnLimits::new(config.max_pending, config.max_pending_per_ip)),
            limiter: HandshakeLimiter::new(config.limiter),
            timeout: config.timeout,
        }
    }

    /// At accept: a place among the pending connections, or `None` (counted in `busy`, logged
    /// at debug) when there are too many, in all or from this address; then drop the stream.
    pub fn enter(&self, peer: SocketAddr, busy: &AtomicU64) -> Option<Pending> {
        match self.pending.acquire(peer.ip()) {
            Ok(slot) => Some(Pending { _slot: slot, peer }),
            Err(refusal) => {
                busy.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer, ?refusal, "connection refused: too many handshakes pending");
                None
            }
        }
    }

    /// Runs a pending connection's unauthenticated phase, `handshake`, which is given its
    /// deadline and must keep it. Success hands back the authenticated connection (and the
    /// address its failure token); a failure is counted, and logged as `refused {what}:
    /// handshake failed` with its reason unless the address is over its budget.
    pub async fn admit<T, E, Fut>(
        &self,
        pending: Pending,
        what: &str,
        counters: Counters<'_>,
        handshake: impl FnOnce(Duration) -> Fut,
    ) -> Option<T>
    where
        E: Display,
        Fut: Future<Output = Result<T, E>>,
    {
        // Every connection gets its chance, so garbage from a shared address never keeps out a
        // peer that proves the secret; an address with too many recent failures is served lean
        // (short deadline, failures counted but logged once per window by the limiter).
        let peer = pending.peer;
        let permit = self.limiter.admit(peer.ip());
        let result = handshake(permit.timeout(self.timeout)).await;
        drop(pending);
        match result {
            Ok(authenticated) => {
                permit.succeeded();
                Some(authenticated)
            }
            Err(_) if permit.over_budget() => {
                permit.failed();
                counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                permit.failed();
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %peer, error = %e, "refused {what}: handshake failed");
                None
            }
        }
    }

    /// Connections in their unauthenticated phase now.
    pub fn pending(&self) -> usize {
        self.pending.open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_pending: usize, per_ip: usize, max_failures: u32) -> Admission {
        Admission::new(AdmissionConfig {
            max_pending,
            max_pending_per_ip: per_ip,
            timeout: Duration::from_secs(5),
            limiter: LimiterConfig { max_failures, window: Duration::from_secs(60) },
        })
    }

    #[derive(Default)]
    struct Count {
        busy: AtomicU64,
        failed: AtomicU64,
        rate_limited: AtomicU64,
    }

    impl Count {
        fn counters(&self) -> Counters<'_> {
            Counters { busy: &self.busy, failed: &self.failed, rate_limited: &self.rate_limited }
        }
        fn get(&self) -> (u64, u64, u64) {
            let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
            (g(&self.busy), g(&self.failed), g(&self.rate_limited))
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn caps_pending_connections_and_frees_their_place_when_the_phase_ends() {
        let a = admission(2, 1, 10);
        let count = Count::default();
        let p1 = a.enter(addr("10.0.0.1:1"), &count.busy).unwrap();
        assert!(a.enter(addr("10.0.0.1:2"), &count.busy).is_none(), "one per address");
        let _p2 = a.enter(addr("10.0.0.2:1"), &count.busy).unwrap();
        assert!(a.enter(addr("10.0.0.3:1"), &count.busy).is_none(), "two in all");
        assert_eq!(a.pending(), 2);
        let got = a.admit(p1, "peer", count.counters(), |_| async { Ok::<_, String>(7) }).await;
        assert_eq!(got, Some(7));
        assert_eq!(a.pending(), 1);
        assert_eq!(count.get(), (2, 0, 0));
    }

    #[tokio::test]
    async fn failures_are_counted_and_past_the_budget_served_lean() {
        let a = admission(10, 10, 2);
        let count = Count::default();
        let mut deadlines = Vec::new();
        for port in 0..4 {
            let p = a.enter(addr(&format!("10.0.0.1:{port}")), &count.busy).unwrap();
            let got = a
                .admit(p, "peer", count.counters(), |deadline| {
                    deadlines.push(deadline);
                    async { Err::<(), _>("wrong secret") }
                })
                .await;
            assert_eq!(got, None);
        }
        assert_eq!(count.get(), (0, 2, 2));
        assert_eq!(deadlines[..2], [Duration::from_secs(5); 2]);
        assert_eq!(deadlines[2..], [crate::LEAN_TIMEOUT; 2]);
    }
}
