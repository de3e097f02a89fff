//! The tower layers of the server stack that tonic and tower-http do not provide.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::TraceContextExt;
use tokio::sync::Semaphore;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::clock::Clock;
use crate::errors;
use crate::telemetry::extract_trace_context;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Header carrying the request id in and out.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_STATUS: &str = "grpc-status";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Domain of the statuses the runtime itself produces.
pub const RUNTIME_DOMAIN: &str = "cqrs.runtime";

/// The id of the current request: the caller's `x-request-id` when it is sane, else a fresh
/// uuid. Handlers find it in the request extensions (and in the `x-request-id` metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// When the current RPC must be done: the sooner of the server's request timeout and the
/// caller's `grpc-timeout`. Handlers pass it on to Postgres/Redis calls and outgoing RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDeadline(pub tokio::time::Instant);

impl RequestDeadline {
    /// Time left (zero when already past).
    pub fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// The deadline of a request handled by the runtime's server stack.
pub fn request_deadline<T>(req: &tonic::Request<T>) -> Option<RequestDeadline> {
    req.extensions().get::<RequestDeadline>().copied()
}

/// The request id of a request handled by the runtime's server stack.
pub fn request_id<T>(req: &tonic::Request<T>) -> Option<&str> {
    req.extensions().get::<RequestId>().map(|r| r.0.as_str())
}

/// A caller-supplied id is kept only if it is short and plain, so it cannot bloat or garble
/// logs.
fn acceptable_request_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    ok.then_some(s)
}

/// Parses a gRPC `grpc-timeout` value ("100m", "5S": up to 8 digits and a unit).
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if !(2..=9).contains(&v.len()) {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Outermost layer: request id in and out, one span per RPC joined to the caller's trace, a
/// completion log line, and any error from inner layers turned into a gRPC status response (so
/// that it still carries `x-request-id`).
#[derive(Debug, Clone)]
pub(crate) struct RequestContextLayer {
    request_timeout: Duration,
    trusted_gateways: std::sync::Arc<crate::config::TrustedPeers>,
}

impl RequestContextLayer {
    pub(crate) fn new(
        request_timeout: Duration,
        trusted_gateways: crate::config::TrustedPeers,
    ) -> Self {
        RequestContextLayer {
            request_timeout,
            trusted_gateways: std::sync::Arc::new(trusted_gateways),
        }
    }
}

/// The gateway's account of where a call came from (`client_address` and `user_agent`).
pub const X_CLIENT_ADDRESS: HeaderName = HeaderName::from_static("x-cqrs-client-address");
pub const X_USER_AGENT: HeaderName = HeaderName::from_static("x-cqrs-user-agent");
/// Longest user agent kept.
const MAX_USER_AGENT_LEN: usize = 256;

/// The client the gateway vouches for, when the peer is a trusted gateway.
fn vouched_client<B>(
    req: &http::Request<B>,
    trusted: &crate::config::TrustedPeers,
) -> Option<crate::audit::Client> {
    let peer = req
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())?;
    if !trusted.contains(peer.ip()) {
        return None;
    }
    let header = |name: &HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_LEN)
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    let address = header(&X_CLIENT_ADDRESS);
    let address = address
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let user_agent = header(&X_USER_AGENT);
    (!address.is_empty() || !user_agent.is_empty()).then_some(crate::audit::Client {
        address,
        user_agent,
    })
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            request_timeout: self.request_timeout,
            trusted_gateways: self.trusted_gateways.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RequestContext<S> {
    inner: S,
    request_timeout: Duration,
    trusted_gateways: std::sync::Arc<crate::config::TrustedPeers>,
}

impl<S, B, ResBody> Service<http::Request<B>> for RequestContext<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let request_id = req
            .headers()
            .get(X_REQUEST_ID)
            .and_then(acceptable_request_id)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // Only ascii alphanumerics and punctuation get here, so this cannot fail.
        let id_header = HeaderValue::from_str(&request_id).ok();
        if let Some(v) = &id_header {
            req.headers_mut().insert(X_REQUEST_ID, v.clone());
        }

        let now = tokio::time::Instant::now();
        let budget = req
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(self.request_timeout, |t| t.min(self.request_timeout));
        req.extensions_mut().insert(RequestDeadline(now + budget));
        req.extensions_mut().insert(RequestId(request_id.clone()));
        if let Some(client) = vouched_client(&req, &self.trusted_gateways) {
            req.extensions_mut().insert(client);
        }

        let path = req.uri().path().to_owned();
        let quiet = path.starts_with(HEALTH_PREFIX);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %path,
            request_id = %request_id,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        // Fails only when no OpenTelemetry layer is installed; then there is nothing to join.
        let _ = span.set_parent(extract_trace_context(req.headers()));
        // Lets a log line be matched to its trace.
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }

        let completion = Completion::new(span.clone(), quiet, path.clone());
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let mut response = match fut.await {
                    Ok(response) => response.map(Body::new),
                    Err(err) => tonic::Status::from_error(err.into()).into_http(),
                };
                if let Some(v) = id_header {
                    response.headers_mut().insert(X_REQUEST_ID, v);
                }
                // A trailers-only response (every error, and anything refused by the stack)
                // carries its status in the headers and ends here.
                if let Some(code) = grpc_status(response.headers()) {
                    completion.finish(Some(code));
                    return Ok(response);
                }
                Ok(response.map(|body| {
                    Body::new(ObservedBody {
                        inner: body,
                        completion: Some(completion),
                    })
                }))
            }
            .instrument(span),
        )
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

/// Logs one line when an RPC ends: with its status, or as abandoned when the response is
/// dropped first (client cancelled, deadline, connection lost, shutdown).
struct Completion {
    span: tracing::Span,
    started: Instant,
    quiet: bool,
    done: bool,
    method: String,
}

impl Completion {
    fn new(span: tracing::Span, quiet: bool, method: String) -> Self {
        Completion {
            span,
            started: Instant::now(),
            quiet,
            done: false,
            method,
        }
    }

    fn finish(mut self, code: Option<i32>) {
        self.done = true;
        let elapsed = self.started.elapsed();
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        if let Some(code) = code {
            self.span.record("rpc.grpc.status_code", code);
        }
        if !self.quiet {
            let code =
                code.map_or_else(|| "Unknown".to_owned(), |c| format!("{:?}", Code::from(c)));
            crate::metrics::rpc_duration().record(
                elapsed.as_secs_f64(),
                &[
                    opentelemetry::KeyValue::new("rpc.method", std::mem::take(&mut self.method)),
                    opentelemetry::KeyValue::new("rpc.grpc.status_code", code),
                ],
            );
        }
        let _entered = self.span.enter();
        let grpc_code = code.map(|c| format!("{:?}", Code::from(c)));
        if self.quiet {
            tracing::debug!(grpc.code = grpc_code, elapsed_ms, "rpc finished");
        } else {
            tracing::info!(grpc.code = grpc_code, elapsed_ms, "rpc finished");
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.done {
            let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            let _entered = self.span.enter();
            if self.quiet {
                tracing::debug!(elapsed_ms, "rpc abandoned before completion");
            } else {
                tracing::info!(elapsed_ms, "rpc abandoned before completion");
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the status found in its trailers when it ends.
    struct ObservedBody<B> {
        #[pin]
        inner: B,
        completion: Option<Completion>,
    }
}

impl<B> http_body::Body for ObservedBody<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref()
                    && let Some(c) = this.completion.take()
                {
                    c.finish(grpc_status(trailers));
                }
            }
            // The body failed mid-stream; the client sees a reset.
            Some(Err(_)) => {
                if let Some(c) = this.completion.take() {
                    c.finish(Some(Code::Internal as i32));
                }
            }
            // gRPC-Web responses carry their trailers inside the data, so the status is not
            // visible here.
            None => {
                if let Some(c) = this.completion.take() {
                    c.finish(None);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Global concurrency limit that sheds instead of queueing: past the limit a request gets
/// `ResourceExhausted` (reason OVERLOADED) at once, so callers back off rather than pile up.
/// Health checks are exempt, so an overloaded instance is not also reported dead and restarted.
/// A slot is held until the response head is ready, so streams count only while starting.
#[derive(Clone)]
pub(crate) struct LoadShedLayer {
    permits: Arc<Semaphore>,
    last_warned_ms: Arc<AtomicU64>,
    clock: Arc<dyn Clock>,
}

impl LoadShedLayer {
    /// At most `limit` RPCs in flight; shedding warnings rate-limited by `clock`.
    pub(crate) fn new(limit: usize, clock: Arc<dyn Clock>) -> Self {
        LoadShedLayer {
            permits: Arc::new(Semaphore::new(limit.clamp(1, Semaphore::MAX_PERMITS))),
            last_warned_ms: Arc::new(AtomicU64::new(0)),
            clock,
        }
    }
}

impl std::fmt::Debug for LoadShedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("permits", &self.permits)
            .field("last_warned_ms", &self.last_warned_ms)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: Arc::clone(&self.permits),
            last_warned_ms: Arc::clone(&self.last_warned_ms),
            clock: Arc::clone(&self.clock),
        }
    }
}

#[derive(Clone)]
pub(crate) struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    last_warned_ms: Arc<AtomicU64>,
    clock: Arc<dyn Clock>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("permits", &self.permits)
            .field("last_warned_ms", &self.last_warned_ms)
            .finish_non_exhaustive()
    }
}

impl<S> LoadShed<S> {
    /// Warns at most once a second: under overload, a line per refused request would add load.
    fn warn_shedding(&self) {
        let now_ms = u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0);
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self
                .last_warned_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("concurrency limit reached; shedding requests with RESOURCE_EXHAUSTED");
        }
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for LoadShed<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The instance polled ready takes the call; leave a fresh clone for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if req.uri().path().starts_with(HEALTH_PREFIX) {
            return Box::pin(inner.call(req));
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                let fut = inner.call(req);
                Box::pin(async move {
                    let result = fut.await;
                    drop(permit);
                    result
                })
            }
            Err(_) => {
                self.warn_shedding();
                let status = errors::status(
                    Code::ResourceExhausted,
                    RUNTIME_DOMAIN,
                    "OVERLOADED",
                    "server is overloaded; retry later",
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The session check used when a server is given none: every user session counts as ended,
/// so user tokens are refused (fail closed) while service tokens still work. Services that
/// accept user tokens must pass a real check (`RedisSessionCheck`) via
/// `ServiceServer::session_check`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLiveSessions;

impl cqrs_auth::SessionCheck for NoLiveSessions {
    fn is_live(
        &self,
        _account_id: uuid::Uuid,
        _session_id: &str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, cqrs_auth::AuthError>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(false)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(
            parse_grpc_timeout("99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        for bad in ["", "m", "10", "10x", "-1S", "123456789S", "1.5S", " 1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn request_ids() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(acceptable_request_id(&ok), Some("abc-123_x.y:z"));
        for bad in ["", "has space", "quote\"", "{json}"] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert_eq!(acceptable_request_id(&v), None, "{bad:?}");
        }
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(acceptable_request_id(&long), None);
    }

    #[tokio::test]
    async fn no_live_sessions_fails_closed() {
        use cqrs_auth::SessionCheck;
        assert!(
            !NoLiveSessions
                .is_live(uuid::Uuid::nil(), "any")
                .await
                .unwrap()
        );
    }
}
