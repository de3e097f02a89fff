//! The gateway's configuration, from the environment; every bad variable is named at once.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `GATEWAY_LISTEN` | `127.0.0.1:8080` | address the pages are served on |
//! | `CQRS_PUBLIC_BASE_URL` | `http://localhost:8080/` | the address people use; its scheme decides the `__Host-` cookie and HSTS, its path is where the pages live, its origin is the only one a form may be posted from |
//! | `IDENTITY_URL`, `DIRECTORY_URL`, `ACCESS_URL`, `NOTIFICATIONS_URL` | `http://127.0.0.1:5005{1,2,3,4}` | the services |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | web sessions |
//! | `CQRS_REDIS_NAMESPACE` | empty | key prefix (the suite's namespace) |
//! | `GATEWAY_SESSION_IDLE_SECS` | 1800 | a web session ends after this long unused |
//! | `GATEWAY_CALL_TIMEOUT_SECS` | 10 | bound on each call to a service |
//! | `GATEWAY_TRUSTED_PROXY_HEADER` | unset | header holding the client address set by the proxy in front (e.g. `X-Forwarded-For`); without it the peer address is used |

use std::net::SocketAddr;
use std::time::Duration;

use cqrs_runtime::config::{ConfigErrors, Env, nonzero, parse_endpoint, redis_url};
use url::Url;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub public_url: PublicUrl,
    pub identity_url: String,
    pub directory_url: String,
    pub access_url: String,
    pub notifications_url: String,
    pub redis_url: String,
    pub redis_namespace: String,
    pub session_idle: Duration,
    pub call_timeout: Duration,
    pub trusted_proxy_header: Option<http::HeaderName>,
}

/// `CQRS_PUBLIC_BASE_URL`, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl {
    /// `https://host[:port]`, what a browser sends as `Origin`.
    pub origin: String,
    /// The path the pages live under, `/` or `/prefix` (no trailing slash).
    pub prefix: String,
    pub https: bool,
}

impl PublicUrl {
    pub fn parse(raw: &str) -> Result<PublicUrl, String> {
        let url = Url::parse(raw).map_err(|e| e.to_string())?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("expected http or https, not {other}")),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        let origin = url.origin().ascii_serialization();
        let prefix = url.path().trim_end_matches('/');
        Ok(PublicUrl {
            origin,
            prefix: if prefix.is_empty() {
                "/".into()
            } else {
                prefix.into()
            },
            https,
        })
    }

    /// The path of a page, e.g. `sign-in` → `/portal/sign-in`.
    pub fn path(&self, page: &str) -> String {
        let page = page.trim_start_matches('/');
        if self.prefix == "/" {
            format!("/{page}")
        } else {
            format!("{}/{page}", self.prefix)
        }
    }
}

impl GatewayConfig {
    pub fn from_env(env: &Env) -> Result<GatewayConfig, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let listen = errs.take(env.or("GATEWAY_LISTEN", SocketAddr::from(([127, 0, 0, 1], 8080))));
        let public_url = errs.take(
            env.optional_with("CQRS_PUBLIC_BASE_URL", PublicUrl::parse)
                .map(|url| {
                    url.unwrap_or_else(|| PublicUrl {
                        origin: "http://localhost:8080".into(),
                        prefix: "/".into(),
                        https: false,
                    })
                }),
        );
        let mut service = |var: &str, port: u16| {
            errs.take(
                env.optional_with(var, parse_endpoint)
                    .map(|url| url.unwrap_or_else(|| format!("http://127.0.0.1:{port}"))),
            )
        };
        let identity_url = service("IDENTITY_URL", 50051);
        let directory_url = service("DIRECTORY_URL", 50052);
        let access_url = service("ACCESS_URL", 50053);
        let notifications_url = service("NOTIFICATIONS_URL", 50054);
        let redis_url = errs.take(redis_url(env));
        let redis_namespace = errs.take(cqrs_runtime::config::redis_namespace(env));
        let session_idle = errs.take(
            env.duration_secs("GATEWAY_SESSION_IDLE_SECS", Duration::from_secs(1800))
                .and_then(nonzero("GATEWAY_SESSION_IDLE_SECS")),
        );
        let call_timeout = errs.take(
            env.duration_secs("GATEWAY_CALL_TIMEOUT_SECS", Duration::from_secs(10))
                .and_then(nonzero("GATEWAY_CALL_TIMEOUT_SECS")),
        );
        let trusted_proxy_header =
            errs.take(env.optional_with("GATEWAY_TRUSTED_PROXY_HEADER", |raw| {
                http::HeaderName::try_from(raw).map_err(|e| e.to_string())
            }));
        errs.finish(|| {
            Some(GatewayConfig {
                listen: listen?,
                public_url: public_url?,
                identity_url: identity_url?,
                directory_url: directory_url?,
                access_url: access_url?,
                notifications_url: notifications_url?,
                redis_url: redis_url?,
                redis_namespace: redis_namespace?,
                session_idle: session_idle?,
                call_timeout: call_timeout?,
                trusted_proxy_header: trusted_proxy_header?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_public_url_gives_origin_prefix_and_scheme() {
        let url = PublicUrl::parse("https://cqrs.example.nhs.uk/portal/").unwrap();
        assert_eq!(url.origin, "https://cqrs.example.nhs.uk");
        assert_eq!(url.prefix, "/portal");
        assert!(url.https);
        assert_eq!(url.path("sign-in"), "/portal/sign-in");
        let root = PublicUrl::parse("http://localhost:8080").unwrap();
        assert_eq!(root.prefix, "/");
        assert_eq!(root.path("/sign-in"), "/sign-in");
        assert!(!root.https);
        assert!(PublicUrl::parse("ftp://x/").is_err());
        assert!(PublicUrl::parse("https://x/?a=b").is_err());
    }

    #[test]
    fn every_bad_variable_is_named() {
        let env = Env::from_pairs(&[
            ("GATEWAY_LISTEN", "nowhere"),
            ("CQRS_PUBLIC_BASE_URL", "gopher://x"),
            ("GATEWAY_SESSION_IDLE_SECS", "0"),
            ("GATEWAY_TRUSTED_PROXY_HEADER", "bad header"),
        ]);
        let errs = GatewayConfig::from_env(&env).unwrap_err();
        for var in [
            "GATEWAY_LISTEN",
            "CQRS_PUBLIC_BASE_URL",
            "GATEWAY_SESSION_IDLE_SECS",
            "GATEWAY_TRUSTED_PROXY_HEADER",
        ] {
            assert!(errs.names(var), "{var} not named in {errs}");
        }
    }

    #[test]
    fn defaults_serve_localhost() {
        let config = GatewayConfig::from_env(&Env::from_pairs(&[])).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.public_url.origin, "http://localhost:8080");
        assert_eq!(config.identity_url, "http://127.0.0.1:50051");
        assert!(config.trusted_proxy_header.is_none());
    }
}
