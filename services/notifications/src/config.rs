//! Settings of the notification service, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CQRS_SMTP_URL` | `smtp://127.0.0.1:2525` | SMTP relay (`smtp://` plain, `?tls=required` STARTTLS, `smtps://` TLS) |
//! | `CQRS_MAIL_FROM` | `CQRS <no-reply@cqrs.localhost>` | sender mailbox |
//! | `CQRS_PUBLIC_BASE_URL` | `http://localhost:8080/` | base of every link put in a mail |
//! | `NOTIFICATIONS_SMTP_TIMEOUT_SECS` | 15 | longest one send may take |
//! | `NOTIFICATIONS_WORKERS` | 1 | delivery workers in this process |
//! | `NOTIFICATIONS_BATCH_SIZE` | 50 | mails claimed per round |
//! | `NOTIFICATIONS_SEND_CONCURRENCY` | 8 | mails in flight per worker |
//! | `NOTIFICATIONS_POLL_INTERVAL_MS` | 500 | idle wait between rounds |
//! | `NOTIFICATIONS_LEASE_SECS` | the batch's worst case | how long a claim holds a mail; at least ⌈batch ÷ concurrency⌉ × (SMTP timeout + 5 s) |
//! | `NOTIFICATIONS_MAX_ATTEMPTS` | 10 | attempts before dead-lettering |
//! | `NOTIFICATIONS_RETRY_BASE_MS` | 2000 | first retry delay, doubled each time |
//! | `NOTIFICATIONS_RETRY_MAX_SECS` | 3600 | longest retry delay |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | identity's Redis, read to check that a user token's session is live (inbox and preference RPCs) |
//! | `CQRS_REDIS_NAMESPACE` | empty | identity's Redis key prefix (the same value identity has) |

use std::time::Duration;

use cqrs_runtime::config::{ConfigError, ConfigErrors, Env};
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
    /// Reads and validates the settings, reporting every bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let public_base_url = errs.take(
            env.or("CQRS_PUBLIC_BASE_URL", "http://localhost:8080/".to_owned())
                .and_then(|raw| parse_public_base_url(&raw)),
        );
        let max_attempts = errs.take(env.or("NOTIFICATIONS_MAX_ATTEMPTS", 10u32).and_then(|n| {
            ConfigError::check(n > 0, "NOTIFICATIONS_MAX_ATTEMPTS", "must be at least 1")
                .map(|()| n)
        }));
        let redis_url = errs.take(cqrs_runtime::config::redis_url(env));
        let redis_namespace = errs.take(cqrs_runtime::config::redis_namespace(env));
        let smtp_url = errs.take(env.or("CQRS_SMTP_URL", "smtp://127.0.0.1:2525".to_owned()));
        let mail_from = errs.take(env.or(
            "CQRS_MAIL_FROM",
            "CQRS <no-reply@cqrs.localhost>".to_owned(),
        ));
        let smtp_timeout = errs
            .take(env.duration_secs("NOTIFICATIONS_SMTP_TIMEOUT_SECS", Duration::from_secs(15)));
        let workers = errs.take(env.or("NOTIFICATIONS_WORKERS", 1));
        let batch_size = errs.take(env.or("NOTIFICATIONS_BATCH_SIZE", 50));
        let concurrency = errs.take(env.or("NOTIFICATIONS_SEND_CONCURRENCY", 8));
        let poll_ms = errs.take(env.or("NOTIFICATIONS_POLL_INTERVAL_MS", 500));
        let lease_set = errs.take(env.get("NOTIFICATIONS_LEASE_SECS").map(|v| v.is_some()));
        let lease = errs.take(env.duration_secs("NOTIFICATIONS_LEASE_SECS", Duration::ZERO));
        let retry_base_ms = errs.take(env.or("NOTIFICATIONS_RETRY_BASE_MS", 2000));
        let retry_max =
            errs.take(env.duration_secs("NOTIFICATIONS_RETRY_MAX_SECS", Duration::from_secs(3600)));
        // The lease covers a batch's worst case; shorter would let a mail be sent twice.
        let lease = match (batch_size, concurrency, smtp_timeout, lease_set, lease) {
            (Some(batch), Some(concurrency), Some(send_limit), Some(set), Some(lease)) => {
                let worst = WorkerConfig::worst_batch(batch, concurrency, send_limit);
                errs.check(
                    !set || lease >= worst,
                    "NOTIFICATIONS_LEASE_SECS",
                    format!(
                        "must be at least {} s: NOTIFICATIONS_BATCH_SIZE / \
                         NOTIFICATIONS_SEND_CONCURRENCY sends of up to \
                         NOTIFICATIONS_SMTP_TIMEOUT_SECS each",
                        worst.as_secs()
                    ),
                );
                Some(if set { lease } else { worst })
            }
            _ => None,
        };
        errs.finish(|| {
            Some(NotificationsConfig {
                redis_url: redis_url?,
                redis_namespace: redis_namespace?,
                smtp_url: smtp_url?,
                mail_from: mail_from?,
                public_base_url: public_base_url?,
                smtp_timeout: smtp_timeout?,
                workers: workers?,
                worker: WorkerConfig {
                    batch_size: batch_size?,
                    concurrency: concurrency?,
                    poll_interval: Duration::from_millis(poll_ms?),
                    lease: lease?,
                    retry: RetryPolicy {
                        max_attempts: max_attempts?,
                        base: Duration::from_millis(retry_base_ms?),
                        max: retry_max?,
                    },
                },
            })
        })
    }
}

/// `CQRS_PUBLIC_BASE_URL`: an absolute http(s) URL, the base of every link put in a mail.
fn parse_public_base_url(raw: &str) -> Result<Url, ConfigError> {
    let url: Url = raw
        .parse()
        .map_err(|e: url::ParseError| ConfigError::new("CQRS_PUBLIC_BASE_URL", e.to_string()))?;
    ConfigError::check(
        matches!(url.scheme(), "http" | "https") && url.host().is_some(),
        "CQRS_PUBLIC_BASE_URL",
        "must be an absolute http(s) URL",
    )?;
    Ok(url)
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

        // The lease follows the batch's worst case: 50 mails, 8 at a time, 15 s each (+5 s).
        assert_eq!(config.worker.lease, Duration::from_secs(7 * 20));
        let shorter = Env::from_pairs(&[("NOTIFICATIONS_SEND_CONCURRENCY", "50")]);
        let config = NotificationsConfig::from_env(&shorter).unwrap();
        assert_eq!(config.worker.lease, Duration::from_secs(20));

        for (var, value) in [
            ("NOTIFICATIONS_LEASE_SECS", "139"),
            ("CQRS_PUBLIC_BASE_URL", "not a url"),
            ("CQRS_PUBLIC_BASE_URL", "ftp://host/"),
            ("NOTIFICATIONS_MAX_ATTEMPTS", "0"),
            ("NOTIFICATIONS_BATCH_SIZE", "many"),
        ] {
            let err = NotificationsConfig::from_env(&Env::from_pairs(&[(var, value)])).unwrap_err();
            assert_eq!(err.only().map(|e| e.var.as_str()), Some(var), "{err}");
        }
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let errs = NotificationsConfig::from_env(&Env::from_pairs(&[
            ("CQRS_PUBLIC_BASE_URL", "ftp://host/"),
            ("NOTIFICATIONS_BATCH_SIZE", "many"),
            ("NOTIFICATIONS_LEASE_SECS", "soon"),
            ("REDIS_URL", "http://u:s3cr3tpw@r"),
        ]))
        .unwrap_err();
        let vars: Vec<&str> = errs.errors().iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "CQRS_PUBLIC_BASE_URL",
                "REDIS_URL",
                "NOTIFICATIONS_BATCH_SIZE",
                "NOTIFICATIONS_LEASE_SECS",
            ],
            "{errs}"
        );
        assert_eq!(errs.to_string().lines().count(), 4, "{errs}");
        assert!(!errs.to_string().contains("s3cr3tpw"), "{errs}");
    }
}
