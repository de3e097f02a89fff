//! Logs and traces.
//!
//! [`init`] installs logs on stdout (filtered by `RUST_LOG`, default `info`) and an
//! OpenTelemetry layer. Logs are JSON for collectors; `CQRS_LOG_FORMAT=text` gives one plain
//! line per event for people reading a terminal (`make run`). Spans always get real W3C trace ids, so trace context flows through a
//! service even when it exports nothing; with an OTLP endpoint they are also exported over gRPC.
//!
//! Propagation uses the W3C `traceparent`/`tracestate` headers: the server stack extracts them
//! into each RPC's span ([`extract_trace_context`]), clients inject the current span's context
//! ([`TraceContextInterceptor`], [`inject_trace_context`]).

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` holds an invalid filter.
    #[error("RUST_LOG: invalid filter: {0}")]
    Filter(String),
    /// `CQRS_LOG_FORMAT` is neither `json` nor `text`.
    #[error("CQRS_LOG_FORMAT: must be json or text, got {0:?}")]
    Format(String),
    /// The OTLP exporter could not be built.
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build exporter: {0}")]
    Exporter(String),
}

/// Flushes and shuts down the trace pipeline when dropped; keep it alive until `main` returns.
#[must_use = "dropping the guard shuts tracing down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether this guard owns the pipeline (false for repeated [`init`] calls).
    pub fn is_active(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // stdout logging may already be gone at this point; stderr is the last resort.
            if let Err(e) = provider.force_flush() {
                eprintln!("telemetry: flushing spans failed: {e}");
            }
            if let Err(e) = provider.shutdown() {
                eprintln!("telemetry: shutting down tracer provider failed: {e}");
            }
        }
    }
}

/// Installs logging and tracing for the process.
///
/// Call once, early in `main`, inside the Tokio runtime (the OTLP exporter is a tonic client).
/// Later calls, or a call when another global subscriber is already installed, change nothing
/// and return an inactive guard; servers and tests work without calling it at all.
pub fn init(service: &str, otel_endpoint: Option<&str>) -> Result<TelemetryGuard, TelemetryError> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(TelemetryGuard { provider: None });
    }
    if let Err(e) = crate::metrics::init(service, otel_endpoint) {
        INSTALLED.store(false, Ordering::SeqCst);
        return Err(TelemetryError::Exporter(e.to_string()));
    }
    let result = install(service, otel_endpoint);
    if result.is_err() {
        // Nothing was installed, so a corrected retry may proceed.
        INSTALLED.store(false, Ordering::SeqCst);
    }
    result
}

fn install(service: &str, otel_endpoint: Option<&str>) -> Result<TelemetryGuard, TelemetryError> {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let filter =
        EnvFilter::try_new(&directives).map_err(|e| TelemetryError::Filter(e.to_string()))?;

    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otel_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service.to_owned());

    let text = match std::env::var("CQRS_LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "json") => false,
        Ok("text") => true,
        Ok(other) => return Err(TelemetryError::Format(other.to_owned())),
    };
    let fmt = if text {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_writer(std::io::stdout)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .with_writer(std::io::stdout)
            .boxed()
    };
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if installed.is_err() {
        // Someone else owns the global subscriber (e.g. a test harness): leave it alone.
        let _ = provider.shutdown();
        return Ok(TelemetryGuard { provider: None });
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(
        service,
        otlp_export = otel_endpoint.is_some(),
        "telemetry initialised"
    );
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The remote parent carried by `traceparent`/`tracestate` in `headers` (an empty context when
/// absent or malformed).
pub fn extract_trace_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes `cx` as `traceparent`/`tracestate` into `metadata`.
pub fn inject_context(cx: &opentelemetry::Context, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(cx, &mut MetadataInjector(metadata));
}

/// Writes the current tracing span's context as `traceparent`/`tracestate` into `metadata`.
/// Writes nothing when there is no sampled-or-remote span (e.g. telemetry not initialised).
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    inject_context(&tracing::Span::current().context(), metadata);
}

/// Client interceptor passing the caller's trace context on, so a call from inside an RPC
/// joins that RPC's trace:
/// `NotificationServiceClient::with_interceptor(channel, TraceContextInterceptor)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extract_then_inject_round_trips() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", PARENT.parse().unwrap());
        headers.insert("tracestate", "vendor=x".parse().unwrap());
        let cx = extract_trace_context(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid());
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        let mut md = MetadataMap::new();
        inject_context(&cx, &mut md);
        assert_eq!(md.get("traceparent").unwrap().to_str().unwrap(), PARENT);
        assert_eq!(md.get("tracestate").unwrap().to_str().unwrap(), "vendor=x");
    }

    #[test]
    fn malformed_or_missing_parent_is_ignored() {
        let mut headers = http::HeaderMap::new();
        assert!(
            !extract_trace_context(&headers)
                .span()
                .span_context()
                .is_valid()
        );
        headers.insert("traceparent", "00-zz-00-01".parse().unwrap());
        assert!(
            !extract_trace_context(&headers)
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn interceptor_without_telemetry_adds_nothing() {
        use tonic::service::Interceptor;
        let req = TraceContextInterceptor
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(req.metadata().get("traceparent").is_none());
    }
}
