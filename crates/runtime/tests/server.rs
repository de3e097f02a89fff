//! The server stack over real sockets: health, reflection, auth, request ids, gRPC-Web/CORS,
//! load shedding, deadlines and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use cqrs_auth::{Principal, SigningKey, TokenVerifier};
use cqrs_proto::testing::v1::echo_service_server::EchoServiceServer;
use cqrs_runtime::config::ServerConfig;
use cqrs_runtime::health::ReadinessFlag;
use cqrs_runtime::server::ServiceServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

#[tokio::test]
async fn health_follows_readiness() {
    let h = Harness::start(|_| {}, false).await;
    // First poll ran before serving: SERVING immediately.
    assert_eq!(
        health_of(&h.channel, "").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health_of(&h.channel, ECHO).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health_of(&h.channel, "no.such.Service")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    h.flag.set(false);
    let took = wait_for_health(&h.channel, "", ServingStatus::NotServing).await;
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(
        health_of(&h.channel, ECHO).await.unwrap(),
        ServingStatus::NotServing
    );

    h.flag.set(true);
    let took = wait_for_health(&h.channel, ECHO, ServingStatus::Serving).await;
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(
        health_of(&h.channel, "").await.unwrap(),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn not_ready_at_start_is_not_serving_at_once() {
    let key = SigningKey::generate("k");
    let config = ServerConfig::for_tests("echo", TokenVerifier::new(vec![key.verifying_key()]));
    let server = ServiceServer::new(config)
        .add_service(EchoServiceServer::new(TestEcho::default()))
        .readiness(ReadinessFlag::new("down", false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.serve_with(listener, async {
        let _ = rx.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        health_of(&channel, "").await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(
        health_of(&channel, ECHO).await.unwrap(),
        ServingStatus::NotServing
    );
    tx.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn reflection_lists_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let h = Harness::start(|_| {}, false).await;
    let mut client = ServerReflectionClient::new(h.channel.clone());
    // Clients that list methods ask for the file of every listed service, the reflection
    // services included, so each listed name must resolve.
    let listed = [
        ECHO,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let mut requests = vec![ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }];
    requests.extend(listed.iter().map(|name| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol((*name).into())),
    }));
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let first = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected {first:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ECHO,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );

    for name in listed {
        let answer = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
            panic!("no descriptor for {name}: {answer:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn auth_is_enforced() {
    let h = Harness::start(|_| {}, false).await;
    let mut client = h.client();

    let err = client.echo(echo("d1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), cqrs_auth::UNAUTHENTICATED_MESSAGE);

    let err = client
        .echo(authed(echo("d1"), "not-a-jwt"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // No session check configured: user tokens fail closed.
    let err = client
        .echo(authed(echo("d1"), &h.user_token()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Service tokens need no session.
    let resp = client
        .echo(authed(echo("d1"), &h.service_token()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.message, "d1");
    let seen = h.svc.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "refused calls must not reach the handler");
    match &seen[0].principal {
        Some(Principal::Service { client_id }) => assert_eq!(client_id, "test-client"),
        other => panic!("unexpected principal {other:?}"),
    }
}

#[tokio::test]
async fn user_tokens_work_with_a_session_check() {
    let h = Harness::start(|_| {}, true).await;
    let resp = h
        .client()
        .echo(authed(echo("d2"), &h.user_token()))
        .await
        .unwrap();
    assert_eq!(resp.into_inner().message, "d2");
    let seen = h.svc.seen.lock().unwrap().clone();
    assert!(matches!(seen[0].principal, Some(Principal::User { .. })));
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let h = Harness::start(|_| {}, false).await;
    let mut client = h.client();

    let mut req = authed(echo("d1"), &h.service_token());
    req.metadata_mut()
        .insert("x-request-id", "req-abc-123".parse().unwrap());
    let resp = client.echo(req).await.unwrap();
    assert_eq!(
        resp.metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        "req-abc-123"
    );
    let seen = h.svc.seen.lock().unwrap().clone();
    assert_eq!(seen[0].request_id.as_deref(), Some("req-abc-123"));
    let left = seen[0].deadline_left.unwrap();
    assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(25));

    // None given (or an unusable one): a uuid is generated, also on refused calls.
    let mut req = Request::new(echo("d1"));
    req.metadata_mut()
        .insert("x-request-id", "has spaces {}".parse().unwrap());
    let err = client.echo(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let id = err
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    uuid::Uuid::parse_str(id).unwrap();

    // A caller's grpc-timeout shorter than the server's bounds the deadline handlers see.
    let mut req = authed(echo("d1"), &h.service_token());
    req.set_timeout(Duration::from_secs(2));
    client.echo(req).await.unwrap();
    let seen = h.svc.seen.lock().unwrap().clone();
    assert!(seen[1].deadline_left.unwrap() <= Duration::from_secs(2));
}

#[tokio::test]
async fn internal_errors_keep_only_a_correlation_id() {
    let h = Harness::start(|_| {}, false).await;
    let err = h
        .client()
        .echo(authed(echo("fail"), &h.service_token()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(!err.message().contains("SELECT"));
    let details = err.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(info.reason, "INTERNAL");
    let id = &info.metadata["correlation_id"];
    assert_eq!(
        err.message(),
        format!("internal error; correlation id {id}")
    );
}

async fn http1_exchange(
    addr: SocketAddr,
    request: &[u8],
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if header(&headers, "transfer-encoding").as_deref() == Some("chunked") {
        body = dechunk(&body);
    }
    (status_line, headers, body)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[tokio::test]
async fn grpc_web_over_http1_with_cors() {
    let h = Harness::start(
        |c| c.cors_allowed_origins = vec!["https://portal.example.nhs.uk".into()],
        false,
    )
    .await;

    // An empty HealthCheckRequest in one uncompressed gRPC frame.
    let frame = [0u8, 0, 0, 0, 0];
    let mut request = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\n\
         Host: {}\r\n\
         Content-Type: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\n\
         Origin: https://portal.example.nhs.uk\r\n\
         X-Request-Id: web-req-1\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        h.addr,
        frame.len()
    )
    .into_bytes();
    request.extend_from_slice(&frame);
    let (status, headers, body) = http1_exchange(h.addr, &request).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        header(&headers, "content-type").as_deref(),
        Some("application/grpc-web+proto")
    );
    assert_eq!(
        header(&headers, "x-request-id").as_deref(),
        Some("web-req-1")
    );
    assert_eq!(
        header(&headers, "access-control-allow-origin").as_deref(),
        Some("https://portal.example.nhs.uk")
    );
    let exposed = header(&headers, "access-control-expose-headers").unwrap();
    for h in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
    ] {
        assert!(exposed.contains(h), "{exposed}");
    }
    // Data frame: HealthCheckResponse { status: SERVING } = 08 01; then a trailers frame.
    assert_eq!(&body[..7], &[0, 0, 0, 0, 2, 0x08, 0x01]);
    assert_eq!(body[7], 0x80);
    let trailers = String::from_utf8_lossy(&body[12..]).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // Preflight from the allowed origin.
    let preflight = format!(
        "OPTIONS {ECHO_PATH} HTTP/1.1\r\n\
         Host: {}\r\n\
         Origin: https://portal.example.nhs.uk\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization,content-type,x-grpc-web,x-request-id\r\n\
         Connection: close\r\n\r\n",
        h.addr
    );
    let (status, headers, _) = http1_exchange(h.addr, preflight.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        header(&headers, "access-control-allow-origin").as_deref(),
        Some("https://portal.example.nhs.uk")
    );
    let allowed = header(&headers, "access-control-allow-headers").unwrap();
    for h in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "x-request-id",
    ] {
        assert!(allowed.contains(h), "{allowed}");
    }

    // Another origin gets no CORS grant.
    let other = preflight.replace("https://portal.example.nhs.uk", "https://evil.example");
    let (_, headers, _) = http1_exchange(h.addr, other.as_bytes()).await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // gRPC-Web to a protected method without a token: Unauthenticated in the headers.
    let mut request = format!(
        "POST {ECHO_PATH} HTTP/1.1\r\n\
         Host: {}\r\n\
         Content-Type: application/grpc-web+proto\r\n\
         Content-Length: 5\r\n\
         Connection: close\r\n\r\n",
        h.addr
    )
    .into_bytes();
    request.extend_from_slice(&frame);
    let (status, headers, _) = http1_exchange(h.addr, &request).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(header(&headers, "grpc-status").as_deref(), Some("16"));
}

#[tokio::test]
async fn load_is_shed_with_resource_exhausted() {
    let h = Harness::start(|c| c.concurrency_limit = 1, false).await;
    let token = h.service_token();
    let mut slow_client = h.client();
    let slow_req = authed(echo("slow"), &token);
    let slow = tokio::spawn(async move { slow_client.echo(slow_req).await });
    wait_in_flight(&h.svc, 1).await;

    let err = h
        .client()
        .echo(authed(echo("d1"), &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let details = err.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "OVERLOADED");
    assert!(err.metadata().get("x-request-id").is_some());

    // Health checks are not shed.
    assert_eq!(
        health_of(&h.channel, "").await.unwrap(),
        ServingStatus::Serving
    );

    slow.await.unwrap().unwrap();
    h.client().echo(authed(echo("d1"), &token)).await.unwrap();
}

/// Each connection hears its limits in the server's SETTINGS: hyper under tonic would
/// otherwise allow any number of calls at once on one connection.
#[tokio::test]
async fn connections_are_told_their_stream_limit() {
    let h = Harness::start(|_| {}, false).await;
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (_send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Before the server's SETTINGS arrive the client assumes no limit.
    while connection.max_concurrent_send_streams()
        != cqrs_runtime::server::MAX_STREAMS_PER_CONNECTION as usize
    {
        assert!(
            Instant::now() < deadline,
            "told {}",
            connection.max_concurrent_send_streams()
        );
        tokio::select! {
            result = &mut connection => panic!("connection ended: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// At most `CQRS_MAX_CONNECTIONS` connections are served at once: the next one waits in the
/// listen queue, unanswered, and is served as soon as another closes.
#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let h = Harness::start(|c| c.max_connections = 2, false).await;
    let check = |channel: &tonic::transport::Channel| {
        let mut client = HealthClient::new(channel.clone());
        async move {
            tokio::time::timeout(
                Duration::from_millis(500),
                client.check(HealthCheckRequest::default()),
            )
            .await
            .map(|answer| answer.unwrap().into_inner().status())
        }
    };
    let lazy = || {
        tonic::transport::Endpoint::from_shared(format!("http://{}", h.addr))
            .unwrap()
            .connect_lazy()
    };
    assert_eq!(check(&h.channel).await, Ok(ServingStatus::Serving));
    let second = lazy();
    assert_eq!(check(&second).await, Ok(ServingStatus::Serving));
    let third = lazy();
    assert!(
        check(&third).await.is_err(),
        "a third connection was served"
    );
    // The first two are still served meanwhile.
    assert_eq!(check(&h.channel).await, Ok(ServingStatus::Serving));

    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&third).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the waiting connection was never served"
        );
    }
}

#[tokio::test]
async fn request_timeout_bounds_rpcs() {
    let h = Harness::start(|c| c.request_timeout = Duration::from_millis(300), false).await;
    let started = Instant::now();
    let err = h
        .client()
        .echo(authed(echo("slow"), &h.service_token()))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    // tonic's timeout answers CANCELLED.
    assert!(
        matches!(err.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{err:?}"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls() {
    let mut h = Harness::start(|c| c.shutdown_grace = Duration::from_secs(10), false).await;
    let token = h.service_token();
    let mut watch = HealthClient::new(h.channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let mut client = h.client();
    let req = authed(echo("slow"), &token);
    let slow = tokio::spawn(async move { client.echo(req).await });
    wait_in_flight(&h.svc, 1).await;

    let started = Instant::now();
    h.stop();
    // Watchers learn at once.
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);

    // The in-flight call completes; the open Watch stream keeps the server busy until the
    // grace period, so serve returns only then... unless the watch is dropped.
    drop(watch);
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.into_inner().message, "slow");
    let result = tokio::time::timeout(Duration::from_secs(5), h.handle)
        .await
        .expect("serve must return once drained");
    result.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));

    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_cuts_calls_after_grace() {
    let mut h = Harness::start(|c| c.shutdown_grace = Duration::from_millis(300), false).await;
    let mut client = h.client();
    let req = authed(echo("slow"), &h.service_token());
    let slow = tokio::spawn(async move { client.echo(req).await });
    wait_in_flight(&h.svc, 1).await;

    let started = Instant::now();
    h.stop();
    let result = tokio::time::timeout(Duration::from_secs(3), h.handle)
        .await
        .expect("serve must return within grace + cut wait");
    result.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "returned before grace: {took:?}"
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // The cut call fails rather than hanging.
    let err = tokio::time::timeout(Duration::from_secs(2), slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{err:?}"
    );
}
