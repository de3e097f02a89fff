//! The request-authentication tower layer.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use cqrs_rules::clock::Clock;
use futures::future::BoxFuture;
use http::HeaderMap;
use tower::{Layer, Service};

use crate::error::AuthError;
use crate::principal::Principal;
use crate::session::SessionCheck;
use crate::token::TokenVerifier;

/// RPCs callable without a token (API.md "public"), as full gRPC paths.
pub const PUBLIC_METHODS: [&str; 17] = [
    "/cqrs.identity.v1.IdentityService/SignIn",
    "/cqrs.identity.v1.IdentityService/RefreshAccessToken",
    "/cqrs.identity.v1.IdentityService/IssueServiceToken",
    "/cqrs.identity.v1.IdentityService/GetSigningKeys",
    "/cqrs.identity.v1.IdentityService/CompleteRegistration",
    "/cqrs.identity.v1.IdentityService/GetLink",
    "/cqrs.identity.v1.IdentityService/CompleteSignIn",
    "/cqrs.identity.v1.IdentityService/ListIdentityProviders",
    "/cqrs.identity.v1.IdentityService/StartFederatedSignIn",
    "/cqrs.identity.v1.IdentityService/CompleteFederatedSignIn",
    "/cqrs.identity.v1.IdentityService/RequestPasswordReset",
    "/cqrs.identity.v1.IdentityService/ResetPassword",
    "/cqrs.identity.v1.IdentityService/RemindUserId",
    "/cqrs.directory.v1.DirectoryService/SearchOrganisations",
    "/cqrs.access.v1.AccessService/GetInvitation",
    "/cqrs.access.v1.AccessService/AcceptInvitation",
    "/cqrs.access.v1.AccessService/SubmitRegistration",
];

/// Administrative RPCs that need a recent second-factor check from a person who has a second
/// factor (step-up): approve or reject, invite, unlock, disable, re-enable, reset for
/// someone, remove a second factor, grant and revoke, create organisations. Decided from the
/// token alone ([`crate::SignInProof::needs_step_up`]).
pub const STEP_UP_METHODS: [&str; 16] = [
    "/cqrs.access.v1.AccessService/CreateInvitation",
    "/cqrs.access.v1.AccessService/ResendInvitation",
    "/cqrs.access.v1.AccessService/CancelInvitation",
    "/cqrs.access.v1.AccessService/ReviewRegistration",
    "/cqrs.access.v1.AccessService/ReviewAccessRequest",
    "/cqrs.identity.v1.IdentityService/CreateAccount",
    "/cqrs.identity.v1.IdentityService/SendPasswordReset",
    "/cqrs.identity.v1.IdentityService/UnlockAccount",
    "/cqrs.identity.v1.IdentityService/DisableAccount",
    "/cqrs.identity.v1.IdentityService/EnableAccount",
    "/cqrs.identity.v1.IdentityService/RemoveSecondFactor",
    "/cqrs.directory.v1.DirectoryService/CreateOrganisation",
    "/cqrs.directory.v1.DirectoryService/SetApprovalLevel",
    "/cqrs.directory.v1.DirectoryService/GrantRole",
    "/cqrs.directory.v1.DirectoryService/RevokeRole",
    "/cqrs.directory.v1.DirectoryService/RevokeAllRoles",
];

/// Path prefixes of whole public services: health checking and server reflection.
pub const PUBLIC_PREFIXES: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// Whether the gRPC method at `path` needs no token. Exact, case-sensitive match.
pub fn is_public(path: &str) -> bool {
    PUBLIC_METHODS.contains(&path) || PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The token of an `authorization: Bearer <token>` header. Exactly one such header; the scheme
/// is case-insensitive (RFC 7235).
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingCredentials)?;
    if values.next().is_some() {
        return Err(AuthError::MissingCredentials);
    }
    let value = value.to_str().map_err(|_| AuthError::MissingCredentials)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MissingCredentials)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MissingCredentials);
    }
    Ok(token)
}

/// Tower layer that authenticates every non-public gRPC request.
///
/// Public paths ([`is_public`]) pass untouched. Otherwise it requires
/// `authorization: Bearer <jwt>`, verifies it, checks a user token's session is live, and
/// inserts the [`Principal`] into the request extensions. Failures are answered here as
/// trailers-only gRPC responses: `Unauthenticated` ("missing or invalid credentials") for any
/// credential problem, `Unavailable` when the session store cannot answer (fail closed).
///
/// Tokens are checked against `clock`: token time, the system clock in every service (see
/// [`cqrs_rules::clock`]), not a service's adjustable clock.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    sessions: Arc<dyn SessionCheck>,
    clock: Arc<dyn Clock>,
}

impl AuthLayer {
    /// A layer verifying with `verifier` at `clock`'s time and checking user sessions with
    /// `sessions`.
    pub fn new(
        verifier: TokenVerifier,
        sessions: Arc<dyn SessionCheck>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            verifier,
            sessions,
            clock,
        }
    }

    /// The check the layer runs, for callers outside a tower stack.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        authenticate(&self.verifier, self.sessions.as_ref(), headers, now).await
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

async fn authenticate(
    verifier: &TokenVerifier,
    sessions: &dyn SessionCheck,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Principal, AuthError> {
    let principal = verifier.verify(bearer_token(headers)?, now)?;
    if let Principal::User {
        account_id,
        session_id,
        ..
    } = &principal
        && !sessions.is_live(*account_id, session_id).await?
    {
        return Err(AuthError::SessionEnded);
    }
    Ok(principal)
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            sessions: self.sessions.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
    sessions: Arc<dyn SessionCheck>,
    clock: Arc<dyn Clock>,
}

impl<S: fmt::Debug> fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        // The instance polled ready is the one that must take the call; leave a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Only this layer may vouch for a caller.
        req.extensions_mut().remove::<Principal>();
        if is_public(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        let verifier = self.verifier.clone();
        let sessions = self.sessions.clone();
        let now = self.clock.now();
        Box::pin(async move {
            let authenticated = authenticate(&verifier, sessions.as_ref(), req.headers(), now)
                .await
                .and_then(|principal| {
                    let stale = principal
                        .proof()
                        .is_some_and(|proof| proof.needs_step_up(now.timestamp()));
                    if stale && STEP_UP_METHODS.contains(&req.uri().path()) {
                        Err(AuthError::StepUpRequired)
                    } else {
                        Ok(principal)
                    }
                });
            match authenticated {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err(err) => {
                    match &err {
                        AuthError::Unavailable(detail) => tracing::warn!(
                            path = req.uri().path(),
                            detail = detail.as_str(),
                            "authentication unavailable"
                        ),
                        other => tracing::debug!(
                            path = req.uri().path(),
                            reason = %other,
                            "request refused"
                        ),
                    }
                    Ok(err.to_status().into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use http::HeaderValue;

    #[test]
    fn public_paths() {
        for p in PUBLIC_METHODS {
            assert!(is_public(p), "{p}");
        }
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public("/grpc.health.v1.Health/Watch"));
        assert!(is_public(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(is_public(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        for p in [
            "/cqrs.identity.v1.IdentityService/SignOut",
            "/cqrs.identity.v1.IdentityService/SelectRole",
            "/cqrs.identity.v1.IdentityService/SignIn/",
            "/cqrs.identity.v1.IdentityService/signin",
            "/cqrs.identity.v1.IdentityService/SignInX",
            "/cqrs.directory.v1.DirectoryService/GetOrganisation",
            "/cqrs.access.v1.AccessService/CreateInvitation",
            "/cqrs.notifications.v1.NotificationService/EnqueueEmail",
            "/grpc.health.v1.HealthX/Check",
            "",
            "/",
        ] {
            assert!(!is_public(p), "{p}");
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])).unwrap(), "abc");
        assert_eq!(bearer_token(&headers(&["bearer  abc "])).unwrap(), "abc");
        assert_eq!(bearer_token(&headers(&["BEARER abc"])).unwrap(), "abc");
        for bad in [
            &[][..],
            &["Basic abc"],
            &["Bearer"],
            &["Bearer "],
            &["abc"],
            &["Bearer a", "Bearer b"],
        ] {
            assert!(
                matches!(
                    bearer_token(&headers(bad)),
                    Err(AuthError::MissingCredentials)
                ),
                "{bad:?}"
            );
        }
    }
}
