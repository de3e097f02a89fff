//! The suite's one retry schedule: capped exponential backoff, optionally jittered. Used by
//! the outbox relay, mail delivery, session revocation, the bootstrap grant and peer calls.
//!
//! Failure `n` (1 for the first) waits `base * 2^(n-1)`, capped at `max`. The jittered form
//! keeps the upper half of that wait and spreads the lower half by a caller-supplied unit in
//! [0, 1] ("equal jitter"): retries of callers that failed together spread out, but none
//! retries sooner than half the schedule. Randomness is passed in, so the rule stays pure.

use std::time::Duration;

/// A capped exponential schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// The wait after failure number `failures` (1 for the first; 0 counts as 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`Backoff::delay`] jittered into its upper half by `unit` (clamped to [0, 1]).
    pub fn jittered(&self, failures: u32, unit: f64) -> Duration {
        let half = self.delay(failures) / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_base_and_is_capped() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(b.delay(0), 100 * MS);
        assert_eq!(b.delay(1), 100 * MS);
        assert_eq!(b.delay(2), 200 * MS);
        assert_eq!(b.delay(4), 800 * MS);
        assert_eq!(b.delay(5), 1000 * MS);
        assert_eq!(b.delay(u32::MAX), 1000 * MS);
        let huge = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        for failures in 1..10 {
            let top = b.delay(failures);
            assert_eq!(b.jittered(failures, 1.0), top);
            assert_eq!(b.jittered(failures, 0.0), top / 2);
            let mid = b.jittered(failures, 0.5);
            assert!(mid >= top / 2 && mid <= top);
            assert!(b.jittered(failures, 7.0) <= top);
            assert_eq!(b.jittered(failures, -1.0), top / 2);
        }
    }
}
