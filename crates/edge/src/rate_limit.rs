//! Rate limits on the public RPCs that send mail or check a password.
//!
//! Rules
//! - Per client: every limited RPC a client address calls draws on one budget
//!   (`CQRS_RATE_LIMIT_PER_CLIENT`, default 60 a minute). The address is the one a trusted
//!   gateway vouches for (`x-cqrs-client-address` from `CQRS_TRUSTED_GATEWAYS`), otherwise the
//!   connection's peer: a header from anyone else is never believed.
//! - Per address: every RPC that mails an address (a reset link, a User ID reminder, a
//!   registration's acknowledgement) draws on that address's budget
//!   (`CQRS_RATE_LIMIT_PER_ADDRESS`, default 5 an hour), whoever asks and from wherever, so a
//!   flood cannot fill someone's mailbox. Known and unknown addresses are counted alike,
//!   before anything is looked up, so the answer tells nothing about either.
//! - Sign-in has no per-login budget: the lock-out already counts failures per account, and
//!   a budget the owner's own attempts could be refused by would let anyone lock them out.
//! - Over a budget: `RESOURCE_EXHAUSTED`, reason `RATE_LIMITED`, with a `RetryInfo` delay.
//! - Budgets are a replica's own (in memory): N replicas behind a balancer allow up to N
//!   times the figure. Keys idle long enough to be full again are dropped.
//!
//! A budget of `n/period` allows a burst of `n` and regains one call every `period / n`.
//!
//! The RPCs that mail an address also answer no sooner than `CQRS_UNIFORM_ANSWER_MS` (default
//! 250 ms) after they start ([`RateLimits::answer_no_sooner`]): a known address costs more
//! database work than an unknown one, and the time must not say which it was. Waiting costs
//! no CPU; the per-client budget bounds how many such waits one client can hold.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cqrs_runtime::config::{ConfigErrors, Env};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Checks between sweeps of idle keys.
const SWEEP_EVERY: u32 = 4096;

/// `n` calls per `period`, as configured (`5/hour`, `60/min`, `10/s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub calls: NonZeroU32,
    pub period: Duration,
}

impl Budget {
    /// `n/unit` with unit `s`, `min` or `hour` (also `sec`, `second`, `minute`, `h`); `off`
    /// for no limit (`None`).
    pub fn parse(raw: &str) -> Result<Option<Budget>, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (calls, unit) = raw
            .split_once('/')
            .ok_or_else(|| "expected calls/period, e.g. 5/hour, 60/min or off".to_owned())?;
        let calls: u32 = calls
            .trim()
            .parse()
            .map_err(|_| format!("{calls:?} is not a number of calls"))?;
        let calls =
            NonZeroU32::new(calls).ok_or_else(|| "use off rather than 0 calls".to_owned())?;
        let period = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("unknown period {other:?}: use s, min or hour")),
        };
        Ok(Some(Budget { calls, period }))
    }

    fn quota(self) -> Option<Quota> {
        Quota::with_period(self.period / self.calls.get()).map(|q| q.allow_burst(self.calls))
    }
}

/// The two budgets, from `CQRS_RATE_LIMIT_PER_CLIENT` and `CQRS_RATE_LIMIT_PER_ADDRESS`, and
/// the least answer time of the RPCs that mail an address (`CQRS_UNIFORM_ANSWER_MS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_client: Option<Budget>,
    pub per_address: Option<Budget>,
    pub answer_floor: Duration,
}

impl RateLimitConfig {
    pub const DEFAULT_PER_CLIENT: Budget = Budget {
        calls: NonZeroU32::new(60).expect("non-zero"),
        period: Duration::from_secs(60),
    };
    pub const DEFAULT_PER_ADDRESS: Budget = Budget {
        calls: NonZeroU32::new(5).expect("non-zero"),
        period: Duration::from_secs(3600),
    };
    pub const DEFAULT_ANSWER_FLOOR_MS: u64 = 250;

    /// Reads both budgets, reporting every bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let read = |name: &str, default: Budget| {
            env.optional_with(name, Budget::parse)
                .map(|v| v.unwrap_or(Some(default)))
        };
        let mut errs = ConfigErrors::default();
        let per_client = errs.take(read("CQRS_RATE_LIMIT_PER_CLIENT", Self::DEFAULT_PER_CLIENT));
        let per_address = errs.take(read(
            "CQRS_RATE_LIMIT_PER_ADDRESS",
            Self::DEFAULT_PER_ADDRESS,
        ));
        let answer_floor = errs.take(
            env.or("CQRS_UNIFORM_ANSWER_MS", Self::DEFAULT_ANSWER_FLOOR_MS)
                .and_then(|ms| {
                    cqrs_runtime::config::ConfigError::check(
                        ms <= 10_000,
                        "CQRS_UNIFORM_ANSWER_MS",
                        "must be at most 10000",
                    )
                    .map(|()| Duration::from_millis(ms))
                }),
        );
        errs.finish(|| {
            Some(RateLimitConfig {
                per_client: per_client?,
                per_address: per_address?,
                answer_floor: answer_floor?,
            })
        })
    }
}

/// Refused for a spent budget: try again after `retry_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many requests; try again in {} s", retry_after.as_secs().max(1))]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// The limiters of one service instance. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

struct Inner {
    per_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_address: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU32,
    answer_floor: Duration,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_client", &self.inner.per_client.is_some())
            .field("per_address", &self.inner.per_address.is_some())
            .finish()
    }
}

impl RateLimits {
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimits {
            inner: Arc::new(Inner {
                per_client: config
                    .per_client
                    .and_then(Budget::quota)
                    .map(DefaultKeyedRateLimiter::keyed),
                per_address: config
                    .per_address
                    .and_then(Budget::quota)
                    .map(DefaultKeyedRateLimiter::keyed),
                checks: AtomicU32::new(0),
                answer_floor: config.answer_floor,
            }),
        }
    }

    /// Waits until `CQRS_UNIFORM_ANSWER_MS` after `started`, then gives back `answer`: for the
    /// RPCs whose time would otherwise tell a known address from an unknown one.
    pub async fn answer_no_sooner<T>(&self, started: tokio::time::Instant, answer: T) -> T {
        tokio::time::sleep_until(started + self.inner.answer_floor).await;
        answer
    }

    /// Draws on the caller's budget, and on `mailed`'s when the call mails an address (the
    /// address as given; it is compared case-insensitively).
    pub fn check<T>(
        &self,
        request: &tonic::Request<T>,
        mailed: Option<&str>,
    ) -> Result<(), RateLimited> {
        self.sweep();
        let now = DefaultClock::default().now();
        let refused = |not_until: governor::NotUntil<_>| RateLimited {
            retry_after: not_until.wait_time_from(now),
        };
        if let (Some(limiter), Some(client)) = (&self.inner.per_client, client_address(request)) {
            limiter.check_key(&client).map_err(refused)?;
        }
        if let (Some(limiter), Some(address)) = (&self.inner.per_address, mailed) {
            let key = address.trim().to_lowercase();
            if !key.is_empty() {
                limiter.check_key(&key).map_err(refused)?;
            }
        }
        Ok(())
    }

    /// Now and then, forgets keys whose budget is full again (they would allow a whole burst
    /// anyway), so the maps do not grow with every address ever seen.
    fn sweep(&self) {
        if !self
            .inner
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            return;
        }
        if let Some(limiter) = &self.inner.per_client {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.inner.per_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The address a call is counted against: the client a trusted gateway vouches for, else the
/// connection's peer.
pub fn client_address<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<cqrs_runtime::audit::Client>()
        .and_then(|client| client.address.parse().ok())
        .or_else(|| request.remote_addr().map(|addr| addr.ip()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn from_peer(ip: &str) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        request
            .extensions_mut()
            .insert(cqrs_runtime::audit::Client {
                address: ip.to_owned(),
                user_agent: String::new(),
            });
        request
    }

    #[test]
    fn budgets_parse_and_bad_ones_say_why() {
        assert_eq!(
            Budget::parse("5/hour").unwrap(),
            Some(Budget {
                calls: NonZeroU32::new(5).unwrap(),
                period: Duration::from_secs(3600)
            })
        );
        assert_eq!(
            Budget::parse(" 60 / min ").unwrap().unwrap().calls.get(),
            60
        );
        assert_eq!(Budget::parse("OFF").unwrap(), None);
        for bad in ["5", "0/min", "x/min", "5/fortnight", ""] {
            assert!(Budget::parse(bad).is_err(), "{bad}");
        }
        let env = Env::from_pairs(&[
            ("CQRS_RATE_LIMIT_PER_CLIENT", "lots"),
            ("CQRS_RATE_LIMIT_PER_ADDRESS", "3/week"),
            ("CQRS_UNIFORM_ANSWER_MS", "60000"),
        ]);
        let errs = RateLimitConfig::from_env(&env).unwrap_err();
        let vars: Vec<&str> = errs.errors().iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "CQRS_RATE_LIMIT_PER_CLIENT",
                "CQRS_RATE_LIMIT_PER_ADDRESS",
                "CQRS_UNIFORM_ANSWER_MS"
            ]
        );
        let defaults = RateLimitConfig::from_env(&Env::from_pairs(&[])).unwrap();
        assert_eq!(
            defaults.per_client,
            Some(RateLimitConfig::DEFAULT_PER_CLIENT)
        );
        assert_eq!(
            defaults.per_address,
            Some(RateLimitConfig::DEFAULT_PER_ADDRESS)
        );
    }

    /// A burst of the budget passes, the next is refused with a delay of about one refill,
    /// and other clients and addresses have budgets of their own.
    #[test]
    fn a_spent_budget_refuses_with_a_delay_and_others_are_untouched() {
        let limits = RateLimits::new(RateLimitConfig {
            per_client: Budget::parse("3/min").unwrap(),
            per_address: Budget::parse("2/hour").unwrap(),
            answer_floor: Duration::ZERO,
        });
        let one = from_peer("10.0.0.1");
        for _ in 0..2 {
            limits.check(&one, Some("Ann@Example.org")).unwrap();
        }
        // The address's budget is spent, whatever its case or the client.
        let refused = limits
            .check(&from_peer("10.0.0.2"), Some("ann@example.org "))
            .unwrap_err();
        assert!(
            refused.retry_after > Duration::from_secs(29 * 60)
                && refused.retry_after <= Duration::from_secs(30 * 60),
            "{refused:?}"
        );
        limits.check(&one, Some("bob@example.org")).unwrap();
        let refused = limits.check(&one, None).unwrap_err();
        assert!(
            refused.retry_after <= Duration::from_secs(20),
            "{refused:?}"
        );
        limits.check(&from_peer("10.0.0.3"), None).unwrap();
        // Off is off.
        let open = RateLimits::new(RateLimitConfig {
            per_client: None,
            per_address: None,
            answer_floor: Duration::ZERO,
        });
        for _ in 0..100 {
            open.check(&one, Some("ann@example.org")).unwrap();
        }
    }
}
