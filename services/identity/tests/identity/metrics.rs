//! The metrics an operator scrapes: `/metrics` on the admin port, after real traffic, carries
//! every RPC's latency by method and code, the hashing pool, lock-outs, sessions and the
//! outbox backlog.

use cqrs_proto::identity::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::calls::{IdentityCalls, PASSWORDS, start_with_mail};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the first sample line that starts with `series` (name and labels as given).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_admin_port_serves_what_operators_watch() {
    let h = start_with_mail(&[
        ("CQRS_LOCKOUT_TEMPORARY_AFTER", "2"),
        ("CQRS_LOCKOUT_PERMANENT_AFTER", "10"),
    ])
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(cqrs_runtime::metrics::serve_admin(
        listener,
        std::future::pending(),
    ));

    let account = h
        .active(pb::Realm::Local, "una.lee@practice.org", PASSWORDS[0])
        .await;
    h.sign_in(&account.email, PASSWORDS[0]).await.unwrap();
    for _ in 0..2 {
        h.sign_in(&account.email, "Wrong#Guess1").await.unwrap_err();
    }

    // Other tests share the process (and so the registry): the figures are at least ours.
    let text = scrape(addr).await;
    let sign_ins = value(
        &text,
        "rpc_server_duration_seconds_count{rpc_grpc_status_code=\"Ok\",rpc_method=\"/cqrs.identity.v1.IdentityService/SignIn\"}",
    );
    assert!(sign_ins >= Some(1.0), "{text}");
    let refused = value(
        &text,
        "rpc_server_duration_seconds_count{rpc_grpc_status_code=\"Unauthenticated\",rpc_method=\"/cqrs.identity.v1.IdentityService/SignIn\"}",
    );
    assert!(refused >= Some(2.0), "{text}");
    assert!(
        text.contains("rpc_server_duration_seconds_bucket{"),
        "latency is a histogram: {text}"
    );
    assert!(
        value(&text, "identity_lockouts_total{kind=\"temporary\"}") >= Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "identity_sessions_started_total") >= Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "identity_sessions_ended_total") >= Some(1.0),
        "{text}"
    );
    for series in ["identity_hashing_queued", "identity_hashing_running"] {
        assert!(text.contains(series), "{series}: {text}");
    }

    // The relay and the mail worker sample their queues (at start, then every 10 s).
    assert!(
        value(&text, "outbox_backlog{producer=\"identity\"}").is_some(),
        "{text}"
    );
    assert!(
        value(&text, "outbox_oldest_age{producer=\"identity\"}").is_some(),
        "{text}"
    );
    assert!(
        value(&text, "notifications_emails{state=\"PENDING\"}").is_some(),
        "{text}"
    );
}
