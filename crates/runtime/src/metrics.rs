//! Metrics: OpenTelemetry instruments, read by a Prometheus registry served on the admin port's
//! `/metrics` (separate from the gRPC port) and, with an OTLP endpoint, pushed over OTLP too.
//!
//! The meter provider is installed once per process: by [`init`] at start-up (with the service
//! name and the OTLP endpoint), or else by the first [`meter`] call (Prometheus only), so
//! instruments made anywhere, in tests too, record into the same registry. Instrument names
//! follow OpenTelemetry's (`rpc.server.duration`); the Prometheus text turns dots into
//! underscores and adds units and `_total` (`rpc_server_duration_seconds_bucket`).

use std::net::SocketAddr;
use std::sync::OnceLock;

pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::{Counter, Gauge, UpDownCounter};
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{Instrument, SdkMeterProvider, Stream};

/// Attribute sets one instrument keeps apart (more are counted together, marked
/// `otel.metric.overflow`). The SDK sizes each instrument's table for its limit when the
/// instrument is first used, per reader: its default of 2,000 took ~135 KiB per instrument,
/// megabytes per service, where the most any of ours has (RPC method × status code) is a few
/// hundred.
const CARDINALITY_LIMIT: usize = 512;

/// The process's provider and the registry `/metrics` reads.
struct Installed {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The metrics pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(String);

fn build(service: &str, otel_endpoint: Option<&str>) -> Result<Installed, MetricsError> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_target_info()
        .scope_info_enabled(false)
        .build()
        .map_err(|e| MetricsError(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(exporter)
        .with_view(|_: &Instrument| {
            Stream::builder()
                .with_cardinality_limit(CARDINALITY_LIMIT)
                .build()
                .ok()
        });
    if let Some(endpoint) = otel_endpoint {
        let otlp = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| MetricsError(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}")))?;
        builder = builder.with_periodic_exporter(otlp);
    }
    Ok(Installed {
        provider: builder.build(),
        registry,
    })
}

/// Installs the process's metrics for `service`, pushing over OTLP to `otel_endpoint` when set.
/// Later calls (or a call after [`meter`] installed the default) change nothing.
pub fn init(service: &str, otel_endpoint: Option<&str>) -> Result<(), MetricsError> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let installed = build(service, otel_endpoint)?;
    let _ = INSTALLED.set(installed);
    Ok(())
}

fn installed() -> &'static Installed {
    INSTALLED.get_or_init(|| match build("cqrs", None) {
        Ok(installed) => installed,
        // Without an OTLP endpoint nothing can fail but the registry itself; then metrics
        // are simply not collected (an empty registry), which must not stop a service.
        Err(e) => {
            tracing::warn!(error = %e, "metrics disabled");
            Installed {
                provider: SdkMeterProvider::builder().build(),
                registry: prometheus::Registry::new(),
            }
        }
    })
}

/// The suite's meter; installs the default pipeline if [`init`] was not called.
pub fn meter() -> Meter {
    installed().provider.meter("cqrs")
}

/// Pushes what the OTLP exporter has not sent yet (at shutdown).
pub fn flush() {
    if let Some(installed) = INSTALLED.get() {
        let _ = installed.provider.force_flush();
    }
}

/// Everything recorded so far, in the Prometheus text format.
pub fn render() -> String {
    use prometheus::Encoder as _;
    let families = installed().registry.gather();
    let mut out = Vec::new();
    match prometheus::TextEncoder::new().encode(&families, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("# metrics could not be encoded: {e}\n"),
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves: the admin port, never the
/// gRPC one, so scraping needs no token and exposes nothing else.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the admin port and serves it in the background until `shutdown` resolves.
pub async fn spawn_admin(
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve_admin(listener, shutdown).await {
            tracing::warn!(error = %e, "metrics port stopped");
        }
    });
    Ok(bound)
}

/// Latency of every RPC by method and gRPC status (its count is the request count; counts by
/// status are the errors by code).
pub(crate) fn rpc_duration() -> &'static Histogram<f64> {
    static RPC: OnceLock<Histogram<f64>> = OnceLock::new();
    RPC.get_or_init(|| {
        meter()
            .f64_histogram("rpc.server.duration")
            .with_unit("s")
            .with_description("Time from a request's arrival to its status, by method and code")
            .with_boundaries(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .build()
    })
}

/// A counter of the suite's meter, made once per name (instruments are cheap to clone).
pub fn counter(name: &'static str, description: &'static str) -> Counter<u64> {
    meter()
        .u64_counter(name)
        .with_description(description)
        .build()
}

/// An up-down counter (things in progress), made on first use.
pub fn up_down(name: &'static str, description: &'static str) -> UpDownCounter<i64> {
    meter()
        .i64_up_down_counter(name)
        .with_description(description)
        .build()
}

/// A gauge whose value is sampled now and then (a backlog, a queue by state).
pub fn gauge(name: &'static str, description: &'static str) -> Gauge<f64> {
    meter()
        .f64_gauge(name)
        .with_description(description)
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Instruments keep at most [`CARDINALITY_LIMIT`] attribute sets apart; the rest are
    /// counted together, not lost.
    #[test]
    fn attribute_sets_past_the_limit_are_counted_together() {
        let sets = CARDINALITY_LIMIT + 10;
        let counter = counter("test.cardinality", "attribute sets past the limit");
        for n in 0..sets {
            counter.add(1, &[KeyValue::new("n", i64::try_from(n).unwrap())]);
        }
        let text = render();
        let series: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("test_cardinality_total{"))
            .collect();
        assert!(
            series.len() <= CARDINALITY_LIMIT + 1,
            "{} series",
            series.len()
        );
        let overflow: Vec<&str> = series
            .iter()
            .copied()
            .filter(|line| line.contains("otel_metric_overflow=\"true\""))
            .collect();
        assert_eq!(overflow.len(), 1, "{overflow:?}");
        let total: f64 = series
            .iter()
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(total, sets as f64);
    }
}
