//! Settings of the notification service, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CQRS_SMTP_URL` | `smtp://127.0.0.1:2525` | SMTP relay (`smtp://` plain, `?tls=required` STARTTLS, `smtps://` TLS) |
//! | `CQRS_MAIL_FROM` | `CQRS <no-reply@cqrs.localhost>` | sender mailbox |
//! | `CQRS_PUBLIC_BASE_URL` | `http://localhost:8080/` | base of every link put in a mail |
//! | `NOTIFICATIONS_SMTP_TIMEOUT_SECS` | 15 | per SMTP conversation |
//! | `NOTIFICATIONS_WORKERS` | 1 | delivery workers in this process |
//! | `NOTIFICATIONS_BATCH_SIZE` | 50 | mails claimed per round |
//! | `NOTIFICATIONS_SEND_CONCURRENCY` | 8 | mails in flight per worker |
//! | `NOTIFICATIONS_POLL_INTERVAL_MS` | 500 | idle wait between rounds |
//! | `NOTIFICATIONS_LEASE_SECS` | 120 | how long a claim holds a mail |
//! | `NOTIFICATIONS_MAX_ATTEMPTS` | 10 | attempts before dead-lettering |
//! | `NOTIFICATIONS_RETRY_BASE_MS` | 2000 | first retry delay, doubled each time |
//! | `NOTIFICATIONS_RETRY_MAX_SECS` | 3600 | longest retry delay |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | identity's Redis, read to check that a user token's session is live (inbox and preference RPCs) |
//! | `CQRS_REDIS_NAMESPACE` | empty | identity's Redis key prefix (the same value identity has) |

use std::time::Duration;

use cqrs_runtime::config::{ConfigError, Env};
use url::Url;

use crate::domain::RetryPolicy;
use crate::worker::WorkerConfig;

#[derive(Clone, Debug)]
pub struct NotificationsConfig {
    pub smtp_url: String,
    pub mail_from: String,
    pub public_base_url: Url,
    pub smtp_timeout: Duration,
    pub workers: usize,
    pub worker: WorkerConfig,
    /// Identity's Redis: user tokens are accepted only while their session lives there.
    pub redis_url: String,
    pub redis_namespace: String,
}

impl NotificationsConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let public_base_url: Url = env
            .or("CQRS_PUBLIC_BASE_URL", "http://localhost:8080/".to_owned())?
            .parse()
            .map_err(|e: url::ParseError| {
                ConfigError::new("CQRS_PUBLIC_BASE_URL", e.to_string())
            })?;
        if !matches!(public_base_url.scheme(), "http" | "https") || public_base_url.host().is_none()
        {
            return Err(ConfigError::new(
                "CQRS_PUBLIC_BASE_URL",
                "must be an absolute http(s) URL",
            ));
        }
        let max_attempts: u32 = env.or("NOTIFICATIONS_MAX_ATTEMPTS", 10)?;
        if max_attempts == 0 {
            return Err(ConfigError::new(
                "NOTIFICATIONS_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        Ok(NotificationsConfig {
            redis_url: cqrs_runtime::config::redis_url(env)?,
            redis_namespace: env.get("CQRS_REDIS_NAMESPACE")?.unwrap_or("").to_owned(),
            smtp_url: env.or("CQRS_SMTP_URL", "smtp://127.0.0.1:2525".to_owned())?,
            mail_from: env.or(
                "CQRS_MAIL_FROM",
                "CQRS <no-reply@cqrs.localhost>".to_owned(),
            )?,
            public_base_url,
            smtp_timeout: env
                .duration_secs("NOTIFICATIONS_SMTP_TIMEOUT_SECS", Duration::from_secs(15))?,
            workers: env.or("NOTIFICATIONS_WORKERS", 1)?,
            worker: WorkerConfig {
                batch_size: env.or("NOTIFICATIONS_BATCH_SIZE", 50)?,
                concurrency: env.or("NOTIFICATIONS_SEND_CONCURRENCY", 8)?,
                poll_interval: Duration::from_millis(
                    env.or("NOTIFICATIONS_POLL_INTERVAL_MS", 500)?,
                ),
                lease: env.duration_secs("NOTIFICATIONS_LEASE_SECS", Duration::from_secs(120))?,
                retry: RetryPolicy {
                    max_attempts,
                    base: Duration::from_millis(env.or("NOTIFICATIONS_RETRY_BASE_MS", 2000)?),
                    max: env
                        .duration_secs("NOTIFICATIONS_RETRY_MAX_SECS", Duration::from_secs(3600))?,
                },
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let config = NotificationsConfig::from_env(&Env::from_pairs(&[])).unwrap();
        assert_eq!(config.worker.retry.max_attempts, 10);
        assert_eq!(config.public_base_url.as_str(), "http://localhost:8080/");
        assert_eq!(config.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(config.redis_namespace, "");

        for (var, value) in [
            ("CQRS_PUBLIC_BASE_URL", "not a url"),
            ("CQRS_PUBLIC_BASE_URL", "ftp://host/"),
            ("NOTIFICATIONS_MAX_ATTEMPTS", "0"),
            ("NOTIFICATIONS_BATCH_SIZE", "many"),
        ] {
            let err = NotificationsConfig::from_env(&Env::from_pairs(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var);
        }
    }
}
