//! Settings of the access service, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ACCESS_LISTEN` | `0.0.0.0:50053` | gRPC listen address (runtime) |
//! | `ACCESS_DATABASE_URL` / `DATABASE_URL` | — | Postgres (own database, or schema `access`) |
//! | `CQRS_DB_MAX_CONNECTIONS` / `CQRS_DB_ACQUIRE_TIMEOUT_SECS` | 10 / 5 | Postgres pool (runtime) |
//! | `CQRS_TOKEN_VERIFY_KEYS` | required | identity's public keys, `kid:base64url` comma list (runtime) |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | identity's Redis, read to check that a user token's session is live |
//! | `CQRS_REDIS_NAMESPACE` | empty | identity's Redis key prefix (the same value identity has) |
//! | `CQRS_RATE_LIMIT_PER_CLIENT` | `60/min` | SubmitRegistration per client address (`n/s`, `n/min`, `n/hour` or `off`; see `cqrs_edge::rate_limit`) |
//! | `CQRS_RATE_LIMIT_PER_ADDRESS` | `5/hour` | SubmitRegistration per applicant address |
//! | `IDENTITY_URL` | `http://127.0.0.1:50051` | identity: CreateAccount, LookupAccount, GetAccount, IssueServiceToken |
//! | `DIRECTORY_URL` | `http://127.0.0.1:50052` | the directory: organisations, CheckPermission, GrantRole, ListGrants, ListAdministrators |
//! | `NOTIFICATIONS_URL` | `http://127.0.0.1:50054` | where the outbox relay delivers mail and in-app notifications |
//! | `ACCESS_CLIENT_ID` | `access` | this service's client id at identity |
//! | `ACCESS_CLIENT_SECRET` | — | its client secret: service tokens come from identity's IssueServiceToken |
//! | `CQRS_TOKEN_SIGNING_KEY` | — | without a client secret: service tokens are signed locally with this key. One of the two is required |
//! | `ACCESS_CALL_TIMEOUT_SECS` | 5 | longest call to identity or the directory (a request's own deadline is shorter when it is); also bounds how long a workflow row stays locked across those calls |
//! | `ACCESS_INVITATION_TTL_SECS` | 604800 (7 days) | how long an invitation link works (at most 90 days) |
//! | `ACCESS_ACCOUNT_REALM` | `NATIONAL` | realm of the accounts created for accepted invitations and approved registrations (`NATIONAL` or `LOCAL`) |
//! | `ACCESS_SELF_REGISTRATION` | `true` | `false` turns SubmitRegistration off (FAILED_PRECONDITION) |
//! | `ACCESS_EXPIRY_SWEEP_SECS` | 60 | how often run-out invitations are recorded as EXPIRED (they count as expired at once either way) |
//! | `ACCESS_OUTBOX_POLL_INTERVAL_MS` | 1000 | the outbox relay's idle wait |
//! | `CQRS_GENERIC_EMAIL_LOCAL_PARTS` | built-in list (`admin`, `info`, `reception`, …) | refused local parts; the same variable and rule as identity's |
//! | `CQRS_GENERIC_EMAIL_DOMAINS` | none | refused domains (and their subdomains); as identity's |
//!
//! The runtime's common settings apply too: `CQRS_CORS_ALLOWED_ORIGINS`,
//! `CQRS_REQUEST_TIMEOUT_SECS`, `CQRS_CONCURRENCY_LIMIT`, `CQRS_SHUTDOWN_GRACE_SECS`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, `RUST_LOG`.

use std::time::Duration;

use cqrs_edge::rate_limit::RateLimitConfig;
use cqrs_rules::account::Realm;
use cqrs_runtime::config::{ConfigError, ConfigErrors, Env, nonzero, parse_endpoint};
use cqrs_runtime::credentials::ServiceCredentials;

use crate::domain::rules::GenericMailboxRules;

/// The longest invitation lifetime accepted: links are credentials, and a quarter of a year
/// is already generous.
const MAX_INVITATION_TTL: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// The workflow rules that deployments choose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowSettings {
    pub invitation_ttl: Duration,
    pub account_realm: Realm,
    pub self_registration: bool,
    pub generic_mailboxes: GenericMailboxRules,
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        WorkflowSettings {
            invitation_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            account_realm: Realm::National,
            self_registration: true,
            generic_mailboxes: GenericMailboxRules::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AccessConfig {
    pub redis_url: String,
    pub redis_namespace: String,
    pub identity_url: String,
    pub directory_url: String,
    pub notifications_url: String,
    pub credentials: ServiceCredentials,
    pub call_timeout: Duration,
    pub sweep_interval: Duration,
    pub outbox_poll_interval: Duration,
    pub workflow: WorkflowSettings,
    /// `CQRS_RATE_LIMIT_PER_CLIENT` / `CQRS_RATE_LIMIT_PER_ADDRESS` (SubmitRegistration).
    pub rate_limits: RateLimitConfig,
}

fn endpoint(env: &Env, name: &str, default: &str) -> Result<String, ConfigError> {
    Ok(env
        .optional_with(name, parse_endpoint)?
        .unwrap_or_else(|| default.to_owned()))
}

fn parse_bool(raw: &str) -> Result<bool, &'static str> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false"),
    }
}

fn parse_realm(raw: &str) -> Result<Realm, &'static str> {
    Realm::parse(&raw.to_ascii_uppercase()).ok_or("expected NATIONAL or LOCAL")
}

fn positive(env: &Env, name: &str, default: Duration) -> Result<Duration, ConfigError> {
    env.duration_secs(name, default).and_then(nonzero(name))
}

impl AccessConfig {
    /// Reads and validates the settings, reporting every bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let identity_url = errs.take(endpoint(env, "IDENTITY_URL", "http://127.0.0.1:50051"));
        let directory_url = errs.take(endpoint(env, "DIRECTORY_URL", "http://127.0.0.1:50052"));
        let notifications_url =
            errs.take(endpoint(env, "NOTIFICATIONS_URL", "http://127.0.0.1:50054"));
        let credentials = errs.take(ServiceCredentials::from_env(env, crate::SERVICE));
        let call_timeout = errs.take(positive(
            env,
            "ACCESS_CALL_TIMEOUT_SECS",
            Duration::from_secs(5),
        ));
        let sweep_interval = errs.take(positive(
            env,
            "ACCESS_EXPIRY_SWEEP_SECS",
            Duration::from_secs(60),
        ));
        let poll_ms = errs.take(
            env.or("ACCESS_OUTBOX_POLL_INTERVAL_MS", 1000u64)
                .and_then(nonzero("ACCESS_OUTBOX_POLL_INTERVAL_MS")),
        );

        let defaults = WorkflowSettings::default();
        let invitation_ttl = errs.take(
            env.or(
                "ACCESS_INVITATION_TTL_SECS",
                defaults.invitation_ttl.as_secs(),
            )
            .map(Duration::from_secs)
            .and_then(|ttl| {
                ConfigError::check(
                    !ttl.is_zero() && ttl <= MAX_INVITATION_TTL,
                    "ACCESS_INVITATION_TTL_SECS",
                    "must be between 1 and 7776000 (90 days)",
                )
                .map(|()| ttl)
            }),
        );
        let account_realm = errs.take(
            env.optional_with("ACCESS_ACCOUNT_REALM", parse_realm)
                .map(|realm| realm.unwrap_or(defaults.account_realm)),
        );
        let self_registration = errs.take(
            env.optional_with("ACCESS_SELF_REGISTRATION", parse_bool)
                .map(|on| on.unwrap_or(defaults.self_registration)),
        );
        // The same variables and rule as identity's, so both refuse the same addresses.
        let generic_mailboxes = errs.take(cqrs_runtime::config::generic_mailbox_rules(env));
        let redis_url = errs.take(cqrs_runtime::config::redis_url(env));
        let redis_namespace = errs.take(cqrs_runtime::config::redis_namespace(env));
        let rate_limits = errs.take(RateLimitConfig::from_env(env));

        errs.finish(|| {
            Some(AccessConfig {
                rate_limits: rate_limits?,
                redis_url: redis_url?,
                redis_namespace: redis_namespace?,
                identity_url: identity_url?,
                directory_url: directory_url?,
                notifications_url: notifications_url?,
                credentials: credentials?,
                call_timeout: call_timeout?,
                sweep_interval: sweep_interval?,
                outbox_poll_interval: Duration::from_millis(poll_ms?),
                workflow: WorkflowSettings {
                    invitation_ttl: invitation_ttl?,
                    account_realm: account_realm?,
                    self_registration: self_registration?,
                    generic_mailboxes: generic_mailboxes?,
                },
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn env_with(pairs: &[(&str, &str)]) -> Env {
        let mut env = Env::from_pairs(&[("ACCESS_CLIENT_SECRET", "s3cret-value")]);
        for (k, v) in pairs {
            env.set(k, v);
        }
        env
    }

    #[test]
    fn defaults() {
        let c = AccessConfig::from_env(&env_with(&[])).unwrap();
        assert_eq!(c.identity_url, "http://127.0.0.1:50051");
        assert_eq!(c.directory_url, "http://127.0.0.1:50052");
        assert_eq!(c.notifications_url, "http://127.0.0.1:50054");
        assert_eq!(c.credentials.client_id(), "access");
        assert_eq!(c.call_timeout, Duration::from_secs(5));
        assert_eq!(c.workflow, WorkflowSettings::default());
        assert_eq!(c.workflow.invitation_ttl, Duration::from_secs(604_800));
        assert!(c.workflow.self_registration);
        assert!(c.workflow.generic_mailboxes.is_generic("info@x.nhs.uk"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn settings() {
        let c = AccessConfig::from_env(&env_with(&[
            ("ACCESS_INVITATION_TTL_SECS", "3600"),
            ("ACCESS_ACCOUNT_REALM", "local"),
            ("ACCESS_SELF_REGISTRATION", "off"),
            ("CQRS_GENERIC_EMAIL_LOCAL_PARTS", "frontdesk"),
            ("DIRECTORY_URL", "http://directory:50052"),
        ]))
        .unwrap();
        assert_eq!(c.workflow.invitation_ttl, Duration::from_secs(3600));
        assert_eq!(c.workflow.account_realm, Realm::Local);
        assert!(!c.workflow.self_registration);
        assert!(c.workflow.generic_mailboxes.is_generic("frontdesk@x.org"));
        assert!(!c.workflow.generic_mailboxes.is_generic("info@x.org"));
        assert_eq!(c.directory_url, "http://directory:50052");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("ACCESS_INVITATION_TTL_SECS", "0"),
            ("ACCESS_INVITATION_TTL_SECS", "7776001"),
            ("ACCESS_INVITATION_TTL_SECS", "soon"),
            ("ACCESS_ACCOUNT_REALM", "GALACTIC"),
            ("ACCESS_SELF_REGISTRATION", "maybe"),
            ("ACCESS_CALL_TIMEOUT_SECS", "0"),
            ("ACCESS_EXPIRY_SWEEP_SECS", "-1"),
            ("ACCESS_OUTBOX_POLL_INTERVAL_MS", "0"),
            ("IDENTITY_URL", "identity:50051"),
            ("DIRECTORY_URL", "directory"),
            ("NOTIFICATIONS_URL", "ftp://x"),
            ("ACCESS_CLIENT_ID", "bad id"),
        ] {
            let err = AccessConfig::from_env(&env_with(&[(var, value)])).unwrap_err();
            assert_eq!(
                err.only().map(|e| e.var.as_str()),
                Some(var),
                "{var}={value}: {err}"
            );
        }
        let err = AccessConfig::from_env(&Env::from_pairs(&[])).unwrap_err();
        assert_eq!(
            err.only().map(|e| e.var.as_str()),
            Some("ACCESS_CLIENT_SECRET or CQRS_TOKEN_SIGNING_KEY")
        );
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let errs = AccessConfig::from_env(&Env::from_pairs(&[
            ("DIRECTORY_URL", "directory"),
            ("ACCESS_INVITATION_TTL_SECS", "0"),
            ("ACCESS_SELF_REGISTRATION", "maybe"),
        ]))
        .unwrap_err();
        let vars: Vec<&str> = errs.errors().iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "DIRECTORY_URL",
                "ACCESS_CLIENT_SECRET or CQRS_TOKEN_SIGNING_KEY",
                "ACCESS_INVITATION_TTL_SECS",
                "ACCESS_SELF_REGISTRATION",
            ],
            "{errs}"
        );
        assert_eq!(errs.to_string().lines().count(), 4, "{errs}");
    }
}
