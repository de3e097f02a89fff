//! What every response carries and every state-changing request must pass.
//!
//! - Headers: a strict Content-Security-Policy (no inline script or style, nothing from
//!   another origin, no framing), `Referrer-Policy: no-referrer` (a mailed link's page never
//!   leaks its URL), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, no caching of
//!   pages, and HSTS when the public address is https.
//! - POST (and any other unsafe method): refused unless the browser says it comes from this
//!   origin — `Origin` equal to the public origin, or, without it (or `null`, which our own
//!   no-referrer policy makes browsers send), `Sec-Fetch-Site` of `same-origin`/`none`. A browser that sends neither is let through to the synchronizer
//!   token, which every form carries ([`crate::pages::Posted`]).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method};

use crate::pages::Failure;
use crate::state::AppState;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Whether an unsafe request comes from the gateway's own pages.
///
/// Our own `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on a form POST,
/// so `null` is decided by `Sec-Fetch-Site`, which they send alongside; a `null` without it
/// (a sandboxed frame, an old browser) is refused.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    let same_site = site.map(|site| site == b"same-origin" || site == b"none");
    match headers.get(header::ORIGIN).map(HeaderValue::as_bytes) {
        Some(b"null") => same_site == Some(true),
        Some(sent) => sent == origin.as_bytes(),
        None => same_site.unwrap_or(true),
    }
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let mut response =
        if unsafe_method && !same_origin(request.headers(), &state.config.public_url.origin) {
            Failure::StaleForm.into_response()
        } else {
            next.run(request).await
        };
    if let Some(failure) = response.extensions().get::<Failure>().copied() {
        response = crate::pages::failure_page(&state, failure);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if state.config.public_url.https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn only_this_origin_may_post() {
        let origin = "https://cqrs.example.nhs.uk";
        assert!(same_origin(
            &headers(&[("origin", "https://cqrs.example.nhs.uk")]),
            origin
        ));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example")]),
            origin
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), origin));
        // What a browser sends for our own form under Referrer-Policy: no-referrer.
        assert!(same_origin(
            &headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            origin
        ));
        assert!(!same_origin(
            &headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")]),
            origin
        ));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            origin
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            origin
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "same-site")]),
            origin
        ));
        // Neither header: left to the synchronizer token.
        assert!(same_origin(&headers(&[]), origin));
    }
}
