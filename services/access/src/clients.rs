//! The access service's peers: identity (accounts) and the directory (organisations,
//! permission checks, grants), through the suite's typed clients (`cqrs_peers`): service
//! tokens, trace context, deadlines (the configured call timeout, or what is left of the
//! caller's own deadline when that is sooner) and retries only where safe.
//!
//! Calls that create something (CreateAccount, GrantRole) are keyed on request ids derived
//! from the workflow row (`domain::rules::derived_id`), so repeating one after a timeout or a
//! crash creates nothing twice.

use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::TokenSource;
pub use cqrs_peers::{Check, DirectoryPeer, EnsuredAccount, IdentityPeer, PeerError};
use tonic::transport::Channel;

/// Clients of identity and the directory; cheap to clone.
#[derive(Clone)]
pub struct Peers {
    pub identity: IdentityPeer,
    pub directory: DirectoryPeer,
    /// What the calls authenticate with, for other clients (the audit witnesses).
    pub tokens: Arc<dyn TokenSource>,
    pub timeout: Duration,
}

impl Peers {
    /// Calls over `identity` and `directory` with tokens from `tokens`, each bounded by
    /// `timeout`.
    pub fn new(
        identity: Channel,
        directory: Channel,
        tokens: Arc<dyn TokenSource>,
        timeout: Duration,
    ) -> Self {
        Peers {
            identity: IdentityPeer::new(identity, Arc::clone(&tokens), timeout),
            directory: DirectoryPeer::new(directory, Arc::clone(&tokens), timeout),
            tokens,
            timeout,
        }
    }
}
