//! Account lock-out policy (DESIGN §2 "Lock-out", SECURITY 1-6).
//!
//! Rules
//! - There is one failure counter per account, whoever the caller and wherever they connect
//!   from: failures from many clients add up on the account.
//! - Unknown logins leave no state anywhere (nothing to count them against, and nothing an
//!   attacker could fill up).
//! - A failed password check increments the counter; the counter expires `failure_window`
//!   after the latest failure, so a handful of typos spread over weeks never adds up.
//! - After `temporary_after` consecutive failures the account is locked for
//!   `base_wait * 2^(failures - temporary_after)`, capped at `max_wait`: 60 s, 2 min, 4 min, …
//!   with the defaults. Each further failure after a lock has expired locks again, longer.
//! - At `permanent_after` consecutive failures (default 10, never more than 100 whatever the
//!   configuration) the lock is permanent: recorded durably, lifted only by the service desk.
//! - While locked, no password is checked and the counter does not move; a locked account
//!   answers exactly like a wrong password.
//! - A second factor is not a second guess budget: a wrong authenticator code or recovery
//!   code counts on the same counter as a wrong password, and a locked account checks no
//!   code either. A sign-in resets the counter only once it is complete (password, then the
//!   code when the account has a second factor).
//! - A successful sign-in resets the counter.
//!
//! The Redis script applies this table atomically (check + increment + expire); it receives it
//! from [`LockoutPolicy::waits_ms`] so the rule lives here only.

use std::time::Duration;

/// SECURITY 2: no configuration may allow more consecutive failures than this.
pub const MAX_PERMANENT_AFTER: u32 = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures that start temporary locks (default 5).
    pub temporary_after: u32,
    /// Wait of the first temporary lock (default 60 s); doubles with each further failure.
    pub base_wait: Duration,
    /// Longest temporary lock (default 1 h).
    pub max_wait: Duration,
    /// Consecutive failures that lock the account permanently (default 10, at most 100).
    pub permanent_after: u32,
    /// How long the counter lives after the latest failure (default 24 h).
    pub failure_window: Duration,
}

/// What a number of consecutive failures means for the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockLevel {
    None,
    Temporary(Duration),
    Permanent,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            temporary_after: 5,
            base_wait: Duration::from_secs(60),
            max_wait: Duration::from_secs(60 * 60),
            permanent_after: 10,
            failure_window: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl LockoutPolicy {
    /// A validated policy. The message names the offending setting for configuration errors.
    pub fn new(
        temporary_after: u32,
        base_wait: Duration,
        max_wait: Duration,
        permanent_after: u32,
        failure_window: Duration,
    ) -> Result<Self, String> {
        if temporary_after == 0 {
            return Err("temporary_after must be at least 1".to_owned());
        }
        if permanent_after > MAX_PERMANENT_AFTER {
            return Err(format!(
                "permanent_after must be at most {MAX_PERMANENT_AFTER}, got {permanent_after}"
            ));
        }
        if permanent_after < temporary_after {
            return Err(format!(
                "permanent_after ({permanent_after}) must not be less than temporary_after \
                 ({temporary_after})"
            ));
        }
        if base_wait.is_zero() {
            return Err("base_wait must be more than zero".to_owned());
        }
        if max_wait < base_wait {
            return Err("max_wait must not be less than base_wait".to_owned());
        }
        if failure_window.is_zero() {
            return Err("failure_window must be more than zero".to_owned());
        }
        Ok(LockoutPolicy {
            temporary_after,
            base_wait,
            max_wait,
            permanent_after,
            failure_window,
        })
    }

    /// The permanent threshold actually applied. The fields are public for convenience, so the
    /// cap of SECURITY 2 is enforced here too, not only in `new`.
    pub fn permanent_threshold(&self) -> u32 {
        self.permanent_after.clamp(1, MAX_PERMANENT_AFTER)
    }

    /// The lock after `failures` consecutive failures.
    pub fn lock_after(&self, failures: u32) -> LockLevel {
        if failures >= self.permanent_threshold() {
            return LockLevel::Permanent;
        }
        if self.temporary_after == 0 || failures < self.temporary_after {
            return LockLevel::None;
        }
        let doublings = failures - self.temporary_after;
        // 2^doublings saturates well before u32 overflow matters: the cap applies anyway.
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        LockLevel::Temporary(self.base_wait.saturating_mul(factor).min(self.max_wait))
    }

    /// Index `i` is the wait in milliseconds after `i + 1` consecutive failures (0 = no lock),
    /// for 1 ..= `permanent_threshold() - 1` failures; at `permanent_threshold()` the lock is
    /// permanent. This is the table the Redis script applies.
    pub fn waits_ms(&self) -> Vec<u64> {
        (1..self.permanent_threshold())
            .map(|failures| match self.lock_after(failures) {
                LockLevel::Temporary(wait) => u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                LockLevel::None | LockLevel::Permanent => 0,
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn default_table() {
        let policy = LockoutPolicy::default();
        assert_eq!(
            policy.waits_ms(),
            vec![0, 0, 0, 0, MIN, 2 * MIN, 4 * MIN, 8 * MIN, 16 * MIN]
        );
        assert_eq!(policy.lock_after(0), LockLevel::None);
        assert_eq!(policy.lock_after(4), LockLevel::None);
        assert_eq!(
            policy.lock_after(5),
            LockLevel::Temporary(Duration::from_secs(60))
        );
        assert_eq!(policy.lock_after(10), LockLevel::Permanent);
        assert_eq!(policy.lock_after(u32::MAX), LockLevel::Permanent);
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let policy = LockoutPolicy::new(
            3,
            Duration::from_secs(60),
            Duration::from_secs(600),
            100,
            Duration::from_secs(3600),
        )
        .unwrap();
        let waits = policy.waits_ms();
        assert_eq!(waits.len(), 99);
        assert_eq!(
            &waits[..7],
            &[0, 0, MIN, 2 * MIN, 4 * MIN, 8 * MIN, 10 * MIN]
        );
        assert!(
            waits[6..].iter().all(|&w| w == 10 * MIN),
            "capped, no overflow"
        );
        for (i, &wait) in waits.iter().enumerate() {
            let failures = u32::try_from(i).unwrap() + 1;
            let expected = match policy.lock_after(failures) {
                LockLevel::None => 0,
                LockLevel::Temporary(d) => u64::try_from(d.as_millis()).unwrap(),
                LockLevel::Permanent => panic!("permanent before the threshold"),
            };
            assert_eq!(wait, expected);
        }
        assert_eq!(policy.lock_after(100), LockLevel::Permanent);
    }

    #[test]
    fn straight_to_permanent_when_thresholds_meet() {
        let policy = LockoutPolicy::new(
            5,
            Duration::from_secs(60),
            Duration::from_secs(60),
            5,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(policy.waits_ms(), vec![0, 0, 0, 0]);
        assert_eq!(policy.lock_after(5), LockLevel::Permanent);
    }

    #[test]
    fn new_refuses_unsafe_settings() {
        let ok = |t, base, max, p, window| {
            LockoutPolicy::new(
                t,
                Duration::from_secs(base),
                Duration::from_secs(max),
                p,
                Duration::from_secs(window),
            )
        };
        assert!(ok(5, 60, 3600, 100, 60).is_ok());
        let too_many = ok(5, 60, 3600, 101, 60).unwrap_err();
        assert!(too_many.contains("at most 100"), "{too_many}");
        assert!(ok(5, 60, 3600, 4, 60).is_err());
        assert!(ok(0, 60, 3600, 10, 60).is_err());
        assert!(ok(5, 0, 3600, 10, 60).is_err());
        assert!(ok(5, 60, 30, 10, 60).is_err());
        assert!(ok(5, 60, 3600, 10, 0).is_err());
    }

    #[test]
    fn cap_holds_even_when_built_by_hand() {
        let policy = LockoutPolicy {
            permanent_after: 1000,
            ..LockoutPolicy::default()
        };
        assert_eq!(policy.permanent_threshold(), MAX_PERMANENT_AFTER);
        assert_eq!(policy.lock_after(100), LockLevel::Permanent);
        assert_eq!(policy.waits_ms().len(), 99);
        let zero = LockoutPolicy {
            temporary_after: 0,
            permanent_after: 0,
            ..LockoutPolicy::default()
        };
        assert_eq!(zero.lock_after(0), LockLevel::None);
        assert_eq!(zero.lock_after(1), LockLevel::Permanent);
        assert!(zero.waits_ms().is_empty());
    }
}
