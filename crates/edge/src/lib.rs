//! The edge every service's gRPC handlers share, so that a service's `api` holds only its own
//! rules:
//!
//! - [`ApiError`]: the errors every service has (bad fields, not signed in, refused, missing,
//!   a reused request id, a stored state that forbids the change, a dependency down, a bug),
//!   plus the service's own reasons ([`ServiceReason`]); mapped to a `tonic::Status` with its
//!   `google.rpc` details in exactly one place.
//! - [`request`]: the caller's [`Principal`](cqrs_auth::Principal) and id fields.
//! - [`scope`]: the two-step authorisation (role first without I/O, then the target's scope)
//!   that keeps permission checks ahead of existence checks.
//! - [`refusals`]: refused changes recorded in the service's audit trail.
//! - [`audit`]: the read side of every trail (`ListAuditEvents`), as `cqrs.common.v1` events.
//! - [`audit_chain`]: every service's chain service and the job that anchors its chain.

pub mod audit;
pub mod audit_chain;
mod error;
pub mod rate_limit;
pub mod refusals;
pub mod request;
pub mod scope;

pub use error::{ApiError, BoxError, Denial, Refusal, ServiceReason};

/// A stored time as every contract carries it.
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Sub-second nanoseconds of a valid time always fit.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
