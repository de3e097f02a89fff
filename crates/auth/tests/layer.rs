//! The auth layer end to end over a tiny tower service, with sessions in a real Redis
//! (REDIS_URL, default redis://127.0.0.1:6379) under a unique namespace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use cqrs_auth::{
    ActiveGrant, AuthError, AuthLayer, Principal, RedisSessionCheck, Role, SessionCheck,
    SigningKey, TokenIssuer, TokenVerifier, session_key,
};
use cqrs_rules::clock::{Clock, SystemClock};
use futures::future::BoxFuture;
use redis::AsyncCommands;
use tonic::body::Body;
use tower::{Layer, ServiceExt};
use uuid::Uuid;

const PROTECTED: &str = "/cqrs.identity.v1.IdentityService/SignOut";
const PUBLIC: &str = "/cqrs.identity.v1.IdentityService/SignIn";

/// Sessions held in memory; `down` makes every check fail like an unreachable store.
#[derive(Default)]
struct MemSessions {
    live: Mutex<HashSet<String>>,
    down: bool,
}

impl SessionCheck for MemSessions {
    fn is_live(&self, _: Uuid, session_id: &str) -> BoxFuture<'_, Result<bool, AuthError>> {
        let result = if self.down {
            Err(AuthError::Unavailable("down".into()))
        } else {
            Ok(self.live.lock().unwrap().contains(session_id))
        };
        Box::pin(async move { result })
    }
}

struct Keys {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
}

fn keys() -> Keys {
    let key = SigningKey::generate("k1");
    Keys {
        verifier: TokenVerifier::new(vec![key.verifying_key()]),
        issuer: TokenIssuer::new(key, Duration::from_secs(300)),
    }
}

/// What the inner service saw: `Some(principal extension)` per call.
type Seen = Arc<Mutex<Vec<Option<Principal>>>>;

/// Calls the layered echo service once and returns (http status, grpc-status, grpc-message).
async fn call(
    layer: &AuthLayer,
    path: &str,
    auth: Option<&str>,
    planted: Option<Principal>,
    seen: &Seen,
) -> (u16, String, Option<String>) {
    let seen2 = seen.clone();
    let inner = tower::service_fn(move |req: http::Request<Body>| {
        let seen = seen2.clone();
        async move {
            seen.lock()
                .unwrap()
                .push(req.extensions().get::<Principal>().cloned());
            let mut resp = http::Response::new(Body::empty());
            resp.headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("0"));
            Ok::<_, Infallible>(resp)
        }
    });
    let svc = layer.layer(inner);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let mut req = req.body(Body::empty()).unwrap();
    if let Some(p) = planted {
        req.extensions_mut().insert(p);
    }
    let resp = svc.oneshot(req).await.unwrap();
    let grpc_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let message = tonic::Status::from_header_map(resp.headers()).map(|s| s.message().to_owned());
    (resp.status().as_u16(), grpc_status, message)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn no_or_bad_credentials_are_unauthenticated() {
    let k = keys();
    let layer = AuthLayer::new(
        k.verifier.clone(),
        Arc::new(MemSessions::default()),
        Arc::new(SystemClock),
    );
    let seen = Seen::default();
    let expired = k
        .issuer
        .issue_service("svc", SystemClock.now() - TimeDelta::hours(1))
        .unwrap();
    let other = TokenIssuer::new(SigningKey::generate("k1"), Duration::from_secs(60))
        .issue_service("svc", SystemClock.now())
        .unwrap();
    let cases = [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer not.a.jwt".to_owned()),
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some(bearer(&expired.token)),
        Some(bearer(&other.token)),
    ];
    for auth in cases {
        let (http_status, grpc, msg) = call(&layer, PROTECTED, auth.as_deref(), None, &seen).await;
        assert_eq!(http_status, 200, "{auth:?}");
        assert_eq!(grpc, "16", "{auth:?}");
        assert_eq!(msg.as_deref(), Some("missing or invalid credentials"));
    }
    assert!(seen.lock().unwrap().is_empty(), "inner service was called");
}

#[tokio::test]
async fn service_token_passes_without_a_session() {
    let k = keys();
    let sessions = Arc::new(MemSessions {
        down: true,
        ..Default::default()
    });
    let layer = AuthLayer::new(k.verifier.clone(), sessions, Arc::new(SystemClock));
    let seen = Seen::default();
    let t = k
        .issuer
        .issue_service("outbox-relay", SystemClock.now())
        .unwrap();
    let (_, grpc, _) = call(&layer, PROTECTED, Some(&bearer(&t.token)), None, &seen).await;
    assert_eq!(grpc, "0");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Some(Principal::Service {
            client_id: "outbox-relay".into()
        })]
    );
}

#[tokio::test]
async fn user_token_needs_a_live_session_in_memory() {
    let k = keys();
    let sessions = Arc::new(MemSessions::default());
    sessions.live.lock().unwrap().insert("live-1".into());
    let layer = AuthLayer::new(k.verifier.clone(), sessions, Arc::new(SystemClock));
    let seen = Seen::default();
    let account = Uuid::new_v4();
    let live = k
        .issuer
        .issue_user(account, "live-1", None, SystemClock.now())
        .unwrap();
    let dead = k
        .issuer
        .issue_user(account, "dead-1", None, SystemClock.now())
        .unwrap();
    assert_eq!(
        call(&layer, PROTECTED, Some(&bearer(&live.token)), None, &seen)
            .await
            .1,
        "0"
    );
    assert_eq!(
        call(&layer, PROTECTED, Some(&bearer(&dead.token)), None, &seen)
            .await
            .1,
        "16"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn session_store_down_is_unavailable() {
    let k = keys();
    let layer = AuthLayer::new(
        k.verifier.clone(),
        Arc::new(MemSessions {
            down: true,
            ..Default::default()
        }),
        Arc::new(SystemClock),
    );
    let seen = Seen::default();
    let t = k
        .issuer
        .issue_user(Uuid::new_v4(), "s", None, SystemClock.now())
        .unwrap();
    let (http_status, grpc, msg) =
        call(&layer, PROTECTED, Some(&bearer(&t.token)), None, &seen).await;
    assert_eq!((http_status, grpc.as_str()), (200, "14"));
    assert_eq!(
        msg.as_deref(),
        Some("authentication temporarily unavailable")
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn public_paths_pass_without_a_token_and_never_carry_a_principal() {
    let k = keys();
    let layer = AuthLayer::new(
        k.verifier.clone(),
        Arc::new(MemSessions::default()),
        Arc::new(SystemClock),
    );
    let seen = Seen::default();
    let planted = Principal::Service {
        client_id: "forged".into(),
    };
    for path in [
        PUBLIC,
        "/cqrs.access.v1.AccessService/SubmitRegistration",
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ] {
        let (_, grpc, _) = call(&layer, path, None, Some(planted.clone()), &seen).await;
        assert_eq!(grpc, "0", "{path}");
    }
    // a garbage token on a public path is ignored, not refused
    let (_, grpc, _) = call(&layer, PUBLIC, Some("Bearer junk"), None, &seen).await;
    assert_eq!(grpc, "0");
    assert!(seen.lock().unwrap().iter().all(Option::is_none));
    // and a planted principal does not survive on a protected path either
    let (_, grpc, _) = call(&layer, PROTECTED, None, Some(planted), &seen).await;
    assert_eq!(grpc, "16");
}

/// A Redis namespace that deletes its keys when done.
struct RedisNs {
    conn: cqrs_redis::RedisConnection,
    namespace: String,
}

impl RedisNs {
    async fn new() -> Self {
        let url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let conn = cqrs_redis::RedisConnection::open_url(&url).unwrap();
        Self {
            conn,
            namespace: format!("t-{}:", Uuid::new_v4()),
        }
    }

    async fn cleanup(mut self) {
        let keys: Vec<String> = self
            .conn
            .keys(format!("{}*", self.namespace))
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = self.conn.del(keys).await.unwrap();
        }
    }
}

#[tokio::test]
async fn redis_session_check_and_layer() {
    let mut ns = RedisNs::new().await;
    let check = RedisSessionCheck::new(ns.conn.clone(), ns.namespace.clone());
    let account = Uuid::new_v4();
    let _: () = ns
        .conn
        .set_ex(session_key(&ns.namespace, account, "live-sid"), "1", 60)
        .await
        .unwrap();
    assert!(check.is_live(account, "live-sid").await.unwrap());
    assert!(!check.is_live(account, "dead-sid").await.unwrap());
    // a session is found only under its own account
    assert!(!check.is_live(Uuid::new_v4(), "live-sid").await.unwrap());

    let k = keys();
    let layer = AuthLayer::new(k.verifier.clone(), Arc::new(check), Arc::new(SystemClock));
    let seen = Seen::default();
    let grant = ActiveGrant {
        organisation_id: Uuid::new_v4(),
        role: Role::PracticeManager,
    };
    let live = k
        .issuer
        .issue_user(account, "live-sid", Some(&grant), SystemClock.now())
        .unwrap();
    let dead = k
        .issuer
        .issue_user(account, "dead-sid", Some(&grant), SystemClock.now())
        .unwrap();

    assert_eq!(
        call(&layer, PROTECTED, Some(&bearer(&live.token)), None, &seen)
            .await
            .1,
        "0"
    );
    assert_eq!(
        call(&layer, PROTECTED, Some(&bearer(&dead.token)), None, &seen)
            .await
            .1,
        "16"
    );
    // ending the session ends the token at once
    let _: () = ns
        .conn
        .del(session_key(&ns.namespace, account, "live-sid"))
        .await
        .unwrap();
    assert_eq!(
        call(&layer, PROTECTED, Some(&bearer(&live.token)), None, &seen)
            .await
            .1,
        "16"
    );

    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Some(Principal::User {
            account_id: account,
            session_id: "live-sid".into(),
            active: Some(grant),
            proof: cqrs_auth::SignInProof {
                methods: vec!["pwd".into()],
                second_factor: None,
                display_name: String::new(),
            },
        })]
    );
    ns.cleanup().await;
}

/// Step-up (SECURITY: administrative actions need a recent second-factor check): decided from
/// the token alone, only for the administrative RPCs and only for a person with a second
/// factor whose last check is older than its window.
#[tokio::test]
async fn administrative_rpcs_need_a_recent_second_factor_check() {
    let k = keys();
    let sessions = MemSessions::default();
    sessions.live.lock().unwrap().insert("sid".into());
    let layer = AuthLayer::new(
        k.verifier.clone(),
        Arc::new(sessions),
        Arc::new(SystemClock),
    );
    let seen = Seen::default();
    let now = SystemClock.now();
    let account = Uuid::new_v4();
    let token = |second_factor: Option<cqrs_auth::SecondFactorCheck>| {
        let proof = cqrs_auth::SignInProof {
            methods: vec!["pwd".into(), "otp".into()],
            second_factor,
            display_name: String::new(),
        };
        let issued = k
            .issuer
            .issue_user_with(account, "sid", None, &proof, now)
            .unwrap();
        bearer(&issued.token)
    };
    let stale = token(Some(cqrs_auth::SecondFactorCheck {
        checked_at: now.timestamp() - 1_000,
        fresh_until: now.timestamp() - 100,
    }));
    let fresh = token(Some(cqrs_auth::SecondFactorCheck {
        checked_at: now.timestamp() - 10,
        fresh_until: now.timestamp() + 600,
    }));
    let password_only = bearer(
        &k.issuer
            .issue_user(account, "sid", None, now)
            .unwrap()
            .token,
    );
    let unlock = "/cqrs.identity.v1.IdentityService/UnlockAccount";
    assert!(cqrs_auth::STEP_UP_METHODS.contains(&unlock));

    let (_, grpc, msg) = call(&layer, unlock, Some(&stale), None, &seen).await;
    assert_eq!(grpc, "7", "PERMISSION_DENIED");
    assert!(msg.unwrap().contains("authenticator"));
    assert!(seen.lock().unwrap().is_empty(), "inner service was called");
    for (auth, path) in [
        (&fresh, unlock),
        (&password_only, unlock),
        (&stale, PROTECTED),
    ] {
        let (_, grpc, _) = call(&layer, path, Some(auth), None, &seen).await;
        assert_eq!(grpc, "0", "{path}");
    }
    let principal = seen.lock().unwrap()[0].clone().unwrap();
    assert_eq!(
        principal.proof().unwrap().methods,
        vec!["pwd".to_owned(), "otp".to_owned()]
    );
}
