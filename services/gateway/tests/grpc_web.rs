//! gRPC-Web at the gateway's origin: a browser application's calls reach the owning service
//! through the gateway, answers and refusals unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cqrs_proto::identity::v1 as id_pb;
use cqrs_suite::{Service, Suite};
use prost::Message;
use reqwest::StatusCode;

use common::Gateway;

/// One gRPC-Web data frame around `message`.
fn frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&bytes);
    framed
}

/// The data frames and the trailer text of a gRPC-Web answer body.
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut data, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = body[5..5 + len].to_vec();
        if body[0] & 0x80 == 0 {
            data.push(payload);
        } else {
            trailers.push_str(&String::from_utf8(payload).unwrap());
        }
        body = &body[5 + len..];
    }
    (data, trailers)
}

async fn call(
    gateway: &Gateway,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", gateway.origin))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_reach_their_service_through_the_gateway() {
    let suite = Suite::builder()
        .only(&[Service::Identity])
        .without_bootstrap()
        .start()
        .await;
    let gateway = Gateway::start(&suite).await;

    let answer = call(
        &gateway,
        "/cqrs.identity.v1.IdentityService/GetSigningKeys",
        frame(&id_pb::GetSigningKeysRequest {}),
        "application/grpc-web+proto",
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body = answer.bytes().await.unwrap();
    let (data, trailers) = frames(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let keys = id_pb::GetSigningKeysResponse::decode(data[0].as_slice()).unwrap();
    assert_eq!(keys.keys[0].kid, suite.keys.signing.kid());

    // A refusal comes back as the service gave it: CreateAccount without a token.
    let refused = call(
        &gateway,
        "/cqrs.identity.v1.IdentityService/CreateAccount",
        frame(&id_pb::CreateAccountRequest::default()),
        "application/grpc-web+proto",
    )
    .await;
    let status = refused
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let (_, trailers) = frames(&refused.bytes().await.unwrap());
    assert!(
        status.as_deref() == Some("16") || trailers.contains("grpc-status:16"),
        "UNAUTHENTICATED expected: {status:?} {trailers}"
    );

    // Only gRPC-Web, and only the suite's packages.
    let plain = call(
        &gateway,
        "/cqrs.identity.v1.IdentityService/GetSigningKeys",
        b"{}".to_vec(),
        "application/json",
    )
    .await;
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let other = call(
        &gateway,
        "/cqrs.billing.v1.BillingService/Charge",
        frame(&id_pb::GetSigningKeysRequest {}),
        "application/grpc-web+proto",
    )
    .await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    // A service that is down: the gateway says so rather than hang.
    let down = call(
        &gateway,
        "/cqrs.access.v1.AccessService/GetInvitation",
        frame(&id_pb::GetSigningKeysRequest {}),
        "application/grpc-web+proto",
    )
    .await;
    assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
}
