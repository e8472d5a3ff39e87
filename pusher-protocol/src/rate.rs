//! The token bucket behind the client-event rate limit ("publish no more than 10 messages per
//! second per client"): `rate` tokens a second, at most `burst` saved up, one per event. Time is
//! an argument, so the rule is unit-tested without sleeping; the connection owns the clock.

use std::time::{Duration, Instant};

/// A per-connection token bucket (40 bytes).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: u32,
    /// Most tokens held, in thousandths.
    cap_milli: u64,
    /// Tokens held now, in thousandths.
    milli: u64,
    /// When `milli` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`: `rate` tokens a second, at most `burst` held.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let cap_milli = u64::from(burst) * 1000;
        Self { rate, cap_milli, milli: cap_milli, last: now }
    }

    /// Takes one token at `now`; false (and nothing taken) when the bucket is empty.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// How long from `now` until a token is there (zero if one is).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.milli >= 1000 || self.rate == 0 {
            return if self.milli >= 1000 { Duration::ZERO } else { Duration::MAX };
        }
        let missing_milli = 1000 - self.milli;
        Duration::from_micros((missing_milli * 1000).div_ceil(u64::from(self.rate)))
    }

    fn refill(&mut self, now: Instant) {
        // An earlier `now` than the last one (callers on several threads) adds nothing.
        let Some(elapsed) = now.checked_duration_since(self.last) else { return };
        // Thousandths of a token per microsecond is rate / 1000.
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let gained = micros.saturating_mul(u64::from(self.rate)) / 1000;
        if gained > 0 {
            self.milli = self.milli.saturating_add(gained).min(self.cap_milli);
            self.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_a_second_with_a_burst_of_ten() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 10, t0);
        assert_eq!((0..15).filter(|_| b.try_take(t0)).count(), 10, "the burst, then nothing");
        assert_eq!(b.wait(t0), Duration::from_millis(100));
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // A long pause refills up to the burst only.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..15).filter(|_| b.try_take(later)).count(), 10);
    }

    #[test]
    fn steady_rate_over_a_second_of_small_steps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 1, t0);
        assert!(b.try_take(t0));
        // Asking every millisecond for a second gets exactly the rate, not more.
        let got = (1..=1000).filter(|ms| b.try_take(t0 + Duration::from_millis(*ms))).count();
        assert_eq!(got, 10);
    }

    #[test]
    fn time_going_backwards_adds_nothing_and_zero_rate_never_refills() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(5, 1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0.checked_sub(Duration::from_secs(5)).unwrap()));
        let mut none = TokenBucket::new(0, 1, t0);
        assert!(none.try_take(t0));
        assert!(!none.try_take(t0 + Duration::from_secs(1000)));
        assert_eq!(none.wait(t0), Duration::MAX);
    }
}
