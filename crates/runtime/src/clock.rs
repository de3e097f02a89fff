//! A service's notion of "now": the clock lives in the pure rules crate
//! ([`cqrs_rules::clock`]) so the auth layer, which the runtime builds on, can take one too.
//! Re-exported here so services keep naming `cqrs_runtime::clock::{Clock, SystemClock, OffsetClock}`.

pub use cqrs_rules::clock::{Clock, OffsetClock, SystemClock};
