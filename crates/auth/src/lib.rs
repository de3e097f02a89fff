//! Access tokens (issue/verify), the request-auth tower layer, [`Principal`] and the
//! role/permission table shared by every CQRS identity service.
//!
//! Tokens are EdDSA (Ed25519) JWTs signed by the identity service and verified locally by each
//! service with its public key(s); a user token is only honoured while its session is live in
//! identity's Redis ([`SessionCheck`]).

mod error;
mod keys;
mod layer;
mod principal;
mod role_proto;
mod session;
mod source;
mod token;
mod token_cache;

pub use cqrs_rules::decision::{
    Decision, GRANTED, NO_GRANT_IN_SCOPE, ROLE_LACKS_PERMISSION, counts_approver_grants, covers,
    decide, decide_any, has_suite_scope,
};
pub use cqrs_rules::roles::{Permission, Role, UnknownName, role_grants};
pub use error::{
    AUTHENTICATION_REQUIRED, AuthError, KeyError, STEP_UP_REQUIRED, UNAUTHENTICATED_MESSAGE,
    UNAVAILABLE_MESSAGE, unauthenticated,
};
pub use keys::{SigningKey, VerifyingKey};
pub use layer::{
    AuthLayer, AuthService, PUBLIC_METHODS, PUBLIC_PREFIXES, STEP_UP_METHODS, is_public,
};
pub use principal::{ActiveGrant, Principal, SecondFactorCheck, SignInProof, principal};
pub use role_proto::RoleProto;
pub use session::{
    CACHE_TTL, CachedSessionCheck, HEARD_WITHIN, RedisSessionCheck, SessionCheck,
    account_key_prefix, announce_ended, session_key, session_key_pattern, sessions_ended_channel,
};
pub use source::{IdentityTokenSource, IssuerTokenSource, StaticToken, TokenSource};
pub use token::{AUDIENCE, CLOCK_LEEWAY_SECS, ISSUER, IssuedToken, TokenIssuer, TokenVerifier};
