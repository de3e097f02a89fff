//! Trace context across the wire. Its own test binary, because `telemetry::init` installs the
//! process-wide subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use cqrs_proto::testing::v1::echo_service_client::EchoServiceClient;
use cqrs_runtime::telemetry::{self, TraceContextInterceptor, inject_trace_context};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OUTER_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn last_trace_id(h: &Harness) -> String {
    h.svc.seen.lock().unwrap().last().unwrap().trace_id.clone()
}

#[tokio::test]
async fn trace_context_flows_through_server_and_client() {
    let guard = telemetry::init("runtime-test", None).unwrap();
    assert!(guard.is_active());
    // A second call is harmless.
    let again = telemetry::init("runtime-test", None).unwrap();
    assert!(!again.is_active());
    drop(again);

    let mut h = Harness::start(|_| {}, false).await;
    let token = h.service_token();

    // A caller's traceparent becomes the parent of the server's span.
    let mut req = authed(echo("d1"), &token);
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    h.client().echo(req).await.unwrap();
    assert_eq!(last_trace_id(&h), TRACE_ID);

    // Without one, the server starts a fresh trace.
    h.client().echo(authed(echo("d2"), &token)).await.unwrap();
    let fresh = last_trace_id(&h);
    assert_ne!(fresh, TRACE_ID);
    assert_ne!(fresh, "00000000000000000000000000000000");

    // Client side: a call made inside a span carries that span's trace on.
    let span = tracing::info_span!("outgoing");
    let mut parent = http::HeaderMap::new();
    parent.insert(
        "traceparent",
        format!("00-{OUTER_TRACE_ID}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let _ = span.set_parent(telemetry::extract_trace_context(&parent));
    let channel = h.channel.clone();
    let token2 = token.clone();
    async move {
        let mut md = tonic::metadata::MetadataMap::new();
        inject_trace_context(&mut md);
        let tp = md.get("traceparent").unwrap().to_str().unwrap().to_owned();
        assert!(tp.starts_with(&format!("00-{OUTER_TRACE_ID}-")), "{tp}");

        let mut client = EchoServiceClient::with_interceptor(channel, TraceContextInterceptor);
        client.echo(authed(echo("d3"), &token2)).await.unwrap();
    }
    .instrument(span)
    .await;
    assert_eq!(last_trace_id(&h), OUTER_TRACE_ID);

    h.stop();
    tokio::time::timeout(Duration::from_secs(5), h.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(guard);
}
