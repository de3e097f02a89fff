#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cqrs_auth::{ActiveGrant, Principal, RedisSessionCheck, Role, TokenVerifier};
use cqrs_runtime::clock::{Clock, SystemClock};
use cqrs_runtime::config::ServerConfig;
use cqrs_runtime::errors::{FieldViolations, invalid_argument};
use cqrs_runtime::server::ServiceServer;
use cqrs_testkit::{
    RunningServer, TestKeys, TestRedis, assert_reason, field_violations, spawn, status_details,
    status_reason, violated_fields, with_token,
};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_prost::ProstCodec;
use uuid::Uuid;

/// A hand-written gRPC service (no .proto needed): `Get` answers who the caller is, `Fail`
/// returns an InvalidArgument with rich details.
#[derive(Clone)]
struct WhoAmI;

const SERVICE: &str = "cqrs.testkit.v1.WhoAmI";

impl NamedService for WhoAmI {
    const NAME: &'static str = SERVICE;
}

struct Get;

impl UnaryService<()> for Get {
    type Response = String;
    type Future = std::future::Ready<Result<Response<String>, Status>>;

    fn call(&mut self, request: Request<()>) -> Self::Future {
        let answer = cqrs_auth::principal(&request).map(|p| match p {
            Principal::Service { client_id } => format!("service:{client_id}"),
            Principal::User {
                account_id, active, ..
            } => format!(
                "user:{account_id}:{}",
                active.map(|a| a.role.as_str()).unwrap_or("-")
            ),
        });
        std::future::ready(answer.map(Response::new))
    }
}

struct Fail;

impl UnaryService<()> for Fail {
    type Response = String;
    type Future = std::future::Ready<Result<Response<String>, Status>>;

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let mut violations = FieldViolations::new();
        violations.add("name", "must not be empty");
        violations.add("email", "is not an e-mail address");
        std::future::ready(Err(invalid_argument(
            "cqrs.testkit",
            "BAD_THING",
            "the request is invalid",
            &violations,
        )))
    }
}

impl tower::Service<http::Request<Body>> for WhoAmI {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, ()>::default());
            let response = match req.uri().path().rsplit('/').next() {
                Some("Get") => grpc.unary(Get, req).await,
                Some("Fail") => grpc.unary(Fail, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

async fn call(channel: &Channel, method: &str, request: Request<()>) -> Result<String, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let path = format!("/{SERVICE}/{method}").parse().unwrap();
    client
        .unary(request, path, ProstCodec::<(), String>::default())
        .await
        .map(Response::into_inner)
}

async fn start(keys: &TestKeys, redis: &TestRedis) -> RunningServer {
    let config = ServerConfig::for_tests("testkit", keys.verifier.clone());
    let server = ServiceServer::new(config)
        .add_service(WhoAmI)
        .session_check(Arc::new(RedisSessionCheck::new(
            redis.conn.clone(),
            redis.namespace.clone(),
        )));
    spawn(server).await
}

async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(response.status).unwrap()
}

#[tokio::test]
async fn spawned_server_serves_and_shuts_down() {
    let keys = TestKeys::generate();
    let redis = TestRedis::new().await;
    let server = start(&keys, &redis).await;
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(server.url(), format!("http://{}", server.addr));

    assert_eq!(health(&server.channel, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&server.channel, SERVICE).await,
        ServingStatus::Serving
    );

    let addr = server.addr;
    server.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn tokens_authenticate_against_the_spawned_server() {
    let keys = TestKeys::generate();
    let redis = TestRedis::new().await;
    let server = start(&keys, &redis).await;
    let channel = &server.channel;

    let err = call(channel, "Get", Request::new(())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let token = keys.service_token("outbox-relay");
    assert_eq!(
        call(channel, "Get", with_token((), &token)).await.unwrap(),
        "service:outbox-relay"
    );

    let account = Uuid::new_v4();
    let active = ActiveGrant {
        organisation_id: Uuid::new_v4(),
        role: Role::CommissioningApprover,
    };
    let token = keys.user_token(&redis, account, Some(active)).await;
    assert_eq!(
        call(channel, "Get", with_token((), &token)).await.unwrap(),
        format!("user:{account}:COMMISSIONING_APPROVER")
    );

    // The session key is where every verifier looks, with a TTL.
    let (sid, token) = keys.user_session(&redis, account, None).await;
    let key = cqrs_auth::session_key(&redis.namespace, account, &sid);
    assert!(redis.keys().await.contains(&key));
    let mut conn = redis.conn.clone();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    assert_eq!(sid.len(), 43, "256-bit id, base64url");
    assert_eq!(
        call(channel, "Get", with_token((), &token)).await.unwrap(),
        format!("user:{account}:-")
    );
    keys.end_session(&redis, account, &sid).await;
    let err = call(channel, "Get", with_token((), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Another key pair's tokens are refused.
    let stranger = TestKeys::generate().service_token("outbox-relay");
    let err = call(channel, "Get", with_token((), &stranger))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    server.shutdown().await;
}

#[test]
fn verify_env_value_accepts_the_keys_tokens() {
    let keys = TestKeys::generate();
    let verifier = TokenVerifier::from_env_value(&keys.verify_env_value()).unwrap();
    let principal = verifier
        .verify(&keys.service_token("svc"), SystemClock.now())
        .unwrap();
    assert_eq!(
        principal,
        Principal::Service {
            client_id: "svc".into()
        }
    );
}

#[tokio::test]
async fn error_details_survive_the_wire() {
    let keys = TestKeys::generate();
    let redis = TestRedis::new().await;
    let server = start(&keys, &redis).await;
    let token = keys.service_token("tester");

    let status = call(&server.channel, "Fail", with_token((), &token))
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "BAD_THING");
    assert_eq!(status_reason(&status).as_deref(), Some("BAD_THING"));
    assert_eq!(
        field_violations(&status),
        [
            ("name".to_owned(), "must not be empty".to_owned()),
            ("email".to_owned(), "is not an e-mail address".to_owned()),
        ]
    );
    assert_eq!(violated_fields(&status), ["name", "email"]);
    let details = status_details(&status);
    assert_eq!(details.error_info().unwrap().domain, "cqrs.testkit");

    let plain = Status::not_found("nothing");
    assert_eq!(status_reason(&plain), None);
    assert!(field_violations(&plain).is_empty());
}

#[test]
#[should_panic(expected = "expected NotFound with reason BAD_THING")]
fn assert_reason_names_the_mismatch() {
    let mut violations = FieldViolations::new();
    violations.add("x", "y");
    let status = invalid_argument("cqrs.testkit", "BAD_THING", "bad", &violations);
    assert_reason(&status, Code::NotFound, "BAD_THING");
}
