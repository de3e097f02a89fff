//! A service's notion of "now", passed into its api so tests can move time (link expiry,
//! minimum password age, retry schedules) without sleeping.
//!
//! This is the one module that reads the system clock: `clippy.toml` bans `Utc::now` and
//! `SystemTime::now` everywhere else (and `scripts/check-domain.sh` exempts only this file), so
//! code gets time from a [`Clock`] its caller passes in, or a `now` argument.
//!
//! Two kinds of time are passed around:
//! - a service's clock (link expiry, lock-out, retry schedules, record timestamps), which tests
//!   may move with an [`OffsetClock`];
//! - token time: access tokens cross processes, and every issuer and verifier checks `iat` and
//!   `exp` against it, so it must be the same wall clock everywhere — a [`SystemClock`] in every
//!   service, never a service's adjustable clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[allow(clippy::disallowed_methods)] // the system clock itself
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by an adjustable offset (tests). Clones share the offset.
#[derive(Clone, Default)]
pub struct OffsetClock {
    offset_ms: Arc<AtomicI64>,
}

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves this clock (and every clone) `by` further.
    pub fn advance(&self, by: TimeDelta) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl fmt::Debug for OffsetClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffsetClock")
            .field("offset_ms", &self.offset_ms.load(Ordering::SeqCst))
            .finish()
    }
}

#[allow(clippy::disallowed_methods)] // the system clock, shifted
impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn offset_moves_every_clone() {
        let clock = OffsetClock::new();
        let other = clock.clone();
        let before = other.now();
        clock.advance(TimeDelta::hours(73));
        assert!(other.now() - before >= TimeDelta::hours(73));
    }
}
