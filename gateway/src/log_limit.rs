//! A budget for a warning that a remote peer can trigger at will (a refused command, an
//! oversize answer): the first one in each window is logged, with how many were left unlogged
//! since; the counters in `/metrics` count every one. A peer repeating a bad call thousands of
//! times a second then costs a log line a second, not thousands.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One warning's budget: at most one line per `window`.
#[derive(Debug)]
pub(crate) struct LogLimit {
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new(window: Duration) -> Self {
        Self { window, state: Mutex::new(State { last: None, suppressed: 0 }) }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were not since the
    /// last line; `None` when it should not (it is remembered for the next line).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().expect("log limit lock");
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.window => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_the_count_of_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.admit_at(t0), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(limit.admit_at(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.admit_at(t0 + Duration::from_millis(1000)), Some(4));
        assert_eq!(limit.admit_at(t0 + Duration::from_millis(3000)), Some(0));
    }
}
