//! The gateway's monotonic clock in milliseconds: small enough to keep in an atomic (a client's
//! last activity), and unaffected by wall-clock jumps.

use tokio::time::Instant;

/// Milliseconds since the gateway started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock that reads 0 now.
    pub fn start() -> Self {
        Self { epoch: Instant::now() }
    }

    /// Milliseconds since [`start`](Self::start).
    pub fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}
