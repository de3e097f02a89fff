//! gRPC-Web at the gateway's origin: `/cqrs.<service>.v1.<Service>/<Rpc>` is forwarded as it
//! is to the service that owns it (each serves gRPC-Web over HTTP/1.1 itself), so a browser
//! application needs one origin and no CORS. Nothing is read or changed on the way but the
//! hop-by-hop headers and the client's address (the gateway's, never the caller's claim); the
//! caller's `authorization` goes through, cookies do not (a gRPC call authenticates with its
//! bearer token only, so a page's session cannot be ridden).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName};
use http::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::client_address;
use crate::state::AppState;

/// The HTTP/1.1 client the calls are forwarded with.
pub type Forwarder = Client<HttpConnector, Body>;

pub fn forwarder() -> Forwarder {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Headers that belong to one connection, not to the call.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::COOKIE,
];

/// The base URL of the service a gRPC path belongs to.
fn owner<'a>(state: &'a AppState, path: &str) -> Option<&'a str> {
    let config = &state.config;
    let package = path.strip_prefix("/cqrs.")?.split('.').next()?;
    Some(match package {
        "identity" => &config.identity_url,
        "directory" => &config.directory_url,
        "access" => &config.access_url,
        "notifications" => &config.notifications_url,
        _ => return None,
    })
}

pub async fn forward(State(state): State<AppState>, request: Request) -> Response {
    let is_grpc_web = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc-web"));
    let path = request.uri().path().to_owned();
    let Some(base) = owner(&state, &path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !is_grpc_web {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let target = format!("{}{path}", base.trim_end_matches('/'));
    let Ok(uri) = target.parse::<Uri>() else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    client_address::stamp(&mut parts.headers);
    match state
        .forwarder
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(answer) => answer.map(Body::new).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, path, "gRPC-Web call not forwarded");
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}
