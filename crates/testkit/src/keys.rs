//! Signing keys and ready-made access tokens for tests.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cqrs_auth::{ActiveGrant, SigningKey, TokenIssuer, TokenVerifier, session_key};
use cqrs_runtime::clock::{Clock, SystemClock};
use redis::AsyncCommands;
use uuid::Uuid;

use crate::TestRedis;

/// Lifetime of tokens from [`TestKeys`]; long enough for any test, short like production's.
const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Lifetime of the session records [`TestKeys::user_token`] writes.
const SESSION_TTL_SECS: u64 = 60 * 60;

/// A fresh Ed25519 key pair with an issuer and a verifier for it.
#[derive(Clone, Debug)]
pub struct TestKeys {
    pub signing: SigningKey,
    pub verifier: TokenVerifier,
    pub issuer: TokenIssuer,
}

impl TestKeys {
    pub fn generate() -> TestKeys {
        let signing = SigningKey::generate(&format!("test-{}", Uuid::new_v4().simple()));
        let verifier = TokenVerifier::new(vec![signing.verifying_key()]);
        let issuer = TokenIssuer::new(signing.clone(), TOKEN_TTL);
        TestKeys {
            signing,
            verifier,
            issuer,
        }
    }

    /// The value for `CQRS_TOKEN_VERIFY_KEYS` that accepts these keys' tokens.
    pub fn verify_env_value(&self) -> String {
        self.signing.verifying_key().to_env_value()
    }

    /// A service token for `client_id`.
    pub fn service_token(&self, client_id: &str) -> String {
        self.issuer
            .issue_service(client_id, SystemClock.now())
            .unwrap_or_else(|e| panic!("TestKeys: cannot issue a service token: {e}"))
            .token
    }

    /// A user token for `account_id`, acting as `active` if given, backed by a new live session
    /// [`cqrs_auth::session_key`] in `redis` (TTL 1 h; its value is the account id —
    /// verifiers only check that the key exists).
    pub async fn user_token(
        &self,
        redis: &TestRedis,
        account_id: Uuid,
        active: Option<ActiveGrant>,
    ) -> String {
        self.user_session(redis, account_id, active).await.1
    }

    /// Like [`TestKeys::user_token`], also returning the session id, so a test can end the
    /// session (see [`TestKeys::end_session`]).
    pub async fn user_session(
        &self,
        redis: &TestRedis,
        account_id: Uuid,
        active: Option<ActiveGrant>,
    ) -> (String, String) {
        let sid = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let key = session_key(&redis.namespace, account_id, &sid);
        let mut conn = redis.conn.clone();
        conn.set_ex::<_, _, ()>(&key, account_id.to_string(), SESSION_TTL_SECS)
            .await
            .unwrap_or_else(|e| panic!("TestKeys: cannot write session {key}: {e}"));
        let token = self
            .issuer
            .issue_user(account_id, &sid, active.as_ref(), SystemClock.now())
            .unwrap_or_else(|e| panic!("TestKeys: cannot issue a user token: {e}"))
            .token;
        (sid, token)
    }

    /// Deletes a session written by [`TestKeys::user_session`] and announces it, as identity
    /// does; its tokens stop working.
    pub async fn end_session(&self, redis: &TestRedis, account_id: Uuid, session_id: &str) {
        let key = session_key(&redis.namespace, account_id, session_id);
        let mut conn = redis.conn.clone();
        conn.del::<_, usize>(&key)
            .await
            .map(drop)
            .unwrap_or_else(|e| panic!("TestKeys: cannot delete session {key}: {e}"));
        cqrs_auth::announce_ended(&mut conn, &redis.namespace, &[key])
            .await
            .unwrap_or_else(|e| panic!("TestKeys: cannot announce the end: {e}"));
    }
}
