//! Settings of the directory service, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DIRECTORY_LISTEN` | `0.0.0.0:50052` | gRPC listen address (runtime) |
//! | `DIRECTORY_DATABASE_URL` / `DATABASE_URL` | — | Postgres (own database, or schema `directory`) |
//! | `CQRS_DB_MAX_CONNECTIONS` / `CQRS_DB_ACQUIRE_TIMEOUT_SECS` | 10 / 5 | Postgres pool (runtime) |
//! | `CQRS_TOKEN_VERIFY_KEYS` | required | identity's public keys, `kid:base64url` comma list (runtime) |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | identity's Redis, read to check that a user token's session is live |
//! | `CQRS_REDIS_NAMESPACE` | empty | identity's Redis key prefix (the same value identity has) |
//! | `IDENTITY_URL` | `http://127.0.0.1:50051` | the identity service: EndSessions after a revocation, IssueServiceToken |
//! | `DIRECTORY_CLIENT_ID` | `directory` | this service's client id at identity |
//! | `DIRECTORY_CLIENT_SECRET` | — | its client secret: service tokens come from identity's IssueServiceToken (cached until shortly before expiry) |
//! | `CQRS_TOKEN_SIGNING_KEY` | — | without a client secret: service tokens are signed locally with this key. One of the two is required |
//! | `DIRECTORY_IDENTITY_TIMEOUT_SECS` | 5 | longest call to identity (token and EndSessions); a request's own deadline is shorter when it is |
//! | `DIRECTORY_REVOCATION_POLL_INTERVAL_MS` | 1000 | pending session ends: the background task's idle wait |
//! | `DIRECTORY_REVOCATION_RETRY_BASE_MS` | 1000 | wait after a failed EndSessions; doubles per failure |
//! | `DIRECTORY_REVOCATION_RETRY_MAX_SECS` | 60 | longest wait between EndSessions attempts |
//!
//! The runtime's common settings apply too: `CQRS_CORS_ALLOWED_ORIGINS`,
//! `CQRS_REQUEST_TIMEOUT_SECS`, `CQRS_CONCURRENCY_LIMIT`, `CQRS_SHUTDOWN_GRACE_SECS`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `RUST_LOG`.

use std::time::Duration;

use cqrs_runtime::config::{ConfigError, ConfigErrors, Env, nonzero, parse_endpoint};
pub use cqrs_runtime::credentials::ServiceCredentials;

use crate::session_ender::RevocationConfig;

#[derive(Clone, Debug)]
pub struct DirectoryConfig {
    pub redis_url: String,
    pub redis_namespace: String,
    pub identity_url: String,
    pub credentials: ServiceCredentials,
    pub revocations: RevocationConfig,
}

impl DirectoryConfig {
    /// Reads and validates the settings, reporting every bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let identity_url = errs.take(
            env.optional_with("IDENTITY_URL", parse_endpoint)
                .map(|url| url.unwrap_or_else(|| "http://127.0.0.1:50051".to_owned())),
        );
        let credentials = errs.take(ServiceCredentials::from_env(env, crate::SERVICE));

        let call_timeout = errs.take(
            env.duration_secs("DIRECTORY_IDENTITY_TIMEOUT_SECS", Duration::from_secs(5))
                .and_then(nonzero("DIRECTORY_IDENTITY_TIMEOUT_SECS")),
        );
        let defaults = RevocationConfig::default();
        let millis = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            env.or(name, u64::try_from(default.as_millis()).unwrap_or(u64::MAX))
                .and_then(nonzero(name))
                .map(Duration::from_millis)
        };
        let poll_interval = errs.take(millis(
            "DIRECTORY_REVOCATION_POLL_INTERVAL_MS",
            defaults.poll_interval,
        ));
        let retry_base = errs.take(millis(
            "DIRECTORY_REVOCATION_RETRY_BASE_MS",
            defaults.retry_base,
        ));
        let retry_max =
            errs.take(env.duration_secs("DIRECTORY_REVOCATION_RETRY_MAX_SECS", defaults.retry_max));
        if let (Some(base), Some(max)) = (retry_base, retry_max) {
            errs.check(
                max >= base,
                "DIRECTORY_REVOCATION_RETRY_MAX_SECS",
                "must not be below DIRECTORY_REVOCATION_RETRY_BASE_MS",
            );
        }
        let redis_url = errs.take(cqrs_runtime::config::redis_url(env));
        let redis_namespace = errs.take(cqrs_runtime::config::redis_namespace(env));

        errs.finish(|| {
            Some(DirectoryConfig {
                redis_url: redis_url?,
                redis_namespace: redis_namespace?,
                identity_url: identity_url?,
                credentials: credentials?,
                revocations: RevocationConfig {
                    poll_interval: poll_interval?,
                    retry_base: retry_base?,
                    retry_max: retry_max?,
                    call_timeout: call_timeout?,
                    ..defaults
                },
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cqrs_auth::SigningKey;

    #[test]
    fn defaults_with_a_client_secret() {
        let env = Env::from_pairs(&[("DIRECTORY_CLIENT_SECRET", "s3cret-value")]);
        let c = DirectoryConfig::from_env(&env).unwrap();
        assert_eq!(c.identity_url, "http://127.0.0.1:50051");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.redis_namespace, "");
        assert_eq!(c.credentials.client_id(), "directory");
        assert!(matches!(
            c.credentials,
            ServiceCredentials::ClientSecret { .. }
        ));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.revocations, RevocationConfig::default());
    }

    #[test]
    fn signing_key_fallback_and_errors() {
        let key = SigningKey::generate("k1").to_env_value();
        let env = Env::from_pairs(&[
            ("CQRS_TOKEN_SIGNING_KEY", &key),
            ("DIRECTORY_CLIENT_ID", "dir-2"),
            ("IDENTITY_URL", "http://identity:50051"),
            ("DIRECTORY_REVOCATION_RETRY_BASE_MS", "50"),
        ]);
        let c = DirectoryConfig::from_env(&env).unwrap();
        assert!(matches!(
            c.credentials,
            ServiceCredentials::SigningKey { .. }
        ));
        assert_eq!(c.credentials.client_id(), "dir-2");
        assert_eq!(c.identity_url, "http://identity:50051");
        assert_eq!(c.revocations.retry_base, Duration::from_millis(50));
        assert!(!format!("{c:?}").contains(&key));

        let var_of = |errs: ConfigErrors| errs.only().map(|e| e.var.clone());
        let err = DirectoryConfig::from_env(&Env::from_pairs(&[])).unwrap_err();
        assert_eq!(
            var_of(err).as_deref(),
            Some("DIRECTORY_CLIENT_SECRET or CQRS_TOKEN_SIGNING_KEY")
        );
        let err = DirectoryConfig::from_env(&Env::from_pairs(&[
            ("DIRECTORY_CLIENT_SECRET", "x"),
            ("IDENTITY_URL", "identity:50051"),
        ]))
        .unwrap_err();
        assert_eq!(var_of(err).as_deref(), Some("IDENTITY_URL"));
        let err = DirectoryConfig::from_env(&Env::from_pairs(&[
            ("DIRECTORY_CLIENT_SECRET", "x"),
            ("DIRECTORY_CLIENT_ID", "bad id"),
        ]))
        .unwrap_err();
        assert_eq!(var_of(err).as_deref(), Some("DIRECTORY_CLIENT_ID"));
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let errs = DirectoryConfig::from_env(&Env::from_pairs(&[
            ("IDENTITY_URL", "identity:50051"),
            ("DIRECTORY_IDENTITY_TIMEOUT_SECS", "0"),
            ("DIRECTORY_REVOCATION_RETRY_BASE_MS", "5000"),
            ("DIRECTORY_REVOCATION_RETRY_MAX_SECS", "1"),
        ]))
        .unwrap_err();
        let vars: Vec<&str> = errs.errors().iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "IDENTITY_URL",
                "DIRECTORY_CLIENT_SECRET or CQRS_TOKEN_SIGNING_KEY",
                "DIRECTORY_IDENTITY_TIMEOUT_SECS",
                "DIRECTORY_REVOCATION_RETRY_MAX_SECS",
            ],
            "{errs}"
        );
        assert_eq!(errs.to_string().lines().count(), 4, "{errs}");
    }
}
