//! A log line that cannot flood: said at most once per interval, with how many times its event
//! happened since it was last said. Listeners log refused and timed-out peers through it, so a
//! flood of bad connections costs a line every few seconds, not one per connection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Decides when a repeated event is worth another log line.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    said: Option<Instant>,
    unsaid: u64,
}

impl Throttle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new(State { said: None, unsaid: 0 }) }
    }

    /// The event happened once more. `Some(n)` when a line is due now: `n` events (this one
    /// included) since the last line; `None` while the last line is recent.
    pub fn hit(&self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.unsaid += 1;
        if s.said.is_some_and(|t| now.duration_since(t) < self.interval) {
            return None;
        }
        s.said = Some(now);
        Some(std::mem::take(&mut s.unsaid))
    }
}

impl Default for Throttle {
    /// One line per 10 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_the_first_then_once_per_interval_with_the_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.hit_at(t0), Some(1));
        for i in 1..100 {
            assert_eq!(t.hit_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.hit_at(t0 + Duration::from_secs(10)), Some(100));
        assert_eq!(t.hit_at(t0 + Duration::from_secs(30)), Some(1));
    }
}
