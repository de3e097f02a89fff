//! The service's notion of "now" (shared with the other services, see
//! [`cqrs_runtime::clock`]), passed into the api so tests can move time (link expiry, minimum
//! password age) without sleeping.

pub use cqrs_runtime::clock::{Clock, OffsetClock, SystemClock};
