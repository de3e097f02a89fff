//! Typed configuration from environment variables.
//!
//! Everything reads from an [`Env`] snapshot instead of `std::env` so tests control the input
//! and never race on the process environment. Every error names the variable and what is wrong
//! with its value; values of variables that may carry credentials (names containing `URL`,
//! `KEY`, `SECRET`, `PASSWORD` or `TOKEN`) are never echoed, not even inside a parser's message.
//!
//! A configuration is read whole: every bad variable is collected in [`ConfigErrors`] and
//! reported at once, so an operator fixes them all in one go rather than one per restart.
//! `from_env` functions follow one pattern:
//!
//! ```
//! # use cqrs_runtime::config::{ConfigErrors, Env, nonzero};
//! # struct Settings { port: u16, workers: usize }
//! fn from_env(env: &Env) -> Result<Settings, ConfigErrors> {
//!     let mut errs = ConfigErrors::default();
//!     let port = errs.take(env.required::<u16>("X_PORT"));
//!     let workers = errs.take(env.or("X_WORKERS", 1usize).and_then(nonzero("X_WORKERS")));
//!     // Rules between values once both are read: `errs.check(ok, "X_VAR", "why")`.
//!     errs.finish(|| Some(Settings { port: port?, workers: workers? }))
//! }
//! let Err(errs) = from_env(&Env::from_pairs(&[("X_WORKERS", "0")])) else { panic!() };
//! assert_eq!(
//!     errs.to_string(),
//!     "X_PORT: is required but not set\nX_WORKERS: must be greater than zero"
//! );
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Display};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use cqrs_auth::TokenVerifier;
use cqrs_rules::email::{DEFAULT_GENERIC_LOCAL_PARTS, GenericMailboxRules};

/// Variable name parts that mark a value as possibly secret.
const SECRET_MARKERS: [&str; 5] = ["URL", "KEY", "SECRET", "PASSWORD", "TOKEN"];

/// A bad or missing configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault (or several, joined with " or ").
    pub var: String,
    /// What is wrong, without the value when the variable may hold a secret.
    pub message: String,
}

impl ConfigError {
    /// An error about `var`.
    pub fn new(var: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            message: message.into(),
        }
    }

    /// `Ok` when `ok`, else an error about `var` (a rule a parsed value must keep).
    pub fn check(ok: bool, var: &str, message: impl Into<String>) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(ConfigError::new(var, message))
        }
    }
}

/// Every bad or missing value found while reading a configuration, in the order read; shown
/// one per line, each naming its variable (see the module docs for the reading pattern).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Records `error`, unless the same error is already recorded (two parts of a service may
    /// read the same variable).
    pub fn push(&mut self, error: ConfigError) {
        if !self.0.contains(&error) {
            self.0.push(error);
        }
    }

    /// The value of `result`, or `None` after recording its error(s).
    pub fn take<T, E: Into<ConfigErrors>>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(errors) => {
                for error in errors.into() {
                    self.push(error);
                }
                None
            }
        }
    }

    /// Records an error about `var` unless `ok` (a rule between values read earlier).
    pub fn check(&mut self, ok: bool, var: &str, message: impl Into<String>) {
        self.take(ConfigError::check(ok, var, message));
    }

    /// `Err` with every recorded error, or `Ok` when there is none.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// Every recorded error, or else what `build` makes of the values taken (each a `Some`
    /// when nothing was recorded, so `value?` in `build` never fails then).
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ConfigErrors> {
        self.into_result()?;
        build().ok_or_else(|| {
            ConfigError::new(
                "configuration",
                "a value is missing although no error was recorded",
            )
            .into()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The recorded errors, in the order read.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// The error when exactly one was recorded.
    pub fn only(&self) -> Option<&ConfigError> {
        match self.0.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// Whether an error names `var` (exactly).
    pub fn names(&self, var: &str) -> bool {
        self.0.iter().any(|e| e.var == var)
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A snapshot of environment variables.
///
/// Empty (or all-whitespace) values count as unset: deployment templates commonly render
/// `FOO=` for "not configured", and treating that as a parse error would only get in the way.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    // Kept apart so a non-UTF-8 value is reported as such rather than as missing.
    non_utf8: BTreeSet<String>,
}

impl Env {
    /// The current process environment.
    pub fn from_process() -> Self {
        let mut env = Env::default();
        for (name, value) in std::env::vars_os() {
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => {
                    env.vars.insert(name, value);
                }
                Err(_) => {
                    env.non_utf8.insert(name);
                }
            }
        }
        env
    }

    /// An environment holding exactly these pairs (tests, tools).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            non_utf8: BTreeSet::new(),
        }
    }

    /// Adds or replaces one variable (tests, layering defaults).
    pub fn set(&mut self, name: &str, value: &str) {
        self.non_utf8.remove(name);
        self.vars.insert(name.to_owned(), value.to_owned());
    }

    /// The trimmed value of `name`, `None` when unset or empty.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ConfigError> {
        if self.non_utf8.contains(name) {
            return Err(ConfigError::new(name, "value is not valid UTF-8"));
        }
        Ok(self
            .vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty()))
    }

    /// Parses `name` with `parse`; `None` when unset.
    pub fn optional_with<T, E, F>(&self, name: &str, parse: F) -> Result<Option<T>, ConfigError>
    where
        E: Display,
        F: FnOnce(&str) -> Result<T, E>,
    {
        match self.get(name)? {
            None => Ok(None),
            Some(raw) => parse(raw)
                .map(Some)
                .map_err(|e| invalid_value(name, raw, &e)),
        }
    }

    /// Parses `name` with `parse`; an error when unset.
    pub fn required_with<T, E, F>(&self, name: &str, parse: F) -> Result<T, ConfigError>
    where
        E: Display,
        F: FnOnce(&str) -> Result<T, E>,
    {
        self.optional_with(name, parse)?
            .ok_or_else(|| ConfigError::new(name, "is required but not set"))
    }

    /// The value of `name` parsed as `T`; an error when unset.
    pub fn required<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.required_with(name, T::from_str)
    }

    /// The value of `name` parsed as `T`, `None` when unset.
    pub fn optional<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.optional_with(name, T::from_str)
    }

    /// The value of `name` parsed as `T`, or `default` when unset.
    pub fn or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    /// A duration given in (possibly fractional) seconds, or `default` when unset.
    pub fn duration_secs(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.optional_with(name, parse_secs)?.unwrap_or(default))
    }
}

fn parse_secs(raw: &str) -> Result<Duration, String> {
    let secs: f64 = raw
        .parse()
        .map_err(|_| "expected a number of seconds".to_owned())?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| "expected a finite, non-negative number of seconds".to_owned())
}

/// A rule for `Result::and_then` on a value read from `var`: zero (`T::default()`, e.g.
/// `Duration::ZERO`) is an error, "must be greater than zero".
pub fn nonzero<T: Default + PartialEq>(var: &str) -> impl FnOnce(T) -> Result<T, ConfigError> {
    move |value| {
        ConfigError::check(value != T::default(), var, "must be greater than zero").map(|()| value)
    }
}

/// Whether `name` may hold a credential, so its value must never be shown.
pub fn is_secret_var(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

fn invalid_value(name: &str, raw: &str, err: &dyn Display) -> ConfigError {
    if is_secret_var(name) {
        let message = match redact(&err.to_string(), raw) {
            Some(detail) => format!("invalid value (not shown, may hold a secret): {detail}"),
            None => "invalid value (not shown, may hold a secret)".to_owned(),
        };
        ConfigError::new(name, message)
    } else {
        ConfigError::new(name, format!("invalid value {raw:?}: {err}"))
    }
}

/// Removes any trace of `secret` from a parser's message: the whole value and every part of it
/// between URL / list punctuation that is long enough to be a credential fragment.
/// `None` when the value is too short to cut out without mangling the message.
fn redact(message: &str, secret: &str) -> Option<String> {
    if secret.len() < 4 {
        return None;
    }
    let mut out = message.replace(secret, "***");
    let mut parts: Vec<&str> = secret
        .split(|c: char| ":/@?&=,;# ".contains(c))
        .filter(|p| p.len() >= 4)
        .collect();
    // Longest first so a fragment's own sub-fragments cannot leave pieces behind.
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for part in parts {
        out = out.replace(part, "***");
    }
    Some(out)
}

/// Upper-case environment prefix of a service name: "notifications" -> "NOTIFICATIONS".
pub fn env_prefix(service: &str) -> String {
    service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// How cross-origin browser (gRPC-Web) callers are admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No cross-origin access (the default).
    None,
    /// Any origin (`*`): only sensible for development.
    Any,
    /// Exactly these origins, e.g. `https://portal.example.nhs.uk`.
    List(Vec<String>),
}

fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let items: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.len() > 1 && items.contains(&"*") {
        return Err("\"*\" cannot be combined with other origins".to_owned());
    }
    if items == ["*"] {
        return Ok(vec!["*".to_owned()]);
    }
    for origin in &items {
        validate_origin(origin).map_err(|e| format!("origin {origin:?}: {e}"))?;
    }
    Ok(items.into_iter().map(str::to_owned).collect())
}

fn validate_origin(origin: &str) -> Result<(), &'static str> {
    let uri: http::Uri = origin
        .parse()
        .map_err(|_| "not a valid scheme://host[:port]")?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("scheme must be http or https"),
    }
    if uri.authority().is_none() {
        return Err("missing host");
    }
    // A browser's Origin header never carries a path, so a configured one could never match.
    if origin
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .contains('/')
    {
        return Err("must not have a path or trailing slash");
    }
    http::HeaderValue::from_str(origin).map_err(|_| "not a valid header value")?;
    Ok(())
}

/// An `http(s)://host[:port]` URL of another service (or a collector), for config values
/// such as `IDENTITY_URL`.
pub fn parse_endpoint(raw: &str) -> Result<String, &'static str> {
    let uri: http::Uri = raw.parse().map_err(|_| "not a valid URI")?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(raw.to_owned()),
        _ => Err("expected http(s)://host:port"),
    }
}

/// Connections a service serves at once unless `CQRS_MAX_CONNECTIONS` says otherwise. Each
/// costs ~30 KiB however quiet it is (HTTP/2 read and write buffers, header tables, the
/// connection's task), and each may carry 128 calls at once, so callers that share
/// connections (the gateway, other services, any gRPC channel) need few; the bound keeps a
/// flood of connections from taking memory the service needs for its work.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Service name, e.g. "notifications"; prefixes its own variables.
    pub service: &'static str,
    /// `<SERVICE>_LISTEN`, default `0.0.0.0:<default_port>`.
    pub listen: SocketAddr,
    /// `CQRS_CORS_ALLOWED_ORIGINS`: comma list; empty = none; `*` = any.
    pub cors_allowed_origins: Vec<String>,
    /// `CQRS_REQUEST_TIMEOUT_SECS` (30): upper bound for any RPC; a shorter `grpc-timeout`
    /// from the caller wins.
    pub request_timeout: Duration,
    /// `CQRS_CONCURRENCY_LIMIT` (1024): RPCs in flight before new ones get `ResourceExhausted`.
    pub concurrency_limit: usize,
    /// `CQRS_MAX_CONNECTIONS` (64): connections served at once; further ones wait in the
    /// listen queue until one closes.
    pub max_connections: usize,
    /// `CQRS_SHUTDOWN_GRACE_SECS` (10): how long in-flight RPCs may finish after a stop signal.
    pub shutdown_grace: Duration,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/gRPC collector; no export when unset.
    pub otel_endpoint: Option<String>,
    /// `<SERVICE>_ADMIN_LISTEN`, default `0.0.0.0:<default_port + 1000>`: the admin port that
    /// serves `/metrics` (`off`: none).
    pub admin_listen: Option<SocketAddr>,
    /// `CQRS_TOKEN_VERIFY_KEYS` (required): comma list of `kid:base64url(ed25519 public key)`.
    pub token_verify_keys: TokenVerifier,
    /// `CQRS_TRUSTED_GATEWAYS` (`127.0.0.1/8,::1`): addresses or CIDR prefixes whose
    /// `x-cqrs-client-address` and `x-cqrs-user-agent` are believed (the gateway's); from
    /// anyone else those headers are dropped. `none` trusts nobody.
    pub trusted_gateways: TrustedPeers,
    /// The audit chain's settings ([`AuditConfig`]).
    pub audit: AuditConfig,
}

/// How a service signs, shares and keeps its audit trail.
#[derive(Clone, Debug, Default)]
pub struct AuditConfig {
    /// `<SERVICE>_AUDIT_SIGNING_KEY`, else `CQRS_AUDIT_SIGNING_KEY`: `kid:base64url(32-byte
    /// Ed25519 seed)`, a key of the service's own (not a token key, not another service's).
    /// Without it no checkpoints are made (and no purge can run).
    pub signing_key: Option<cqrs_audit_chain::CheckpointKey>,
    /// `CQRS_AUDIT_PREVIOUS_KEYS`: public keys of earlier signing keys, comma list of
    /// `kid:base64url(32 bytes)`, so checkpoints they signed still verify after a rotation.
    pub previous_keys: Vec<cqrs_audit_chain::PublicKey>,
    /// `CQRS_AUDIT_CHECKPOINT_EVERY` (1000) events or `CQRS_AUDIT_CHECKPOINT_SECS` (300).
    pub checkpoint: crate::audit::checkpoints::Policy,
    /// `CQRS_AUDIT_WITNESS_URLS`: the services whose checkpoints this one fetches and keeps
    /// (comma list of URLs; its own, if listed, is skipped). Unset: none.
    pub witness_urls: Option<Vec<String>>,
    /// `CQRS_AUDIT_RETENTION_DAYS`: events older than this are purged; unset keeps all.
    pub retention: Option<Duration>,
}

impl AuditConfig {
    fn from_env(env: &Env, service: &str, errs: &mut ConfigErrors) -> Option<Self> {
        let own_key = format!("{}_AUDIT_SIGNING_KEY", env_prefix(service));
        let key_var = match env.get(&own_key) {
            Ok(Some(_)) => own_key.as_str(),
            _ => "CQRS_AUDIT_SIGNING_KEY",
        };
        let signing_key =
            errs.take(env.optional_with(key_var, cqrs_audit_chain::CheckpointKey::parse));
        let previous_keys = errs.take(env.optional_with("CQRS_AUDIT_PREVIOUS_KEYS", |raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(cqrs_audit_chain::PublicKey::parse)
                .collect::<Result<Vec<_>, _>>()
        }));
        let every = errs.take(
            env.or("CQRS_AUDIT_CHECKPOINT_EVERY", 1000i64)
                .and_then(|n| {
                    ConfigError::check(n > 0, "CQRS_AUDIT_CHECKPOINT_EVERY", "must be at least 1")
                        .map(|()| n)
                }),
        );
        let period = errs.take(
            env.duration_secs("CQRS_AUDIT_CHECKPOINT_SECS", Duration::from_secs(300))
                .and_then(nonzero("CQRS_AUDIT_CHECKPOINT_SECS")),
        );
        let witness_urls = errs.take(env.optional_with("CQRS_AUDIT_WITNESS_URLS", |raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| parse_endpoint(u).map(|_| u.to_owned()))
                .collect::<Result<Vec<_>, _>>()
        }));
        let retention =
            errs.take(env.optional_with(
                "CQRS_AUDIT_RETENTION_DAYS",
                |raw| match raw.parse::<f64>() {
                    Ok(days) if days > 0.0 && days.is_finite() => {
                        Ok(Duration::from_secs_f64(days * 86_400.0))
                    }
                    _ => Err("expected a positive number of days"),
                },
            ));
        Some(AuditConfig {
            signing_key: signing_key?,
            previous_keys: previous_keys?.unwrap_or_default(),
            checkpoint: crate::audit::checkpoints::Policy {
                every: every?,
                period: period?,
            },
            witness_urls: witness_urls?,
            retention: retention?,
        })
    }

    /// The keys this service's checkpoints verify with, current first.
    pub fn public_keys(&self) -> Vec<cqrs_audit_chain::PublicKey> {
        self.signing_key
            .iter()
            .map(cqrs_audit_chain::CheckpointKey::public)
            .chain(self.previous_keys.iter().cloned())
            .collect()
    }
}

/// Addresses and prefixes of trusted peers (`10.0.0.0/8`, `::1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedPeers(Vec<(std::net::IpAddr, u8)>);

impl TrustedPeers {
    /// Loopback only.
    pub fn loopback() -> Self {
        TrustedPeers(vec![
            (std::net::IpAddr::from([127, 0, 0, 0]), 8),
            (std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
        ])
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim() == "none" {
            return Ok(TrustedPeers(Vec::new()));
        }
        raw.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (addr, bits) = p.split_once('/').unwrap_or((p, ""));
                let addr: std::net::IpAddr = addr
                    .parse()
                    .map_err(|_| format!("{p:?} is not an address"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let bits = if bits.is_empty() {
                    max
                } else {
                    bits.parse::<u8>()
                        .ok()
                        .filter(|b| *b <= max)
                        .ok_or_else(|| format!("{p:?} has a bad prefix length"))?
                };
                Ok((addr, bits))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedPeers)
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => prefix_match(
                u128::from(n.to_bits()) << 96,
                u128::from(a.to_bits()) << 96,
                *bits,
            ),
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                prefix_match(n.to_bits(), a.to_bits(), *bits)
            }
            _ => false,
        })
    }
}

/// `<SERVICE>_ADMIN_LISTEN`: an address, `off`, or (unset) all interfaces on the gRPC port's
/// default + 1000.
pub fn admin_listen(
    env: &Env,
    var: &str,
    default_port: u16,
) -> Result<Option<SocketAddr>, ConfigError> {
    let default = SocketAddr::from((Ipv4Addr::UNSPECIFIED, default_port.saturating_add(1000)));
    env.optional_with(var, |raw| {
        if raw.eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            raw.parse::<SocketAddr>().map(Some)
        }
    })
    .map(|v| v.unwrap_or(Some(default)))
}

fn prefix_match(net: u128, addr: u128, bits: u8) -> bool {
    bits == 0 || (net ^ addr) >> (128 - u32::from(bits)) == 0
}

impl ServerConfig {
    /// Reads and validates the settings of `service`, reporting every bad variable.
    pub fn from_env(
        env: &Env,
        service: &'static str,
        default_port: u16,
    ) -> Result<Self, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let listen_var = format!("{}_LISTEN", env_prefix(service));
        let listen = errs.take(env.or(
            &listen_var,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, default_port)),
        ));
        let cors_allowed_origins = errs.take(
            env.optional_with("CQRS_CORS_ALLOWED_ORIGINS", parse_origins)
                .map(Option::unwrap_or_default),
        );
        let request_timeout = errs.take(
            env.duration_secs("CQRS_REQUEST_TIMEOUT_SECS", Duration::from_secs(30))
                .and_then(nonzero("CQRS_REQUEST_TIMEOUT_SECS")),
        );
        let concurrency_limit = errs.take(
            env.or("CQRS_CONCURRENCY_LIMIT", 1024usize)
                .and_then(nonzero("CQRS_CONCURRENCY_LIMIT")),
        );
        let max_connections = errs.take(
            env.or("CQRS_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)
                .and_then(nonzero("CQRS_MAX_CONNECTIONS")),
        );
        let shutdown_grace =
            errs.take(env.duration_secs("CQRS_SHUTDOWN_GRACE_SECS", Duration::from_secs(10)));
        let otel_endpoint =
            errs.take(env.optional_with("OTEL_EXPORTER_OTLP_ENDPOINT", parse_endpoint));
        let admin_var = format!("{}_ADMIN_LISTEN", env_prefix(service));
        let admin_listen = errs.take(admin_listen(env, &admin_var, default_port));
        let token_verify_keys =
            errs.take(env.required_with("CQRS_TOKEN_VERIFY_KEYS", TokenVerifier::from_env_value));
        let trusted_gateways = errs.take(
            env.optional_with("CQRS_TRUSTED_GATEWAYS", TrustedPeers::parse)
                .map(|t| t.unwrap_or_else(TrustedPeers::loopback)),
        );
        let audit = AuditConfig::from_env(env, service, &mut errs);
        errs.finish(|| {
            Some(ServerConfig {
                service,
                listen: listen?,
                cors_allowed_origins: cors_allowed_origins?,
                request_timeout: request_timeout?,
                concurrency_limit: concurrency_limit?,
                max_connections: max_connections?,
                shutdown_grace: shutdown_grace?,
                otel_endpoint: otel_endpoint?,
                admin_listen: admin_listen?,
                token_verify_keys: token_verify_keys?,
                trusted_gateways: trusted_gateways?,
                audit: audit?,
            })
        })
    }

    /// A configuration for in-process tests: 127.0.0.1:0, no CORS, 30 s timeout, limit 1024,
    /// 5 s grace, no OTLP.
    pub fn for_tests(service: &'static str, token_verify_keys: TokenVerifier) -> Self {
        ServerConfig {
            service,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cors_allowed_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: Duration::from_secs(5),
            otel_endpoint: None,
            admin_listen: None,
            token_verify_keys,
            trusted_gateways: TrustedPeers::loopback(),
            audit: AuditConfig::default(),
        }
    }

    /// The CORS policy [`ServerConfig::cors_allowed_origins`] describes.
    pub fn cors_origins(&self) -> CorsOrigins {
        match self.cors_allowed_origins.as_slice() {
            [] => CorsOrigins::None,
            [only] if only == "*" => CorsOrigins::Any,
            list => CorsOrigins::List(list.to_vec()),
        }
    }
}

/// Where a service keeps its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Postgres URL (may hold a password: never log it).
    pub url: String,
    /// Set when the service shares `DATABASE_URL` with others: its tables and migration history
    /// then live in this schema (the service name).
    pub schema: Option<String>,
}

impl DatabaseConfig {
    /// `<SERVICE>_DATABASE_URL` (own database) wins; else `DATABASE_URL` with schema
    /// `<service>`.
    pub fn from_env(env: &Env, service: &str) -> Result<Self, ConfigError> {
        let own_var = format!("{}_DATABASE_URL", env_prefix(service));
        if let Some(url) = env.optional_with(&own_var, parse_pg_url)? {
            return Ok(DatabaseConfig { url, schema: None });
        }
        if let Some(url) = env.optional_with("DATABASE_URL", parse_pg_url)? {
            let schema = schema_name(service);
            validate_schema_name(&schema).map_err(|e| {
                ConfigError::new("DATABASE_URL", format!("service {service:?}: {e}"))
            })?;
            return Ok(DatabaseConfig {
                url,
                schema: Some(schema),
            });
        }
        Err(ConfigError::new(
            format!("{own_var} or DATABASE_URL"),
            "one of them is required but neither is set",
        ))
    }
}

fn schema_name(service: &str) -> String {
    service.to_ascii_lowercase().replace('-', "_")
}

fn parse_pg_url(raw: &str) -> Result<String, String> {
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err("expected a postgres:// or postgresql:// URL".to_owned());
    }
    sqlx::postgres::PgConnectOptions::from_str(raw).map_err(|e| e.to_string())?;
    Ok(raw.to_owned())
}

/// Checks a schema name is a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes),
/// so it can be quoted into DDL and `search_path` without escaping concerns.
pub fn validate_schema_name(schema: &str) -> Result<(), String> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || schema.len() > 63 {
        return Err(format!(
            "schema name {schema:?} must match [a-z_][a-z0-9_]* and be at most 63 bytes"
        ));
    }
    Ok(())
}

/// The generic-mailbox rule of every service that takes addresses for accounts (identity,
/// access), so both refuse the same ones: `CQRS_GENERIC_EMAIL_LOCAL_PARTS` (comma list,
/// default the built-in list) and `CQRS_GENERIC_EMAIL_DOMAINS` (comma list, default none).
pub fn generic_mailbox_rules(env: &Env) -> Result<GenericMailboxRules, ConfigErrors> {
    let split = |raw: &str| -> Vec<String> { raw.split(',').map(str::to_owned).collect() };
    let mut errs = ConfigErrors::default();
    let local_parts = errs.take(env.get("CQRS_GENERIC_EMAIL_LOCAL_PARTS").map(|raw| {
        raw.map_or_else(
            || {
                DEFAULT_GENERIC_LOCAL_PARTS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            },
            split,
        )
    }));
    let domains = errs.take(
        env.get("CQRS_GENERIC_EMAIL_DOMAINS")
            .map(|raw| raw.map(split).unwrap_or_default()),
    );
    errs.finish(|| Some(GenericMailboxRules::new(local_parts?, domains?)))
}

/// `REDIS_URL`, default `redis://127.0.0.1:6379`: a single server, Sentinel or Cluster
/// (see [`cqrs_redis::RedisTarget`]).
pub fn redis_url(env: &Env) -> Result<String, ConfigError> {
    Ok(env
        .optional_with("REDIS_URL", |raw| {
            raw.parse::<cqrs_redis::RedisTarget>()?;
            Ok::<_, String>(raw.to_owned())
        })?
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()))
}

/// `CQRS_REDIS_NAMESPACE`, default empty: the prefix of every Redis key, the same in every
/// service. Braces are refused: a `{…}` in the prefix would become every key's Cluster hash
/// tag, putting all keys of the suite in one slot (correct, but one node would hold them all).
pub fn redis_namespace(env: &Env) -> Result<String, ConfigError> {
    Ok(env
        .optional_with("CQRS_REDIS_NAMESPACE", |raw| {
            if raw.contains(['{', '}']) {
                Err("must not contain { or } (a Redis Cluster hash tag)")
            } else {
                Ok(raw.to_owned())
            }
        })?
        .unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn redis_namespace_refuses_hash_tags() {
        let mut env = Env::from_pairs(&[]);
        assert_eq!(redis_namespace(&env).unwrap(), "");
        env.set("CQRS_REDIS_NAMESPACE", "staging:");
        assert_eq!(redis_namespace(&env).unwrap(), "staging:");
        for bad in ["{staging}:", "a{b", "a}b"] {
            env.set("CQRS_REDIS_NAMESPACE", bad);
            let err = redis_namespace(&env).unwrap_err();
            assert_eq!(err.var, "CQRS_REDIS_NAMESPACE");
            assert!(err.message.contains("hash tag"), "{}", err.message);
        }
    }

    fn verify_keys() -> String {
        cqrs_auth::SigningKey::generate("k1")
            .verifying_key()
            .to_env_value()
    }

    fn base_env() -> Env {
        let mut env = Env::from_pairs(&[]);
        env.set("CQRS_TOKEN_VERIFY_KEYS", &verify_keys());
        env
    }

    #[test]
    fn trusted_gateways_by_address_and_prefix() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let loopback = TrustedPeers::loopback();
        assert!(loopback.contains(ip("127.0.0.1")));
        assert!(loopback.contains(ip("127.9.9.9")));
        assert!(loopback.contains(ip("::1")));
        assert!(loopback.contains(ip("::ffff:127.0.0.1")));
        assert!(!loopback.contains(ip("10.0.0.1")));
        let pods = TrustedPeers::parse("10.42.0.0/16, 2001:db8::/32, 192.0.2.7").unwrap();
        assert!(pods.contains(ip("10.42.200.1")));
        assert!(!pods.contains(ip("10.43.0.1")));
        assert!(pods.contains(ip("2001:db8:1::5")));
        assert!(pods.contains(ip("192.0.2.7")));
        assert!(!pods.contains(ip("192.0.2.8")));
        assert!(
            !TrustedPeers::parse("none")
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
        assert!(TrustedPeers::parse("10.0.0.0/33").is_err());
        assert!(TrustedPeers::parse("gateway").is_err());
    }

    #[test]
    fn audit_settings_name_every_bad_variable() {
        let mut env = base_env();
        env.set("CQRS_AUDIT_SIGNING_KEY", "k1:short");
        env.set("CQRS_AUDIT_CHECKPOINT_EVERY", "0");
        env.set("CQRS_AUDIT_RETENTION_DAYS", "-3");
        env.set("CQRS_AUDIT_WITNESS_URLS", "http://identity:50051,ftp://x");
        env.set("CQRS_TRUSTED_GATEWAYS", "10.0.0.0/99");
        let errs = ServerConfig::from_env(&env, "directory", 50052).unwrap_err();
        for var in [
            "CQRS_AUDIT_SIGNING_KEY",
            "CQRS_AUDIT_CHECKPOINT_EVERY",
            "CQRS_AUDIT_RETENTION_DAYS",
            "CQRS_AUDIT_WITNESS_URLS",
            "CQRS_TRUSTED_GATEWAYS",
        ] {
            assert!(errs.names(var), "{var}: {errs}");
        }
        assert!(
            !errs.to_string().contains("short"),
            "the key is not shown: {errs}"
        );

        let key = cqrs_audit_chain::CheckpointKey::generate("audit-1");
        let mut env = base_env();
        env.set(
            "CQRS_AUDIT_SIGNING_KEY",
            "k1:ignored-when-the-service-has-its-own",
        );
        env.set("DIRECTORY_AUDIT_SIGNING_KEY", &key.to_env_value());
        env.set("CQRS_AUDIT_RETENTION_DAYS", "365");
        let config = ServerConfig::from_env(&env, "directory", 50052).unwrap();
        assert_eq!(config.audit.public_keys(), vec![key.public()]);
        assert_eq!(
            config.audit.retention,
            Some(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(config.audit.checkpoint.every, 1000);
        assert_eq!(config.trusted_gateways, TrustedPeers::loopback());
    }

    /// The one error in `errs`.
    fn one(errs: &ConfigErrors) -> ConfigError {
        errs.only()
            .cloned()
            .unwrap_or_else(|| panic!("expected exactly one error, got:\n{errs}"))
    }

    fn err_for(env: &Env) -> ConfigError {
        one(&ServerConfig::from_env(env, "notifications", 50054).unwrap_err())
    }

    #[test]
    fn server_defaults() {
        let cfg = ServerConfig::from_env(&base_env(), "notifications", 50054).unwrap();
        assert_eq!(cfg.service, "notifications");
        assert_eq!(cfg.listen, "0.0.0.0:50054".parse().unwrap());
        assert!(cfg.cors_allowed_origins.is_empty());
        assert_eq!(cfg.cors_origins(), CorsOrigins::None);
        assert_eq!(cfg.request_timeout, Duration::from_secs(30));
        assert_eq!(cfg.concurrency_limit, 1024);
        assert_eq!(cfg.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(cfg.shutdown_grace, Duration::from_secs(10));
        assert_eq!(cfg.otel_endpoint, None);
        assert_eq!(cfg.admin_listen, Some("0.0.0.0:51054".parse().unwrap()));
        let mut env = base_env();
        env.set("NOTIFICATIONS_ADMIN_LISTEN", "off");
        let off = ServerConfig::from_env(&env, "notifications", 50054).unwrap();
        assert_eq!(off.admin_listen, None);
        env.set("NOTIFICATIONS_ADMIN_LISTEN", "127.0.0.1:9100");
        let set = ServerConfig::from_env(&env, "notifications", 50054).unwrap();
        assert_eq!(set.admin_listen, Some("127.0.0.1:9100".parse().unwrap()));
        env.set("NOTIFICATIONS_ADMIN_LISTEN", "somewhere");
        assert_eq!(err_for(&env).var, "NOTIFICATIONS_ADMIN_LISTEN");
    }

    #[test]
    fn server_all_set() {
        let mut env = base_env();
        env.set("NOTIFICATIONS_LISTEN", "127.0.0.1:6000");
        env.set(
            "CQRS_CORS_ALLOWED_ORIGINS",
            " https://a.example , http://localhost:3000,",
        );
        env.set("CQRS_REQUEST_TIMEOUT_SECS", "2.5");
        env.set("CQRS_CONCURRENCY_LIMIT", "8");
        env.set("CQRS_MAX_CONNECTIONS", "16");
        env.set("CQRS_SHUTDOWN_GRACE_SECS", "0");
        env.set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let cfg = ServerConfig::from_env(&env, "notifications", 1).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(
            cfg.cors_origins(),
            CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ])
        );
        assert_eq!(cfg.request_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.concurrency_limit, 8);
        assert_eq!(cfg.max_connections, 16);
        assert_eq!(cfg.shutdown_grace, Duration::ZERO);
        assert_eq!(cfg.otel_endpoint.as_deref(), Some("http://collector:4317"));
    }

    #[test]
    fn cors_any_and_empty() {
        let mut env = base_env();
        env.set("CQRS_CORS_ALLOWED_ORIGINS", "*");
        let cfg = ServerConfig::from_env(&env, "x", 1).unwrap();
        assert_eq!(cfg.cors_origins(), CorsOrigins::Any);
        env.set("CQRS_CORS_ALLOWED_ORIGINS", " ");
        let cfg = ServerConfig::from_env(&env, "x", 1).unwrap();
        assert_eq!(cfg.cors_origins(), CorsOrigins::None);
    }

    #[test]
    fn listen_invalid() {
        let mut env = base_env();
        env.set("NOTIFICATIONS_LISTEN", "localhost");
        let err = err_for(&env);
        assert_eq!(err.var, "NOTIFICATIONS_LISTEN");
        assert!(err.message.contains("\"localhost\""), "{err}");
        assert!(
            err.to_string()
                .starts_with("NOTIFICATIONS_LISTEN: invalid value")
        );
    }

    #[test]
    fn listen_var_uses_service_prefix() {
        let mut env = base_env();
        env.set("ACCESS_WORKFLOW_LISTEN", "127.0.0.1:7");
        let cfg = ServerConfig::from_env(&env, "access-workflow", 1).unwrap();
        assert_eq!(cfg.listen.port(), 7);
    }

    #[test]
    fn cors_errors() {
        for (value, needle) in [
            ("*,https://a.example", "cannot be combined"),
            ("ftp://a.example", "scheme must be http or https"),
            ("https://a.example/", "must not have a path"),
            ("https://a.example/app", "must not have a path"),
            ("a.example", "origin \"a.example\""),
            ("https://a b", "origin"),
        ] {
            let mut env = base_env();
            env.set("CQRS_CORS_ALLOWED_ORIGINS", value);
            let err = err_for(&env);
            assert_eq!(err.var, "CQRS_CORS_ALLOWED_ORIGINS", "{value}");
            assert!(err.message.contains(needle), "{value}: {err}");
        }
    }

    #[test]
    fn timeout_errors() {
        for (value, needle) in [
            ("abc", "expected a number of seconds"),
            ("-1", "non-negative"),
            ("NaN", "finite"),
            ("inf", "finite"),
            ("0", "greater than zero"),
        ] {
            let mut env = base_env();
            env.set("CQRS_REQUEST_TIMEOUT_SECS", value);
            let err = err_for(&env);
            assert_eq!(err.var, "CQRS_REQUEST_TIMEOUT_SECS");
            assert!(err.message.contains(needle), "{value}: {err}");
        }
    }

    #[test]
    fn grace_errors() {
        let mut env = base_env();
        env.set("CQRS_SHUTDOWN_GRACE_SECS", "soon");
        let err = err_for(&env);
        assert_eq!(err.var, "CQRS_SHUTDOWN_GRACE_SECS");
        assert!(err.message.contains("\"soon\""));
    }

    #[test]
    fn concurrency_errors() {
        for var in ["CQRS_CONCURRENCY_LIMIT", "CQRS_MAX_CONNECTIONS"] {
            for (value, needle) in [("0", "greater than zero"), ("-3", "invalid value \"-3\"")] {
                let mut env = base_env();
                env.set(var, value);
                let err = err_for(&env);
                assert_eq!(err.var, var);
                assert!(err.message.contains(needle), "{var}={value}: {err}");
            }
        }
    }

    #[test]
    fn otel_endpoint_errors() {
        for value in ["collector:4317", "grpc://collector:4317", "http://"] {
            let mut env = base_env();
            env.set("OTEL_EXPORTER_OTLP_ENDPOINT", value);
            let err = err_for(&env);
            assert_eq!(err.var, "OTEL_EXPORTER_OTLP_ENDPOINT", "{value}");
        }
    }

    #[test]
    fn verify_keys_required() {
        let err = one(&ServerConfig::from_env(&Env::from_pairs(&[]), "x", 1).unwrap_err());
        assert_eq!(err.var, "CQRS_TOKEN_VERIFY_KEYS");
        assert_eq!(err.message, "is required but not set");
    }

    #[test]
    fn verify_keys_invalid_value_not_echoed() {
        let mut env = base_env();
        env.set("CQRS_TOKEN_VERIFY_KEYS", "k1:notbase64!!!");
        let err = err_for(&env);
        assert_eq!(err.var, "CQRS_TOKEN_VERIFY_KEYS");
        assert!(err.message.contains("not shown"), "{err}");
        assert!(!err.to_string().contains("notbase64"), "{err}");
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let mut env = Env::from_pairs(&[]);
        env.set("NOTIFICATIONS_LISTEN", "localhost");
        env.set("CQRS_CONCURRENCY_LIMIT", "0");
        env.set("CQRS_TOKEN_VERIFY_KEYS", "k1:notbase64!!!");
        let errs = ServerConfig::from_env(&env, "notifications", 50054).unwrap_err();
        let vars: Vec<&str> = errs.errors().iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "NOTIFICATIONS_LISTEN",
                "CQRS_CONCURRENCY_LIMIT",
                "CQRS_TOKEN_VERIFY_KEYS",
            ]
        );
        // One line per problem, each naming its variable; secrets are still not echoed.
        let text = errs.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, var) in lines.iter().zip(&vars) {
            assert!(line.starts_with(&format!("{var}: ")), "{text}");
        }
        assert!(!text.contains("notbase64"), "{text}");
    }

    #[test]
    fn collected_errors() {
        let mut errs = ConfigErrors::default();
        assert_eq!(errs.take(Ok::<_, ConfigError>(5)), Some(5));
        assert!(errs.is_empty());
        assert_eq!(errs.clone().into_result(), Ok(()));
        let bad = ConfigError::new("A", "bad");
        assert_eq!(errs.take(Err::<u8, _>(bad.clone())), None);
        // The same problem found twice (two readers of one variable) is reported once.
        errs.push(bad.clone());
        errs.check(true, "B", "fine");
        errs.check(false, "C", "must be set with A");
        assert_eq!(errs.len(), 2);
        assert!(errs.names("A") && errs.names("C") && !errs.names("B"));
        assert_eq!(errs.only(), None);
        assert_eq!(errs.to_string(), "A: bad\nC: must be set with A");
        let mut outer = ConfigErrors::default();
        assert_eq!(outer.take(Err::<(), _>(errs.clone())), None);
        assert_eq!(outer, errs);
        assert_eq!(errs.finish(|| Some(1)).unwrap_err().len(), 2);
        assert_eq!(ConfigErrors::default().finish(|| Some(1)), Ok(1));
        assert!(ConfigErrors::default().finish(|| None::<u8>).is_err());
        assert_eq!(ConfigErrors::from(bad.clone()).only(), Some(&bad));
    }

    #[test]
    fn database_own_url_wins() {
        let env = Env::from_pairs(&[
            ("NOTIFICATIONS_DATABASE_URL", "postgres://u:p@db/notif"),
            ("DATABASE_URL", "postgres://u:p@db/shared"),
        ]);
        let cfg = DatabaseConfig::from_env(&env, "notifications").unwrap();
        assert_eq!(cfg.url, "postgres://u:p@db/notif");
        assert_eq!(cfg.schema, None);
    }

    #[test]
    fn database_shared_url_uses_schema() {
        let env = Env::from_pairs(&[("DATABASE_URL", "postgresql://db/shared")]);
        let cfg = DatabaseConfig::from_env(&env, "access-workflow").unwrap();
        assert_eq!(cfg.url, "postgresql://db/shared");
        assert_eq!(cfg.schema.as_deref(), Some("access_workflow"));
    }

    #[test]
    fn database_missing() {
        let err = DatabaseConfig::from_env(&Env::from_pairs(&[]), "identity").unwrap_err();
        assert_eq!(err.var, "IDENTITY_DATABASE_URL or DATABASE_URL");
        assert!(err.message.contains("required"));
    }

    #[test]
    fn database_bad_url_not_echoed() {
        for (var, value) in [
            ("IDENTITY_DATABASE_URL", "mysql://root:hunter22@db/x"),
            ("DATABASE_URL", "mysql://root:hunter22@db/x"),
            ("DATABASE_URL", "postgres://root:hunter22@db:notaport/x"),
        ] {
            let env = Env::from_pairs(&[(var, value)]);
            let err = DatabaseConfig::from_env(&env, "identity").unwrap_err();
            assert_eq!(err.var, var);
            let text = err.to_string();
            assert!(!text.contains("hunter22"), "{text}");
            assert!(!text.contains("root"), "{text}");
            assert!(text.contains("not shown"), "{text}");
        }
    }

    #[test]
    fn database_bad_service_name() {
        let env = Env::from_pairs(&[("DATABASE_URL", "postgres://db/shared")]);
        let err = DatabaseConfig::from_env(&env, "9lives").unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.message.contains("[a-z_][a-z0-9_]*"), "{err}");
    }

    #[test]
    fn schema_names() {
        for ok in ["identity", "_x", "a1_b2"] {
            validate_schema_name(ok).unwrap();
        }
        for bad in [
            "",
            "1a",
            "Identity",
            "a-b",
            "a\"b",
            "a;drop",
            &"a".repeat(64),
        ] {
            assert!(validate_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_url_default_and_errors() {
        assert_eq!(
            redis_url(&Env::from_pairs(&[])).unwrap(),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redis_url(&Env::from_pairs(&[("REDIS_URL", "redis://r:6380/2")])).unwrap(),
            "redis://r:6380/2"
        );
        for deployment in [
            "redis+sentinel://s1,s2:26380/cqrs?replica_acks=1",
            "redis+cluster://a:7000,b:7001?replica_acks=1",
        ] {
            assert_eq!(
                redis_url(&Env::from_pairs(&[("REDIS_URL", deployment)])).unwrap(),
                deployment
            );
        }
        let err = redis_url(&Env::from_pairs(&[("REDIS_URL", "redis+sentinel://s1")])).unwrap_err();
        assert!(err.to_string().contains("master's name"), "{err}");
        let err = redis_url(&Env::from_pairs(&[("REDIS_URL", "http://u:s3cr3tpw@r")])).unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
        assert!(!err.to_string().contains("s3cr3tpw"), "{err}");
    }

    #[test]
    fn generic_accessors() {
        let env = Env::from_pairs(&[("N", "5"), ("E", ""), ("B", "x")]);
        assert_eq!(env.required::<u32>("N").unwrap(), 5);
        assert_eq!(env.optional::<u32>("E").unwrap(), None);
        assert_eq!(env.optional::<u32>("MISSING").unwrap(), None);
        assert_eq!(env.or::<u32>("MISSING", 9).unwrap(), 9);
        let err = env.required::<u32>("E").unwrap_err();
        assert_eq!(err.to_string(), "E: is required but not set");
        let err = env.required::<u32>("B").unwrap_err();
        assert_eq!(
            err.to_string(),
            "B: invalid value \"x\": invalid digit found in string"
        );
        assert_eq!(
            env.duration_secs("MISSING", Duration::from_secs(3))
                .unwrap(),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn secret_values_are_redacted_from_parser_messages() {
        let env = Env::from_pairs(&[("API_SECRET", "abcd:efgh"), ("MY_PASSWORD", "pw")]);
        let echo = |s: &str| -> Result<u8, String> { Err(format!("bad {s} (part efgh)")) };
        let err = env.required_with("API_SECRET", echo).unwrap_err();
        assert!(!err.message.contains("abcd"), "{err}");
        assert!(!err.message.contains("efgh"), "{err}");
        let err = env.required_with("MY_PASSWORD", echo).unwrap_err();
        assert!(!err.message.contains("bad pw"), "{err}");
        assert!(is_secret_var("redis_url"));
        assert!(!is_secret_var("CQRS_CONCURRENCY_LIMIT"));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_value_is_reported() {
        let mut env = Env::from_pairs(&[]);
        env.non_utf8.insert("X".into());
        let err = env.optional::<String>("X").unwrap_err();
        assert_eq!(err.to_string(), "X: value is not valid UTF-8");
    }
}
