//! How a service authenticates its own outgoing calls (to identity, the directory, …): with
//! client credentials exchanged at identity's `IssueServiceToken`, or — in development, tests
//! and deployments that share the key — with service tokens it signs itself.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `<SERVICE>_CLIENT_ID` | the service name in lower case | this service's client id at identity |
//! | `<SERVICE>_CLIENT_SECRET` | — | its client secret: tokens come from identity's IssueServiceToken (cached until shortly before expiry) |
//! | `CQRS_TOKEN_SIGNING_KEY` | — | without a client secret: tokens are signed locally with this key. One of the two is required |

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cqrs_auth::{IdentityTokenSource, IssuerTokenSource, SigningKey, TokenIssuer, TokenSource};
use tonic::transport::{Channel, Endpoint};

use crate::clock::Clock;
use crate::config::{ConfigError, ConfigErrors, Env, env_prefix};

/// Lifetime of locally signed service tokens (the shortest identity issues).
const LOCAL_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Longest client id identity accepts.
const MAX_CLIENT_ID_LEN: usize = 64;

/// How this service authenticates to other services.
#[derive(Clone)]
pub enum ServiceCredentials {
    /// Client credentials for identity's IssueServiceToken (a real deployment).
    ClientSecret { client_id: String, secret: String },
    /// Tokens signed locally (development, tests, or a deployment that shares the key).
    SigningKey {
        client_id: String,
        key: Box<SigningKey>,
    },
}

impl ServiceCredentials {
    /// Reads `<SERVICE>_CLIENT_ID`, `<SERVICE>_CLIENT_SECRET` and `CQRS_TOKEN_SIGNING_KEY`
    /// (see the module docs); `service` is the service's name, e.g. `"directory"`. Every bad
    /// variable is reported.
    pub fn from_env(env: &Env, service: &str) -> Result<Self, ConfigErrors> {
        let prefix = env_prefix(service);
        let id_var = format!("{prefix}_CLIENT_ID");
        let secret_var = format!("{prefix}_CLIENT_SECRET");
        let mut errs = ConfigErrors::default();
        let client_id = errs.take(
            env.or(&id_var, service.to_ascii_lowercase())
                .and_then(|id| {
                    let ok = id.len() <= MAX_CLIENT_ID_LEN
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                    ConfigError::check(ok, &id_var, "must be 1-64 characters of [A-Za-z0-9._-]")
                        .map(|()| id)
                }),
        );
        let secret = errs.take(env.get(&secret_var));
        let key =
            errs.take(env.optional_with("CQRS_TOKEN_SIGNING_KEY", SigningKey::from_env_value));
        if let (Some(None), Some(None)) = (&secret, &key) {
            errs.push(ConfigError::new(
                format!("{secret_var} or CQRS_TOKEN_SIGNING_KEY"),
                "one is required: the service's calls to other services need service tokens",
            ));
        }
        errs.finish(|| {
            let client_id = client_id?;
            Some(match (secret?, key?) {
                (Some(secret), _) => ServiceCredentials::ClientSecret {
                    client_id,
                    secret: secret.to_owned(),
                },
                (None, Some(key)) => ServiceCredentials::SigningKey {
                    client_id,
                    key: Box::new(key),
                },
                (None, None) => return None,
            })
        })
    }

    pub fn client_id(&self) -> &str {
        match self {
            ServiceCredentials::ClientSecret { client_id, .. }
            | ServiceCredentials::SigningKey { client_id, .. } => client_id,
        }
    }
}

// Never print the secret or the key.
impl fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            ServiceCredentials::ClientSecret { .. } => "ClientSecret",
            ServiceCredentials::SigningKey { .. } => "SigningKey",
        };
        f.debug_struct(kind)
            .field("client_id", &self.client_id())
            .finish_non_exhaustive()
    }
}

/// A channel to another service (identity, the directory) that connects on first use — the
/// peer may start after this service — and reconnects by itself.
pub fn lazy_channel(url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(timeout)
        .connect_lazy())
}

/// A channel to the identity service (see [`lazy_channel`]).
pub fn identity_channel(url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    lazy_channel(url, timeout)
}

/// Where this service's service tokens come from (see [`ServiceCredentials`]), with token
/// time from `clock` (the system clock: the services verifying them use it too).
pub fn token_source(
    credentials: &ServiceCredentials,
    identity: Channel,
    timeout: Duration,
    clock: Arc<dyn Clock>,
) -> Arc<dyn TokenSource> {
    match credentials {
        ServiceCredentials::ClientSecret { client_id, secret } => Arc::new(
            IdentityTokenSource::new(identity, client_id.clone(), secret.clone(), timeout, clock),
        ),
        ServiceCredentials::SigningKey { client_id, key } => Arc::new(IssuerTokenSource::new(
            Arc::new(TokenIssuer::new((**key).clone(), LOCAL_TOKEN_TTL)),
            client_id.clone(),
            clock,
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_and_errors() {
        let env = Env::from_pairs(&[("ACCESS_CLIENT_SECRET", "s3cret-value")]);
        let c = ServiceCredentials::from_env(&env, "access").unwrap();
        assert_eq!(c.client_id(), "access");
        assert!(matches!(c, ServiceCredentials::ClientSecret { .. }));
        assert!(!format!("{c:?}").contains("s3cret"));

        let key = SigningKey::generate("k1").to_env_value();
        let env = Env::from_pairs(&[
            ("CQRS_TOKEN_SIGNING_KEY", &key),
            ("ACCESS_CLIENT_ID", "access-2"),
        ]);
        let c = ServiceCredentials::from_env(&env, "access").unwrap();
        assert!(matches!(c, ServiceCredentials::SigningKey { .. }));
        assert_eq!(c.client_id(), "access-2");
        assert!(!format!("{c:?}").contains(&key));

        let err = ServiceCredentials::from_env(&Env::from_pairs(&[]), "access").unwrap_err();
        assert_eq!(
            err.only().map(|e| e.var.as_str()),
            Some("ACCESS_CLIENT_SECRET or CQRS_TOKEN_SIGNING_KEY")
        );
        let err = ServiceCredentials::from_env(
            &Env::from_pairs(&[
                ("ACCESS_CLIENT_SECRET", "x"),
                ("ACCESS_CLIENT_ID", "bad id"),
            ]),
            "access",
        )
        .unwrap_err();
        assert_eq!(err.only().map(|e| e.var.as_str()), Some("ACCESS_CLIENT_ID"));
    }

    #[test]
    fn every_bad_variable_is_reported() {
        let errs = ServiceCredentials::from_env(
            &Env::from_pairs(&[
                ("ACCESS_CLIENT_ID", "bad id"),
                ("CQRS_TOKEN_SIGNING_KEY", "k1:not-a-key-value"),
            ]),
            "access",
        )
        .unwrap_err();
        let vars: Vec<&str> = errs.errors().iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            ["ACCESS_CLIENT_ID", "CQRS_TOKEN_SIGNING_KEY"],
            "{errs}"
        );
        assert!(!errs.to_string().contains("not-a-key-value"), "{errs}");
        // Neither a secret nor a key, and a bad id: both said.
        let errs = ServiceCredentials::from_env(
            &Env::from_pairs(&[("ACCESS_CLIENT_ID", "bad id")]),
            "access",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs}");
        assert!(errs.names("ACCESS_CLIENT_SECRET or CQRS_TOKEN_SIGNING_KEY"));
    }
}
