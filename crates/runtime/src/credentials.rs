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

use crate::config::{ConfigError, Env, env_prefix};

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
    /// (see the module docs); `service` is the service's name, e.g. `"directory"`.
    pub fn from_env(env: &Env, service: &str) -> Result<Self, ConfigError> {
        let prefix = env_prefix(service);
        let id_var = format!("{prefix}_CLIENT_ID");
        let secret_var = format!("{prefix}_CLIENT_SECRET");
        let client_id: String = env.or(&id_var, service.to_ascii_lowercase())?;
        let client_id_ok = client_id.len() <= MAX_CLIENT_ID_LEN
            && client_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !client_id_ok {
            return Err(ConfigError::new(
                id_var,
                "must be 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        match (
            env.get(&secret_var)?,
            env.optional_with("CQRS_TOKEN_SIGNING_KEY", SigningKey::from_env_value)?,
        ) {
            (Some(secret), _) => Ok(ServiceCredentials::ClientSecret {
                client_id,
                secret: secret.to_owned(),
            }),
            (None, Some(key)) => Ok(ServiceCredentials::SigningKey {
                client_id,
                key: Box::new(key),
            }),
            (None, None) => Err(ConfigError::new(
                format!("{secret_var} or CQRS_TOKEN_SIGNING_KEY"),
                "one is required: the service's calls to other services need service tokens",
            )),
        }
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

/// Where this service's service tokens come from (see [`ServiceCredentials`]).
pub fn token_source(
    credentials: &ServiceCredentials,
    identity: Channel,
    timeout: Duration,
) -> Arc<dyn TokenSource> {
    match credentials {
        ServiceCredentials::ClientSecret { client_id, secret } => Arc::new(
            IdentityTokenSource::new(identity, client_id.clone(), secret.clone(), timeout),
        ),
        ServiceCredentials::SigningKey { client_id, key } => Arc::new(IssuerTokenSource::new(
            Arc::new(TokenIssuer::new((**key).clone(), LOCAL_TOKEN_TTL)),
            client_id.clone(),
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
        assert_eq!(err.var, "ACCESS_CLIENT_SECRET or CQRS_TOKEN_SIGNING_KEY");
        let err = ServiceCredentials::from_env(
            &Env::from_pairs(&[
                ("ACCESS_CLIENT_SECRET", "x"),
                ("ACCESS_CLIENT_ID", "bad id"),
            ]),
            "access",
        )
        .unwrap_err();
        assert_eq!(err.var, "ACCESS_CLIENT_ID");
    }
}
