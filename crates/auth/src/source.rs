//! Where a service gets the bearer token for its outgoing calls.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::error::AuthError;
use crate::token::TokenIssuer;

/// Supplies a service token for outgoing calls (outbox relay and other service clients).
pub trait TokenSource: Send + Sync + 'static {
    /// A currently valid bearer token.
    fn token(&self) -> BoxFuture<'_, Result<String, AuthError>>;
}

/// A fixed token (tests, development). `Debug` does not print it.
#[derive(Clone)]
pub struct StaticToken(pub String);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken([redacted])")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<String, AuthError>> {
        Box::pin(futures::future::ready(Ok(self.0.clone())))
    }
}

/// Mints a fresh service token from a local [`TokenIssuer`] on every call (tests, and
/// deployments where the caller holds the signing key).
#[derive(Clone, Debug)]
pub struct IssuerTokenSource {
    issuer: Arc<TokenIssuer>,
    client_id: String,
}

impl IssuerTokenSource {
    /// Tokens for `client_id` signed by `issuer`.
    pub fn new(issuer: Arc<TokenIssuer>, client_id: impl Into<String>) -> Self {
        Self {
            issuer,
            client_id: client_id.into(),
        }
    }
}

impl TokenSource for IssuerTokenSource {
    fn token(&self) -> BoxFuture<'_, Result<String, AuthError>> {
        let issued = self
            .issuer
            .issue_service(&self.client_id, chrono::Utc::now())
            .map(|t| t.token);
        Box::pin(futures::future::ready(issued))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{SigningKey, TokenVerifier};

    #[tokio::test]
    async fn static_and_issuer_sources() {
        let st = StaticToken("secret-token".into());
        assert_eq!(st.token().await.unwrap(), "secret-token");
        assert!(!format!("{st:?}").contains("secret-token"));

        let key = SigningKey::generate("k");
        let verifier = TokenVerifier::new(vec![key.verifying_key()]);
        let src = IssuerTokenSource::new(
            Arc::new(TokenIssuer::new(key, std::time::Duration::from_secs(60))),
            "outbox",
        );
        let token = src.token().await.unwrap();
        let p = verifier.verify(&token, chrono::Utc::now()).unwrap();
        assert_eq!(p.client_id(), Some("outbox"));
    }
}
