//! Where a service gets the bearer token for its outgoing calls.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_proto::identity::v1::IssueServiceTokenRequest;
use cqrs_proto::identity::v1::identity_service_client::IdentityServiceClient;
use cqrs_rules::clock::Clock;
use futures::future::BoxFuture;
use tonic::transport::Channel;

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

/// Service tokens minted by a local [`TokenIssuer`] (tests, and deployments where the caller
/// holds the signing key), each reused until shortly before it expires, as
/// [`IdentityTokenSource`] reuses fetched ones: a signature per outgoing call cost as much CPU
/// as the rest of a sign-in's call to the directory, and a token seen before is answered from
/// the verifier's cache on the other side.
pub struct IssuerTokenSource {
    issuer: Arc<TokenIssuer>,
    client_id: String,
    clock: Arc<dyn Clock>,
    minted: std::sync::Mutex<Option<CachedToken>>,
}

impl IssuerTokenSource {
    /// Tokens for `client_id` signed by `issuer`, issued at `clock`'s time (token time: the
    /// system clock, which the services verifying them use too).
    pub fn new(
        issuer: Arc<TokenIssuer>,
        client_id: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            issuer,
            client_id: client_id.into(),
            clock,
            minted: std::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Result<String, AuthError> {
        let now = self.clock.now();
        let mut minted = self
            .minted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A clock that went back before the token's `iat` gets a fresh one: a token from the
        // future would be refused.
        if let Some(m) = minted
            .as_ref()
            .filter(|m| m.issued_at <= now && now < m.refresh_at)
        {
            return Ok(m.token.clone());
        }
        let issued = self.issuer.issue_service(&self.client_id, now)?;
        let fresh = CachedToken::new(issued.token, now, issued.expires_at);
        let token = fresh.token.clone();
        *minted = Some(fresh);
        Ok(token)
    }
}

impl fmt::Debug for IssuerTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerTokenSource")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource for IssuerTokenSource {
    fn token(&self) -> BoxFuture<'_, Result<String, AuthError>> {
        Box::pin(futures::future::ready(self.current()))
    }
}

/// Service tokens obtained from identity's `IssueServiceToken` with client credentials, cached
/// until shortly before they expire — what a deployed service uses when it does not hold the
/// signing key.
///
/// One fetch at a time: callers arriving while a token is being fetched wait for it instead of
/// each asking identity. A failed fetch is not cached, so the next call tries again.
pub struct IdentityTokenSource {
    client: IdentityServiceClient<Channel>,
    client_id: String,
    client_secret: String,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: String,
    issued_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
}

impl CachedToken {
    /// `token`, had at `now` and expiring at `expires_at`: replaced [`REFRESH_MARGIN`] before
    /// it expires, or at half its lifetime if that is shorter.
    fn new(token: String, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Self {
        let lifetime = (expires_at - now).max(TimeDelta::zero());
        CachedToken {
            token,
            issued_at: now,
            refresh_at: expires_at - REFRESH_MARGIN.min(lifetime / 2),
        }
    }
}

/// Longest margin before expiry at which a cached token is replaced. Shorter-lived tokens are
/// replaced at half their lifetime.
const REFRESH_MARGIN: TimeDelta = TimeDelta::seconds(60);

impl IdentityTokenSource {
    /// Tokens for `client_id` / `client_secret` from the identity service behind `channel`;
    /// each fetch gives up after `timeout`. A token is replaced when `clock` (token time: the
    /// system clock) nears its expiry.
    pub fn new(
        channel: Channel,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client: IdentityServiceClient::new(channel),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            timeout,
            clock,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<CachedToken, AuthError> {
        let mut request = tonic::Request::new(IssueServiceTokenRequest {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
        });
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        let call = tokio::time::timeout(self.timeout, client.issue_service_token(request));
        let response = match call.await {
            Err(_) => {
                return Err(AuthError::Unavailable(
                    "token endpoint: timed out".to_owned(),
                ));
            }
            Ok(Err(status)) => return Err(fetch_error(&status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        let now = self.clock.now();
        let expires_at = response
            .expires_at
            .and_then(|ts| DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?))
            // Without an expiry, assume the shortest lifetime identity issues.
            .unwrap_or(now + TimeDelta::minutes(5));
        Ok(CachedToken::new(response.access_token, now, expires_at))
    }
}

/// Bad credentials are a configuration problem (`Issue`); anything else may pass (`Unavailable`).
fn fetch_error(status: &tonic::Status) -> AuthError {
    match status.code() {
        tonic::Code::Unauthenticated
        | tonic::Code::InvalidArgument
        | tonic::Code::PermissionDenied => AuthError::Issue(format!(
            "identity refused the client credentials ({:?})",
            status.code()
        )),
        code => AuthError::Unavailable(format!("token endpoint: {code:?}")),
    }
}

impl fmt::Debug for IdentityTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityTokenSource")
            .field("client_id", &self.client_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TokenSource for IdentityTokenSource {
    fn token(&self) -> BoxFuture<'_, Result<String, AuthError>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            if let Some(c) = cached.as_ref().filter(|c| self.clock.now() < c.refresh_at) {
                return Ok(c.token.clone());
            }
            let fresh = self.fetch().await?;
            let token = fresh.token.clone();
            *cached = Some(fresh);
            Ok(token)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{SigningKey, TokenVerifier};
    use cqrs_rules::clock::{OffsetClock, SystemClock};

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
            Arc::new(SystemClock),
        );
        let token = src.token().await.unwrap();
        let p = verifier.verify(&token, SystemClock.now()).unwrap();
        assert_eq!(p.client_id(), Some("outbox"));
    }

    #[tokio::test]
    async fn minted_tokens_are_reused_until_near_expiry() {
        let key = SigningKey::generate("k");
        let verifier = TokenVerifier::new(vec![key.verifying_key()]);
        let clock = OffsetClock::new();
        // 15 minutes: replaced one minute before expiry.
        let src = IssuerTokenSource::new(
            Arc::new(TokenIssuer::new(key, std::time::Duration::from_secs(900))),
            "identity",
            Arc::new(clock.clone()),
        );
        let first = src.token().await.unwrap();
        clock.advance(TimeDelta::minutes(13));
        assert_eq!(src.token().await.unwrap(), first);
        clock.advance(TimeDelta::seconds(61));
        let second = src.token().await.unwrap();
        assert_ne!(second, first);
        assert!(verifier.verify(&second, clock.now()).is_ok());
        // A clock set back before the token was issued gets one it can use.
        clock.advance(TimeDelta::minutes(-30));
        let third = src.token().await.unwrap();
        assert_ne!(third, second);
        assert!(verifier.verify(&third, clock.now()).is_ok());
    }
}
