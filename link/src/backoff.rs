//! Exponential reconnect backoff with jitter, so a restarted register is not hit by every peer in
//! the same millisecond.

use std::time::Duration;

/// Doubling delays from `min` to `max`, each with up to ±25% jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`; `max` below `min` counts as `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), next: min }
    }

    /// The delay to wait now; the following one is doubled.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        base.mul_f64(jitter)
    }

    /// Back to `min` after a link came up.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let bases = [100, 200, 400, 800, 800];
        for base in bases {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            assert!(d >= base as f64 * 0.75 - 1e-6 && d <= base as f64 * 1.25 + 1e-6, "{d} vs {base}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
