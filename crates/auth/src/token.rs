//! Access tokens: EdDSA JWTs issued by identity and verified locally by every service.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{AuthError, KeyError};
use crate::keys::{SigningKey, VerifyingKey};
use crate::principal::{ActiveGrant, Principal, SecondFactorCheck, SignInProof};
use crate::token_cache::{self, TokenCache};
use cqrs_rules::Role;

/// `iss` of every access token.
pub const ISSUER: &str = "cqrs-identity";
/// `aud` of every access token.
pub const AUDIENCE: &str = "cqrs";
/// Clock skew tolerated on `exp` (and on an `iat` in the future).
pub const CLOCK_LEEWAY_SECS: i64 = 30;
/// Longer bearer values are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;
const MAX_ID_LEN: usize = 128;

/// jsonwebtoken resolves its crypto backend through a process-wide default that can be left
/// undetermined by feature unification; pin the RustCrypto one before first use so users of
/// this crate never have to. If someone installed a provider first, theirs stays.
pub(crate) fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
    });
}

/// Session ids end up in Redis keys and logs: keep them to the RFC 7235 token68 alphabet.
fn valid_session_id(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= MAX_ID_LEN
        && sid.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
        })
}

fn valid_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TokenKind {
    User,
    Service,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    kind: TokenKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    /// RFC 8176 authentication method references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    amr: Vec<String>,
    /// When the session's second factor was last checked (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sfa: Option<i64>,
    /// Until when that check counts for step-up (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sfx: Option<i64>,
    /// The person's display name (OpenID Connect's `name`), for audit trails.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// A freshly issued access token.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWT (a bearer credential: never log it).
    pub token: String,
    /// Its `exp`, whole seconds.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Signs access tokens with one [`SigningKey`] and a fixed lifetime.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    ttl: Duration,
}

impl TokenIssuer {
    /// An issuer whose tokens live `ttl` (whole seconds; identity uses 5-15 minutes).
    pub fn new(key: SigningKey, ttl: Duration) -> Self {
        ensure_crypto_provider();
        Self { key, ttl }
    }

    /// Token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The public half of the signing key (for `GetSigningKeys` and local verifiers).
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// A user token bound to `session_id`, optionally scoped to the picked grant, for a
    /// session started with a password alone.
    pub fn issue_user(
        &self,
        account_id: Uuid,
        session_id: &str,
        active: Option<&ActiveGrant>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, AuthError> {
        let proof = SignInProof {
            methods: vec!["pwd".to_owned()],
            second_factor: None,
            display_name: String::new(),
        };
        self.issue_user_with(account_id, session_id, active, &proof, now)
    }

    /// A user token carrying how the session's person signed in (`amr`) and their last
    /// second-factor check, so every service can ask for a recent one from the token alone.
    pub fn issue_user_with(
        &self,
        account_id: Uuid,
        session_id: &str,
        active: Option<&ActiveGrant>,
        proof: &SignInProof,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, AuthError> {
        if !valid_session_id(session_id) {
            return Err(AuthError::Issue("invalid session id".into()));
        }
        self.issue(
            account_id.to_string(),
            TokenKind::User,
            Some(session_id.to_owned()),
            active.copied(),
            Some(proof),
            now,
        )
    }

    /// A service token for `client_id`; it needs no session.
    pub fn issue_service(
        &self,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, AuthError> {
        if !valid_client_id(client_id) {
            return Err(AuthError::Issue("invalid client id".into()));
        }
        self.issue(
            client_id.to_owned(),
            TokenKind::Service,
            None,
            None,
            None,
            now,
        )
    }

    fn issue(
        &self,
        sub: String,
        kind: TokenKind,
        sid: Option<String>,
        active: Option<ActiveGrant>,
        proof: Option<&SignInProof>,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, AuthError> {
        let second_factor = proof.and_then(|p| p.second_factor);
        let iat = now.timestamp();
        let exp = i64::try_from(self.ttl.as_secs())
            .ok()
            .and_then(|ttl| iat.checked_add(ttl))
            .ok_or_else(|| AuthError::Issue("ttl out of range".into()))?;
        let expires_at = DateTime::from_timestamp(exp, 0)
            .ok_or_else(|| AuthError::Issue("ttl out of range".into()))?;
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub,
            kind,
            sid,
            org: active.map(|g| g.organisation_id),
            role: active.map(|g| g.role.as_str().to_owned()),
            amr: proof.map(|p| p.methods.clone()).unwrap_or_default(),
            name: proof.map(|p| p.display_name.clone()).unwrap_or_default(),
            sfa: second_factor.map(|c| c.checked_at),
            sfx: second_factor.map(|c| c.fresh_until),
            iat,
            exp,
            jti: Uuid::new_v4().to_string(),
        };
        let token = self
            .key
            .sign_jwt(&claims)
            .map_err(|e| AuthError::Issue(e.to_string()))?;
        Ok(IssuedToken { token, expires_at })
    }
}

struct VerifierInner {
    keys: HashMap<String, (VerifyingKey, DecodingKey)>,
    validation: Validation,
    /// Tokens this verifier accepted, by SHA-256 (see [`crate::token_cache`]). It lives with
    /// the key set, so it never answers for a key the verifier does not hold.
    verified: TokenCache,
}

/// Verifies access tokens against a set of public keys, selected by the token's `kid`
/// (several keys allow rotation). Cheap to clone; clones share a bounded cache of tokens
/// already verified, so a token seen again costs a hash instead of a signature check.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierInner>,
}

impl TokenVerifier {
    /// A verifier for these keys. If two share a kid, the later one is kept
    /// ([`TokenVerifier::from_env_value`] refuses that instead).
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        ensure_crypto_provider();
        let keys = keys
            .into_iter()
            .map(|k| {
                let decoding = DecodingKey::from_ed_der(&k.public_key_bytes());
                (k.kid.clone(), (k, decoding))
            })
            .collect();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        // Time checks are ours, against the caller's `now` (see `verify`).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        Self {
            inner: Arc::new(VerifierInner {
                keys,
                validation,
                verified: TokenCache::new(token_cache::DEFAULT_CAPACITY),
            }),
        }
    }

    /// Comma-separated [`VerifyingKey`] values (`kid:base64url,kid2:base64url`), at least one,
    /// no duplicate kid. Surrounding whitespace and empty items are ignored.
    pub fn from_env_value(s: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<VerifyingKey> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let key = VerifyingKey::from_env_value(item)?;
            if keys.iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKid(key.kid));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self::new(keys))
    }

    /// The keys held, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.inner.keys.values().map(|(k, _)| k)
    }

    /// Checks signature (EdDSA only, key chosen by `kid`), `iss`, `aud`, `exp` against `now`
    /// (at most [`CLOCK_LEEWAY_SECS`] late) and the claim shape, and returns the caller.
    /// Session liveness is not checked here (see [`crate::SessionCheck`]).
    ///
    /// A token this verifier accepted before answers from its cache while `now` is before the
    /// token's `exp`; past that (in the leeway) it is checked in full again.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidToken);
        }
        let key = token_cache::key_of(token);
        if let Some(principal) = self.inner.verified.get(&key, now.timestamp()) {
            return Ok(principal);
        }
        let (principal, iat, exp) = self.verify_in_full(token, now)?;
        // Accepted in the leeway after `exp`: the cache could not answer for it anyway.
        if now.timestamp() < exp {
            self.inner.verified.insert(key, principal.clone(), iat, exp);
        }
        Ok(principal)
    }

    /// [`TokenVerifier::verify`] without the cache: every call checks the signature and
    /// claims (for benchmarks and tests that measure or exercise exactly that).
    pub fn verify_uncached(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        self.verify_in_full(token, now)
            .map(|(principal, _, _)| principal)
    }

    /// The full check; returns the caller with the token's `iat` and `exp`.
    fn verify_in_full(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(Principal, i64, i64), AuthError> {
        ensure_crypto_provider();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidToken);
        }
        // The header is read unverified only to pick the key; the algorithm is pinned before
        // any key is used, so an `HS256`/`none` token never reaches a verifier.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::InvalidToken);
        }
        let kid = header.kid.as_deref().ok_or(AuthError::InvalidToken)?;
        let (_, key) = self.inner.keys.get(kid).ok_or(AuthError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.inner.validation)
            .map_err(|_| AuthError::InvalidToken)?
            .claims;
        let (iat, exp) = (claims.iat, claims.exp);
        Ok((Self::check_claims(claims, now)?, iat, exp))
    }

    fn check_claims(claims: Claims, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let now = now.timestamp();
        if claims.exp < claims.iat || claims.iat > now.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(AuthError::InvalidToken);
        }
        if now > claims.exp.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        match claims.kind {
            TokenKind::User => {
                let account_id =
                    Uuid::parse_str(&claims.sub).map_err(|_| AuthError::InvalidToken)?;
                let session_id = claims
                    .sid
                    .filter(|s| valid_session_id(s))
                    .ok_or(AuthError::InvalidToken)?;
                let active = match (claims.org, claims.role) {
                    (None, None) => None,
                    (Some(organisation_id), Some(role)) => Some(ActiveGrant {
                        organisation_id,
                        role: Role::parse(&role).ok_or(AuthError::InvalidToken)?,
                    }),
                    _ => return Err(AuthError::InvalidToken),
                };
                let second_factor = match (claims.sfa, claims.sfx) {
                    (None, None) => None,
                    (Some(checked_at), Some(fresh_until)) if checked_at <= fresh_until => {
                        Some(SecondFactorCheck {
                            checked_at,
                            fresh_until,
                        })
                    }
                    _ => return Err(AuthError::InvalidToken),
                };
                Ok(Principal::User {
                    account_id,
                    session_id,
                    active,
                    proof: SignInProof {
                        methods: claims.amr,
                        second_factor,
                        display_name: claims.name,
                    },
                })
            }
            TokenKind::Service => {
                if claims.sid.is_some()
                    || claims.org.is_some()
                    || claims.role.is_some()
                    || !claims.amr.is_empty()
                    || !claims.name.is_empty()
                    || claims.sfa.is_some()
                    || claims.sfx.is_some()
                    || !valid_client_id(&claims.sub)
                {
                    return Err(AuthError::InvalidToken);
                }
                Ok(Principal::Service {
                    client_id: claims.sub,
                })
            }
        }
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.inner.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("TokenVerifier")
            .field("kids", &kids)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chrono::TimeDelta;
    use jsonwebtoken::{EncodingKey, Header};

    const TTL: Duration = Duration::from_secs(600);

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn setup() -> (TokenIssuer, TokenVerifier) {
        let key = SigningKey::generate("k1");
        let verifier = TokenVerifier::new(vec![key.verifying_key()]);
        (TokenIssuer::new(key, TTL), verifier)
    }

    fn grant() -> ActiveGrant {
        ActiveGrant {
            organisation_id: Uuid::new_v4(),
            role: Role::CommissioningApprover,
        }
    }

    fn parts(token: &str) -> (serde_json::Value, serde_json::Value, String) {
        let mut it = token.split('.');
        let h = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        let p = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        (
            serde_json::from_slice(&h).unwrap(),
            serde_json::from_slice(&p).unwrap(),
            it.next().unwrap().to_owned(),
        )
    }

    fn enc(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn user_round_trip_with_and_without_grant() {
        let (issuer, verifier) = setup();
        let account = Uuid::new_v4();
        let g = grant();
        let issued = issuer
            .issue_user(account, "sess-1", Some(&g), now())
            .unwrap();
        assert_eq!(issued.expires_at, now() + TimeDelta::seconds(600));
        assert_eq!(
            verifier.verify(&issued.token, now()).unwrap(),
            Principal::User {
                account_id: account,
                session_id: "sess-1".into(),
                active: Some(g),
                proof: SignInProof {
                    methods: vec!["pwd".into()],
                    second_factor: None,
                    display_name: String::new(),
                },
            }
        );

        let plain = issuer.issue_user(account, "sess-1", None, now()).unwrap();
        let p = verifier.verify(&plain.token, now()).unwrap();
        assert_eq!(p.active_role(), None);
        assert_eq!(p.account_id(), Some(account));
    }

    #[test]
    fn second_factor_claims_round_trip_and_must_be_consistent() {
        let (issuer, verifier) = setup();
        let account = Uuid::new_v4();
        let check = SecondFactorCheck {
            checked_at: now().timestamp() - 5,
            fresh_until: now().timestamp() + 895,
        };
        let proof = SignInProof {
            methods: vec!["pwd".into(), "otp".into()],
            second_factor: Some(check),
            display_name: "Ann Smith".into(),
        };
        let issued = issuer
            .issue_user_with(account, "s", None, &proof, now())
            .unwrap();
        let (_, p, _) = parts(&issued.token);
        assert_eq!(p["amr"], serde_json::json!(["pwd", "otp"]));
        assert_eq!(p["name"], "Ann Smith");
        assert_eq!(p["sfa"], check.checked_at);
        let principal = verifier.verify(&issued.token, now()).unwrap();
        assert_eq!(principal.proof(), Some(&proof));
        assert!(!proof.needs_step_up(now().timestamp()));
        assert!(proof.needs_step_up(check.fresh_until + 1));
        assert!(!SignInProof::default().needs_step_up(i64::MAX));
    }

    #[test]
    fn claims_on_the_wire() {
        let (issuer, _) = setup();
        let account = Uuid::new_v4();
        let g = grant();
        let t = issuer.issue_user(account, "s", Some(&g), now()).unwrap();
        let (h, p, _) = parts(&t.token);
        assert_eq!(h["alg"], "EdDSA");
        assert_eq!(h["kid"], "k1");
        assert_eq!(p["iss"], ISSUER);
        assert_eq!(p["aud"], AUDIENCE);
        assert_eq!(p["sub"], account.to_string());
        assert_eq!(p["kind"], "user");
        assert_eq!(p["sid"], "s");
        assert_eq!(p["org"], g.organisation_id.to_string());
        assert_eq!(p["role"], "COMMISSIONING_APPROVER");
        assert_eq!(p["iat"], now().timestamp());
        assert_eq!(p["exp"], now().timestamp() + 600);
        assert!(Uuid::parse_str(p["jti"].as_str().unwrap()).is_ok());

        let s = issuer.issue_service("outbox-relay", now()).unwrap();
        let (_, p, _) = parts(&s.token);
        assert_eq!(p["kind"], "service");
        assert_eq!(p["sub"], "outbox-relay");
        assert!(p.get("sid").is_none() && p.get("org").is_none() && p.get("role").is_none());
    }

    #[test]
    fn service_round_trip() {
        let (issuer, verifier) = setup();
        let t = issuer.issue_service("outbox-relay", now()).unwrap();
        assert_eq!(
            verifier.verify(&t.token, now()).unwrap(),
            Principal::Service {
                client_id: "outbox-relay".into()
            }
        );
    }

    #[test]
    fn expiry_with_leeway() {
        let (issuer, verifier) = setup();
        let t = issuer.issue_service("svc", now()).unwrap();
        let exp = now() + TimeDelta::seconds(600);
        assert!(verifier.verify(&t.token, exp).is_ok());
        assert!(
            verifier
                .verify(&t.token, exp + TimeDelta::seconds(30))
                .is_ok()
        );
        assert!(matches!(
            verifier.verify(&t.token, exp + TimeDelta::seconds(31)),
            Err(AuthError::Expired)
        ));
        let old = issuer
            .issue_user(Uuid::new_v4(), "s", None, now() - TimeDelta::hours(1))
            .unwrap();
        assert!(matches!(
            verifier.verify(&old.token, now()),
            Err(AuthError::Expired)
        ));
    }

    #[test]
    fn issued_in_the_future_is_refused() {
        let (issuer, verifier) = setup();
        let t = issuer
            .issue_service("svc", now() + TimeDelta::seconds(31))
            .unwrap();
        assert!(matches!(
            verifier.verify(&t.token, now()),
            Err(AuthError::InvalidToken)
        ));
        let t = issuer
            .issue_service("svc", now() + TimeDelta::seconds(30))
            .unwrap();
        assert!(verifier.verify(&t.token, now()).is_ok());
    }

    #[test]
    fn another_key_with_the_same_kid_is_refused() {
        let (_, verifier) = setup();
        let impostor = TokenIssuer::new(SigningKey::generate("k1"), TTL);
        let t = impostor.issue_service("svc", now()).unwrap();
        assert!(matches!(
            verifier.verify(&t.token, now()),
            Err(AuthError::InvalidToken)
        ));
    }

    #[test]
    fn unknown_or_missing_kid_is_refused() {
        let (_, verifier) = setup();
        let other = TokenIssuer::new(SigningKey::generate("k2"), TTL);
        let t = other.issue_service("svc", now()).unwrap();
        assert!(matches!(
            verifier.verify(&t.token, now()),
            Err(AuthError::UnknownKey)
        ));

        let (issuer, verifier) = setup();
        let t = issuer.issue_service("svc", now()).unwrap();
        let (mut h, _, _) = parts(&t.token);
        h.as_object_mut().unwrap().remove("kid");
        let rest = t.token.split_once('.').unwrap().1;
        let no_kid = format!("{}.{rest}", enc(&h));
        assert!(matches!(
            verifier.verify(&no_kid, now()),
            Err(AuthError::InvalidToken)
        ));
    }

    #[test]
    fn rotation_accepts_any_listed_key() {
        let old = SigningKey::generate("old");
        let new = SigningKey::generate("new");
        let verifier = TokenVerifier::new(vec![old.verifying_key(), new.verifying_key()]);
        for key in [old, new] {
            let t = TokenIssuer::new(key, TTL)
                .issue_service("svc", now())
                .unwrap();
            assert!(verifier.verify(&t.token, now()).is_ok());
        }
        let mut kids: Vec<_> = verifier.keys().map(|k| k.kid.clone()).collect();
        kids.sort();
        assert_eq!(kids, ["new", "old"]);
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let key = SigningKey::generate("k1");
        let verifier = TokenVerifier::new(vec![key.verifying_key()]);
        let good = TokenIssuer::new(key.clone(), TTL)
            .issue_service("svc", now())
            .unwrap();
        let (_, claims, _) = parts(&good.token);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        for secret in [
            key.verifying_key().public_key_bytes().to_vec(),
            key.verifying_key().public_key_b64url().into_bytes(),
        ] {
            let forged =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert!(matches!(
                verifier.verify(&forged, now()),
                Err(AuthError::InvalidToken)
            ));
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let (issuer, verifier) = setup();
        let good = issuer.issue_service("svc", now()).unwrap();
        let (_, claims, sig) = parts(&good.token);
        let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": "k1"});
        for s in ["", sig.as_str()] {
            let forged = format!("{}.{}.{s}", enc(&header), enc(&claims));
            assert!(matches!(
                verifier.verify(&forged, now()),
                Err(AuthError::InvalidToken)
            ));
        }
        // an EdDSA header over the same claims with the signature stripped
        let (h, _, _) = parts(&good.token);
        let stripped = format!("{}.{}.", enc(&h), enc(&claims));
        assert!(matches!(
            verifier.verify(&stripped, now()),
            Err(AuthError::InvalidToken)
        ));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let (issuer, verifier) = setup();
        let good = issuer
            .issue_user(Uuid::new_v4(), "s", Some(&grant()), now())
            .unwrap();
        let (h, mut claims, sig) = parts(&good.token);
        claims["role"] = "SERVICE_DESK".into();
        let forged = format!("{}.{}.{sig}", enc(&h), enc(&claims));
        assert!(matches!(
            verifier.verify(&forged, now()),
            Err(AuthError::InvalidToken)
        ));
        // a flipped signature bit
        let mut bad = good.token.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(matches!(
            verifier.verify(&String::from_utf8(bad).unwrap(), now()),
            Err(AuthError::InvalidToken)
        ));
    }

    /// Tokens correctly signed but with claims identity never issues must still be refused.
    #[test]
    fn malformed_claims_are_refused() {
        let key = SigningKey::generate("k1");
        let verifier = TokenVerifier::new(vec![key.verifying_key()]);
        let sign = |claims: serde_json::Value| key.sign_jwt(&claims).unwrap();
        let t = now().timestamp();
        let base = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": Uuid::new_v4().to_string(), "kind": "user",
            "sid": "s1", "iat": t, "exp": t + 60, "jti": "j"
        });
        assert!(verifier.verify(&sign(base.clone()), now()).is_ok());
        let variants: Vec<(&str, serde_json::Value)> = vec![
            ("iss", "someone-else".into()),
            ("aud", "other".into()),
            ("aud", serde_json::json!(["other"])),
            ("kind", "admin".into()),
            ("sub", "not-a-uuid".into()),
            ("sid", "".into()),
            ("sid", "a b".into()),
            ("role", "SERVICE_DESK".into()),
            ("org", Uuid::new_v4().to_string().into()),
            ("exp", (t - 120).into()),
        ];
        for (field, value) in variants {
            let mut c = base.clone();
            c[field] = value.clone();
            assert!(
                verifier.verify(&sign(c), now()).is_err(),
                "{field} = {value}"
            );
        }
        for field in ["iss", "aud", "sub", "exp", "sid", "kind", "iat", "jti"] {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove(field);
            assert!(verifier.verify(&sign(c), now()).is_err(), "without {field}");
        }
        let mut bad_role = base.clone();
        bad_role["org"] = Uuid::new_v4().to_string().into();
        bad_role["role"] = "ROOT".into();
        assert!(verifier.verify(&sign(bad_role), now()).is_err());

        let service = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "kind": "service",
            "iat": t, "exp": t + 60, "jti": "j"
        });
        assert!(
            verifier
                .verify(&sign(service.clone()), now())
                .unwrap()
                .is_service()
        );
        let mut with_sid = service.clone();
        with_sid["sid"] = "s1".into();
        assert!(verifier.verify(&sign(with_sid), now()).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        let (_, verifier) = setup();
        for t in ["", "abc", "a.b.c", "..", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(matches!(
                verifier.verify(t, now()),
                Err(AuthError::InvalidToken)
            ));
        }
    }

    #[test]
    fn issue_input_checks() {
        let (issuer, _) = setup();
        assert!(issuer.issue_user(Uuid::new_v4(), "", None, now()).is_err());
        assert!(
            issuer
                .issue_user(Uuid::new_v4(), "has space", None, now())
                .is_err()
        );
        assert!(issuer.issue_service("", now()).is_err());
        let huge = TokenIssuer::new(SigningKey::generate("k"), Duration::from_secs(u64::MAX));
        assert!(matches!(
            huge.issue_service("svc", now()),
            Err(AuthError::Issue(_))
        ));
    }

    #[test]
    fn verifier_from_env_value() {
        let a = SigningKey::generate("a").verifying_key();
        let b = SigningKey::generate("b").verifying_key();
        let v = TokenVerifier::from_env_value(&format!(
            " {} , {},",
            a.to_env_value(),
            b.to_env_value()
        ))
        .unwrap();
        assert_eq!(v.keys().count(), 2);
        assert_eq!(format!("{v:?}"), r#"TokenVerifier { kids: ["a", "b"] }"#);
        assert_eq!(
            TokenVerifier::from_env_value(" , ").unwrap_err(),
            KeyError::Empty
        );
        assert_eq!(
            TokenVerifier::from_env_value(&format!("{},{}", a.to_env_value(), a.to_env_value()))
                .unwrap_err(),
            KeyError::DuplicateKid("a".into())
        );
        assert_eq!(
            TokenVerifier::from_env_value(&format!("{},b:AA", a.to_env_value())).unwrap_err(),
            KeyError::Length {
                expected: 32,
                actual: 1
            }
        );
    }

    #[test]
    fn verified_tokens_are_cached_until_exp() {
        let (issuer, verifier) = setup();
        let g = grant();
        let t = issuer
            .issue_user(Uuid::new_v4(), "s1", Some(&g), now())
            .unwrap();
        let first = verifier.verify(&t.token, now()).unwrap();
        assert_eq!(verifier.inner.verified.len(), 1);
        // A hit answers the same caller; the clone shares the cache.
        let clone = verifier.clone();
        assert_eq!(clone.verify(&t.token, now()).unwrap(), first);
        let exp = now() + TimeDelta::seconds(600);
        assert_eq!(
            verifier
                .verify(&t.token, exp - TimeDelta::seconds(1))
                .unwrap(),
            first
        );
        assert_eq!(verifier.inner.verified.len(), 1);
        // From exp on the full check decides (leeway included), and then refuses.
        assert_eq!(verifier.verify(&t.token, exp).unwrap(), first);
        assert!(matches!(
            verifier.verify(&t.token, exp + TimeDelta::seconds(31)),
            Err(AuthError::Expired)
        ));
        // Before its iat (less the leeway), the full check refuses even a token seen before.
        let t = issuer.issue_service("svc", now()).unwrap();
        assert!(verifier.verify(&t.token, now()).is_ok());
        assert!(matches!(
            verifier.verify(&t.token, now() - TimeDelta::seconds(31)),
            Err(AuthError::InvalidToken)
        ));
        // Refusals are not cached.
        let before = verifier.inner.verified.len();
        assert!(verifier.verify("a.b.c", now()).is_err());
        assert_eq!(verifier.inner.verified.len(), before);
    }

    #[test]
    fn a_cached_token_does_not_vouch_for_a_tampered_one() {
        let (issuer, verifier) = setup();
        let good = issuer
            .issue_user(Uuid::new_v4(), "s", Some(&grant()), now())
            .unwrap();
        assert!(verifier.verify(&good.token, now()).is_ok());
        let (h, mut claims, sig) = parts(&good.token);
        claims["role"] = "SERVICE_DESK".into();
        let forged = format!("{}.{}.{sig}", enc(&h), enc(&claims));
        assert!(matches!(
            verifier.verify(&forged, now()),
            Err(AuthError::InvalidToken)
        ));
    }

    #[test]
    fn a_verifier_without_the_key_ignores_what_another_cached() {
        let old = SigningKey::generate("old");
        let new = SigningKey::generate("new");
        let both = TokenVerifier::new(vec![old.verifying_key(), new.verifying_key()]);
        let t = TokenIssuer::new(old, TTL)
            .issue_service("svc", now())
            .unwrap();
        assert!(both.verify(&t.token, now()).is_ok());
        // After rotation the service builds a verifier with the new key set.
        let rotated = TokenVerifier::new(vec![new.verifying_key()]);
        assert!(matches!(
            rotated.verify(&t.token, now()),
            Err(AuthError::UnknownKey)
        ));
    }

    #[test]
    fn uncached_verification_checks_every_time() {
        let (issuer, verifier) = setup();
        let t = issuer.issue_service("svc", now()).unwrap();
        assert!(verifier.verify_uncached(&t.token, now()).is_ok());
        assert_eq!(verifier.inner.verified.len(), 0);
    }

    #[test]
    fn issued_token_debug_is_redacted() {
        let (issuer, _) = setup();
        let t = issuer.issue_service("svc", now()).unwrap();
        assert!(!format!("{t:?}").contains(&t.token));
    }
}
