//! The address of the person's machine, passed to the services with every call they get from
//! the gateway (for their rate limits and audit).
//!
//! A header saying where a request came from is believed only when the operator named it in
//! `GATEWAY_TRUSTED_PROXY_HEADER`: the proxy in front then overwrites or appends it, and its
//! last entry is the one the proxy wrote. Without that setting any such header is the
//! client's own claim and is ignored; the TCP peer is the client. A gRPC-Web caller's own
//! `x-cqrs-client-address` is always dropped, never forwarded.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderName};

use crate::state::AppState;

/// The metadata key the services read the client's address from.
pub const METADATA_KEY: &str = "x-cqrs-client-address";
/// And the browser's `User-Agent`, for their audit trails.
pub const USER_AGENT_KEY: &str = "x-cqrs-user-agent";

/// What the services are told about the person's machine.
#[derive(Clone, Debug, Default)]
struct Client {
    address: Option<IpAddr>,
    user_agent: Option<http::HeaderValue>,
}

tokio::task_local! {
    static CLIENT: Client;
}

/// The client's address: the last entry of the trusted header when one is configured and
/// holds an address, else the peer.
pub fn client_address(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trusted: Option<&HeaderName>,
) -> Option<IpAddr> {
    trusted
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(parse_address)
        .or_else(|| peer.map(|peer| peer.ip()))
}

/// `192.0.2.7`, `2001:db8::1`, `[2001:db8::1]:443` or `192.0.2.7:5000`.
fn parse_address(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The client's address of the request being served, for the calls it makes.
pub fn current() -> Option<IpAddr> {
    CLIENT.try_with(|client| client.address).ok().flatten()
}

/// The browser's `User-Agent` of the request being served.
pub fn user_agent() -> Option<http::HeaderValue> {
    CLIENT
        .try_with(|client| client.user_agent.clone())
        .ok()
        .flatten()
}

/// Puts what the services are told about the client on an outgoing call's headers, in place
/// of anything the caller said about itself.
pub fn stamp(headers: &mut http::HeaderMap) {
    headers.remove(METADATA_KEY);
    headers.remove(USER_AGENT_KEY);
    if let Some(address) = current()
        && let Ok(value) = http::HeaderValue::from_str(&address.to_string())
    {
        headers.insert(METADATA_KEY, value);
    }
    if let Some(agent) = user_agent() {
        headers.insert(USER_AGENT_KEY, agent);
    }
}

/// Works out the client's address once per request and keeps it for the calls the request
/// makes ([`current`]).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let address = client_address(
        request.headers(),
        peer,
        state.config.trusted_proxy_header.as_ref(),
    );
    let user_agent = request.headers().get(http::header::USER_AGENT).cloned();
    CLIENT
        .scope(
            Client {
                address,
                user_agent,
            },
            next.run(request),
        )
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    const PEER: &str = "10.0.0.5:41000";

    fn peer() -> Option<SocketAddr> {
        Some(PEER.parse().unwrap())
    }

    #[test]
    fn without_a_trusted_header_the_peer_is_the_client() {
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.9"), ("x-real-ip", "1.2.3.4")]);
        assert_eq!(
            client_address(&spoofed, peer(), None),
            Some("10.0.0.5".parse().unwrap())
        );
    }

    #[test]
    fn the_trusted_header_last_entry_is_the_client() {
        let trusted = HeaderName::from_static("x-forwarded-for");
        // The client claimed 1.1.1.1; the proxy appended the address it saw.
        let forwarded = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        assert_eq!(
            client_address(&forwarded, peer(), Some(&trusted)),
            Some("203.0.113.9".parse().unwrap())
        );
        let repeated = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "[2001:db8::7]:443"),
        ]);
        assert_eq!(
            client_address(&repeated, peer(), Some(&trusted)),
            Some("2001:db8::7".parse().unwrap())
        );
        // Missing or not an address: the peer (the proxy itself).
        for map in [headers(&[]), headers(&[("x-forwarded-for", "unknown")])] {
            assert_eq!(
                client_address(&map, peer(), Some(&trusted)),
                Some("10.0.0.5".parse().unwrap())
            );
        }
    }

    #[tokio::test]
    async fn the_address_is_known_only_inside_the_request() {
        assert_eq!(current(), None);
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let client = Client {
            address: Some(address),
            user_agent: Some(http::HeaderValue::from_static("Firefox/140")),
        };
        let mut headers = HeaderMap::new();
        headers.insert(METADATA_KEY, "203.0.113.66".parse().unwrap());
        let seen = CLIENT
            .scope(client, async {
                stamp(&mut headers);
                current()
            })
            .await;
        assert_eq!(seen, Some(address));
        // A caller's own claim is replaced by what the gateway saw.
        assert_eq!(headers[METADATA_KEY], "192.0.2.1");
        assert_eq!(headers[USER_AGENT_KEY], "Firefox/140");
    }
}
