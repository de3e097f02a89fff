//! Typed clients of the suite's services, for the services that call each other: identity
//! asks the directory for grants and scope; the directory asks identity to end sessions;
//! access asks both to create accounts, check permissions and make grants; identity and
//! access hand their outbox rows to the notification service.
//!
//! Every call ([`Caller`]):
//! - carries a service token from the caller's `TokenSource` and the W3C trace context;
//! - is bounded by the configured call timeout, or what is left of the caller's own request
//!   deadline when that is sooner — connecting and fetching the token included;
//! - is retried, with jittered backoff inside that budget, only when the peer was unavailable
//!   and the call is idempotent (reads, creates keyed on a request id, ending sessions);
//!   never otherwise, and never for callers with a durable retry schedule of their own;
//! - fails with one error type, [`PeerError`], which keeps the peer's `ErrorInfo` reason.
//!
//! List RPCs are followed page by page ([`Caller::all_pages`]), with a bound on the number of
//! pages so a misbehaving peer cannot loop a request.

mod audit;
mod call;
mod directory;
mod error;
mod identity;
mod notifications;

pub use audit::AuditPeer;
pub use call::{Caller, Retry};
pub use directory::{Check, DirectoryPeer};
pub use error::PeerError;
pub use identity::{EnsuredAccount, IdentityPeer};
pub use notifications::NotificationsPeer;
