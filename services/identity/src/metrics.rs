//! What identity counts for operators beyond every RPC's latency and code (which the server
//! stack records): locks by kind and sessions started and ended. The hashing pool's own
//! figures live with the pool (`hashing`).

use std::sync::OnceLock;

use cqrs_runtime::metrics::{self, Counter, KeyValue};

struct Counters {
    locks: Counter<u64>,
    sessions_started: Counter<u64>,
    sessions_ended: Counter<u64>,
}

fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| Counters {
        locks: metrics::counter(
            "identity.lockouts",
            "Accounts locked after failed attempts, by kind (temporary, permanent)",
        ),
        sessions_started: metrics::counter("identity.sessions.started", "Sessions started"),
        sessions_ended: metrics::counter(
            "identity.sessions.ended",
            "Sessions ended before they expired (sign-out, lock, disable, password change, revocation)",
        ),
    })
}

/// An account was locked; `kind` is `temporary` or `permanent`.
pub fn locked(kind: &'static str) {
    counters().locks.add(1, &[KeyValue::new("kind", kind)]);
}

pub fn session_started() {
    counters().sessions_started.add(1, &[]);
}

pub fn sessions_ended(count: u32) {
    if count > 0 {
        counters().sessions_ended.add(u64::from(count), &[]);
    }
}
