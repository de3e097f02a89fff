//! Spans reach an OTLP/gRPC collector. Its own test binary, because `telemetry::init` installs
//! the process-wide subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use cqrs_runtime::telemetry;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic::{Request, Response, Status};

/// (service.name, span name, trace id) of one exported span.
type Exported = (String, String, Vec<u8>);

/// A fake collector keeping everything exported.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span.name, span.trace_id));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

// Multi-threaded: flushing on guard drop blocks one thread while the exporter's tonic client
// needs the runtime to make progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_are_exported_over_otlp() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let guard = telemetry::init("otlp-test", Some(&format!("http://{collector_addr}"))).unwrap();
    assert!(guard.is_active());

    let mut h = Harness::start(|_| {}, false).await;
    let mut req = authed(echo("d1"), &h.service_token());
    req.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    h.client().echo(req).await.unwrap();
    h.stop();
    tokio::time::timeout(Duration::from_secs(5), h.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Dropping the guard flushes the batch (as at the end of a service's `main`).
    drop(guard);

    let spans = collector.spans.lock().unwrap().clone();
    let rpc = spans
        .iter()
        .find(|(_, name, _)| name == ECHO_PATH)
        .unwrap_or_else(|| panic!("rpc span not exported: {spans:?}"));
    assert_eq!(rpc.0, "otlp-test");
    assert_eq!(
        rpc.2,
        [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36
        ]
    );
}
