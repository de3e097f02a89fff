//! Web sessions: the browser holds one opaque cookie; everything else — the CSRF token, a
//! mailed link's token moved out of the URL, and once signed in the identity session and
//! access tokens — stays in Redis under the SHA-256 of the cookie, so reading Redis does not
//! yield a working cookie.
//!
//! The [`layer`] loads the session before a handler runs (renewing its idle expiry in the same
//! round trip) and, after it, saves what changed, or deletes an ended session and clears the
//! cookie. A visitor who
//! never reaches a form gets no session at all. Signing in rotates the cookie (a cookie set
//! before sign-in is worth nothing after it).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cqrs_redis::RedisConnection;
use http::HeaderValue;
use http::header::{COOKIE, SET_COOKIE};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pages::Failure;
use crate::state::AppState;

/// What the gateway remembers about one browser.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WebSession {
    /// Synchronizer token every form carries.
    pub csrf: String,
    /// A mailed link's token, moved here from the URL of its page.
    pub link: Option<PendingLink>,
    pub user: Option<SignedInUser>,
    /// A one-time message for the next page (e.g. "Your password has been changed").
    pub notice: Option<String>,
    /// A sign-in whose password was right, waiting for the authenticator code.
    #[serde(default)]
    pub pending_sign_in: Option<PendingSignIn>,
    /// An authenticator app being added: its secret, shown until the first code confirms it.
    #[serde(default)]
    pub pending_enrolment: Option<PendingEnrolment>,
    /// The `state` of a single sign-on under way at a provider: the callback must bring back
    /// this one, so a sign-in started in another browser cannot be completed in this one.
    #[serde(default)]
    pub pending_sso: Option<String>,
}

/// The secret of an authenticator app being added, as identity gave it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingEnrolment {
    pub otpauth_uri: String,
    pub secret: String,
}

/// The second step of a sign-in: identity's challenge (a credential, kept server side).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub challenge_token: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    Registration,
    Invitation,
    PasswordReset,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingLink {
    pub kind: LinkKind,
    pub token: String,
}

/// A signed-in person: the identity session and the current access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedInUser {
    pub session_token: String,
    pub access_token: String,
    /// Unix seconds; the access token is refreshed a little before.
    pub access_expires: i64,
    pub account_id: String,
    pub user_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub grants: Vec<GrantChoice>,
    /// Index into `grants` of the selected one.
    pub active: Option<usize>,
    /// A role the person holds needs an authenticator app and they have none: every page
    /// leads to adding one until it is done.
    #[serde(default)]
    pub enrolment_required: bool,
}

impl SignedInUser {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }

    pub fn active_grant(&self) -> Option<&GrantChoice> {
        self.active.and_then(|i| self.grants.get(i))
    }
}

/// One grant the person may act through, as the role switcher shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantChoice {
    pub organisation_id: String,
    pub organisation_name: String,
    pub ods_code: String,
    /// `cqrs.common.v1.Role` number.
    pub role: i32,
}

/// The Redis side of web sessions.
#[derive(Clone)]
pub struct SessionStore {
    redis: RedisConnection,
    namespace: String,
    idle: Duration,
}

impl SessionStore {
    pub fn new(redis: RedisConnection, namespace: String, idle: Duration) -> Self {
        SessionStore {
            redis,
            namespace,
            idle,
        }
    }

    fn key(&self, cookie: &str) -> String {
        let digest = Sha256::digest(cookie.as_bytes());
        format!(
            "{}gateway:web:{}",
            self.namespace,
            URL_SAFE_NO_PAD.encode(digest)
        )
    }

    /// The session, its idle expiry renewed in the same round trip (GETEX).
    async fn load(&self, cookie: &str) -> Result<Option<WebSession>, redis::RedisError> {
        let mut conn = self.redis.clone();
        let raw: Option<String> = conn
            .get_ex(self.key(cookie), redis::Expiry::EX(self.idle_secs()))
            .await?;
        // A record that no longer parses (an older gateway's) is treated as no session.
        Ok(raw.and_then(|raw| serde_json::from_str(&raw).ok()))
    }

    fn idle_secs(&self) -> u64 {
        self.idle.as_secs().max(1)
    }

    async fn save(&self, cookie: &str, session: &WebSession) -> Result<(), redis::RedisError> {
        let raw = serde_json::to_string(session).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "serialise", e.to_string()))
        })?;
        let mut conn = self.redis.clone();
        conn.set_ex(self.key(cookie), raw, self.idle_secs()).await
    }

    async fn delete(&self, cookie: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.clone();
        let _: usize = conn.del(self.key(cookie)).await?;
        Ok(())
    }
}

/// A fresh random secret (32 bytes, URL-safe base64).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

#[derive(Debug, Default)]
struct Slot {
    session: WebSession,
    dirty: bool,
    rotate: bool,
    ended: bool,
}

/// The request's session, shared between the [`layer`] and the handler.
#[derive(Clone, Debug, Default)]
pub struct Session(Arc<Mutex<Slot>>);

impl Session {
    fn with<T>(&self, f: impl FnOnce(&mut Slot) -> T) -> T {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut slot)
    }

    /// A copy of the session as it is now.
    pub fn get(&self) -> WebSession {
        self.with(|slot| slot.session.clone())
    }

    /// Changes the session; it is saved after the handler.
    pub fn update<T>(&self, f: impl FnOnce(&mut WebSession) -> T) -> T {
        self.with(|slot| {
            slot.dirty = true;
            f(&mut slot.session)
        })
    }

    /// The CSRF token, made on first use.
    pub fn csrf(&self) -> String {
        self.with(|slot| {
            if slot.session.csrf.is_empty() {
                slot.session.csrf = random_token();
                slot.dirty = true;
            }
            slot.session.csrf.clone()
        })
    }

    /// Takes the one-time notice, if any.
    pub fn take_notice(&self) -> Option<String> {
        self.with(|slot| {
            let notice = slot.session.notice.take();
            slot.dirty |= notice.is_some();
            notice
        })
    }

    /// Signs `user` in: a new cookie and a new CSRF token, the pending link dropped.
    pub fn sign_in(&self, user: SignedInUser) {
        self.with(|slot| {
            slot.session = WebSession {
                csrf: random_token(),
                user: Some(user),
                ..WebSession::default()
            };
            slot.dirty = true;
            slot.rotate = true;
        });
    }

    /// Ends the session: the record is deleted and the cookie cleared.
    pub fn end(&self) {
        self.with(|slot| slot.ended = true);
    }
}

/// The cookie's name: `__Host-` bound to this origin when served over https.
pub fn cookie_name(https: bool) -> &'static str {
    if https { "__Host-cqrs" } else { "cqrs" }
}

fn read_cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        // Only values this gateway could have made.
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn set_cookie(state: &AppState, value: &str, max_age: Option<Duration>) -> Option<HeaderValue> {
    let https = state.config.public_url.https;
    // `__Host-` requires Path=/ and Secure; without https the path is the pages' prefix.
    let path = if https {
        "/"
    } else {
        state.config.public_url.prefix.as_str()
    };
    let mut cookie = format!(
        "{}={value}; Path={path}; HttpOnly; SameSite=Lax",
        cookie_name(https)
    );
    if https {
        cookie.push_str("; Secure");
    }
    match max_age {
        Some(age) => cookie.push_str(&format!("; Max-Age={}", age.as_secs())),
        None => cookie.push_str("; Max-Age=0"),
    }
    HeaderValue::from_str(&cookie).ok()
}

/// Loads the session for the handler and stores what it changed afterwards.
pub async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let store = &state.sessions;
    let name = cookie_name(state.config.public_url.https);
    let cookie = read_cookie(&request, name);
    let loaded = match &cookie {
        Some(cookie) => match store.load(cookie).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!(error = %e, "web session store unreachable");
                return Failure::Unavailable.into_response();
            }
        },
        None => None,
    };
    let known = loaded.is_some();
    let session = Session::default();
    if let Some(loaded) = loaded {
        session.with(|slot| slot.session = loaded);
    }
    request.extensions_mut().insert(session.clone());
    let mut response = next.run(request).await;

    let slot = std::mem::take(&mut *session.0.lock().unwrap_or_else(PoisonError::into_inner));
    let result = if slot.ended {
        let header = set_cookie(&state, "", None);
        if let Some(header) = header {
            response.headers_mut().append(SET_COOKIE, header);
        }
        match &cookie {
            Some(cookie) if known => store.delete(cookie).await,
            _ => Ok(()),
        }
    } else if slot.dirty {
        let id = match &cookie {
            Some(cookie) if known && !slot.rotate => cookie.clone(),
            _ => random_token(),
        };
        if slot.rotate
            && let Some(old) = cookie.as_ref().filter(|_| known)
            && let Err(e) = store.delete(old).await
        {
            tracing::warn!(error = %e, "old web session not deleted");
        }
        let saved = store.save(&id, &slot.session).await;
        if saved.is_ok()
            && Some(&id) != cookie.as_ref()
            && let Some(header) = set_cookie(&state, &id, Some(state.config.session_idle))
        {
            response.headers_mut().append(SET_COOKIE, header);
        }
        saved
    } else {
        // Loading renewed the idle expiry already.
        Ok(())
    };
    match result {
        Ok(()) => response,
        Err(e) => {
            // What the handler did is done, but the browser's session could not be kept: say
            // so rather than show a page whose next step will fail.
            tracing::warn!(error = %e, "web session not saved");
            Failure::Unavailable.into_response()
        }
    }
}
