//! Settings of the identity service, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `IDENTITY_LISTEN` | `0.0.0.0:50051` | gRPC listen address (runtime) |
//! | `IDENTITY_DATABASE_URL` / `DATABASE_URL` | — | Postgres (own database, or schema `identity`) |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | lock-out counters and sessions |
//! | `CQRS_REDIS_NAMESPACE` | empty | prefix of every Redis key; session keys are `cqrs_auth::session_key(ns, account, sid)` (no braces: the account id is the Cluster hash tag) |
//! | `CQRS_TOKEN_SIGNING_KEY` | required | `kid:base64url(32-byte Ed25519 seed)`; signs access tokens |
//! | `CQRS_TOKEN_VERIFY_KEYS` | the signing key's public key | comma list of `kid:base64url(public key)`; served by GetSigningKeys next to the signing key's (rotation) |
//! | `CQRS_ACCESS_TOKEN_TTL_SECS` | 600 | access-token lifetime, 300–900 |
//! | `CQRS_SESSION_IDLE_TTL_SECS` | 1800 | a session ends after this long unused |
//! | `CQRS_SESSION_ABSOLUTE_TTL_SECS` | 43200 | a session ends this long after sign-in |
//! | `CQRS_RESET_LINK_TTL_SECS` | 3600 | reset links expire |
//! | `CQRS_REGISTRATION_LINK_TTL_SECS` | 604800 | registration links expire |
//! | `CQRS_PASSWORD_PROFILE_NATIONAL` | `cqrs_national` | password profile of NATIONAL accounts (`cqrs_national`, `cqrs_local`, `nist_800_63b`) |
//! | `CQRS_PASSWORD_PROFILE_LOCAL` | `cqrs_local` | password profile of LOCAL accounts |
//! | `CQRS_GENERIC_EMAIL_LOCAL_PARTS` | built-in list (`admin`, `info`, `reception`, …) | comma list of refused local parts; replaces the built-in list |
//! | `CQRS_GENERIC_EMAIL_DOMAINS` | none | comma list of refused domains (and their subdomains) |
//! | `CQRS_LOCKOUT_TEMPORARY_AFTER` | 5 | consecutive failures before temporary locks start |
//! | `CQRS_LOCKOUT_BASE_WAIT_SECS` | 60 | first temporary lock; doubles per further failure |
//! | `CQRS_LOCKOUT_MAX_WAIT_SECS` | 3600 | longest temporary lock |
//! | `CQRS_LOCKOUT_PERMANENT_AFTER` | 10 | consecutive failures that lock permanently (at most 100) |
//! | `CQRS_LOCKOUT_FAILURE_WINDOW_SECS` | 86400 | the failure counter is forgotten this long after the last failure |
//! | `CQRS_SECOND_FACTOR_ROLES` | `SERVICE_DESK,COMMISSIONING_ACCOUNT_ADMINISTRATOR,COMMISSIONING_APPROVER` | roles that need an authenticator app before they can be used (comma list, or `none`) |
//! | `CQRS_STEP_UP_WINDOW_SECS` | 900 | how long a second-factor check counts for administrative actions (step-up) |
//! | `CQRS_OIDC_PROVIDERS` | none | upstream OpenID providers for single sign-on, by id (comma list, e.g. `nhsmail`); each needs the four below |
//! | `CQRS_OIDC_<ID>_ISSUER` | required per provider | the provider's issuer URL (discovery is at `/.well-known/openid-configuration` under it) |
//! | `CQRS_OIDC_<ID>_CLIENT_ID` / `CQRS_OIDC_<ID>_CLIENT_SECRET` | required per provider | this suite's client at the provider |
//! | `CQRS_OIDC_<ID>_DOMAINS` | none (any) | e-mail domains that may sign in through it (comma list, e.g. `nhs.net`) |
//! | `CQRS_OIDC_<ID>_LABEL` | the id | the button's words ("Sign in with …") |
//! | `CQRS_OIDC_<ID>_MFA_SATISFIES` | `false` | whether the provider's MFA (`amr` of `mfa`, `otp`, `hwk`, `swk` or `sms`) counts as the second factor |
//! | `CQRS_OIDC_REDIRECT_URI` | required with providers | where providers send the browser back: the gateway's `sign-in/sso/callback` page |
//! | `IDENTITY_BREACHED_PASSWORDS_FILE` | none | a file of breached passwords, one per line (e.g. the most common of Have I Been Pwned's); each, and each with digits, symbols or swapped letters around it, is refused as `COMMON_PASSWORD` |
//! | `CQRS_RATE_LIMIT_PER_CLIENT` | `60/min` | SignIn, CompleteSignIn, RequestPasswordReset and RemindUserId per client address (`n/s`, `n/min`, `n/hour` or `off`; see `cqrs_edge::rate_limit`) |
//! | `CQRS_RATE_LIMIT_PER_ADDRESS` | `5/hour` | RequestPasswordReset and RemindUserId per login or address asked for |
//! | `IDENTITY_HASH_CONCURRENCY` | number of cores | argon2id hashes running at once |
//! | `IDENTITY_HASH_QUEUE_TIMEOUT_MS` | 2000 | longest wait for a place in the hashing pool before `RESOURCE_EXHAUSTED` |
//! | `IDENTITY_ARGON2_M_COST_KIB` / `IDENTITY_ARGON2_T_COST` / `IDENTITY_ARGON2_P_COST` | 19456 / 2 / 1 | argon2id parameters (never below these) |
//! | `CQRS_SERVICE_CLIENTS` | none | `client_id:sha256hex(secret)` comma list for IssueServiceToken |
//! | `NOTIFICATIONS_URL` | `http://127.0.0.1:50054` | where the outbox relay delivers mail |
//! | `IDENTITY_OUTBOX_CLIENT_ID` | `identity` | client id of the self-signed service tokens (outbox relay, directory calls) |
//! | `DIRECTORY_URL` | `http://127.0.0.1:50052` | the directory service: an account's grants (sign-in, SelectRole), scope checks (disable, enable), the bootstrap grant |
//! | `IDENTITY_DIRECTORY_TIMEOUT_MS` | 2000 | longest wait for the directory's answer, connecting included |
//! | `IDENTITY_OUTBOX_POLL_INTERVAL_MS` | 1000 | relay's idle wait |
//! | `CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL` | none | on a first start with no accounts: create this NATIONAL account and mail its registration link |
//! | `CQRS_BOOTSTRAP_SERVICE_DESK_FIRST_NAME` | `Service` | its first name |
//! | `CQRS_BOOTSTRAP_SERVICE_DESK_LAST_NAME` | `Desk` | its last name |
//! | `CQRS_BOOTSTRAP_SERVICE_DESK_ODS_CODE` | `X26` | ODS code of the service-desk organisation the directory creates for it |
//! | `CQRS_BOOTSTRAP_SERVICE_DESK_ORGANISATION` | `CQRS Service Desk` | that organisation's name |
//! | `IDENTITY_DISABLED_RETENTION_DAYS` | unset (kept) | a disabled account's personal data (name, e-mail address, authenticator app, links) is erased this long after it was disabled |

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use cqrs_auth::{SigningKey, TokenVerifier, VerifyingKey};
use cqrs_edge::rate_limit::RateLimitConfig;
use cqrs_outbox::RelayConfig;
use cqrs_runtime::config::{ConfigError, ConfigErrors, Env, nonzero};

use crate::domain::account::{Realm, normalise_name};
use crate::domain::email::{GenericMailboxRules, normalise_email};
use crate::domain::links::LinkExpiry;
use crate::domain::lockout::{LockoutPolicy, MAX_PERMANENT_AFTER};
use crate::domain::password::{BreachedPasswords, PasswordProfile};
use crate::domain::second_factor::SecondFactorPolicy;
use crate::hashing::HashingConfig;

/// Access tokens live 5 to 15 minutes (DESIGN §2).
const ACCESS_TOKEN_TTL_RANGE: (u64, u64) = (300, 900);

/// Clients allowed to obtain service tokens: client id -> SHA-256 of the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServiceClients(BTreeMap<String, [u8; 32]>);

impl ServiceClients {
    /// Parses `id:sha256hex,...`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut clients = BTreeMap::new();
        for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (id, hex) = item
                .split_once(':')
                .ok_or_else(|| "expected client_id:sha256hex entries".to_owned())?;
            let id = id.trim();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(format!("client id {id:?} must be 1-64 of [A-Za-z0-9._-]"));
            }
            let digest = decode_sha256_hex(hex.trim())
                .ok_or_else(|| format!("client {id:?}: the secret hash must be 64 hex digits"))?;
            if clients.insert(id.to_owned(), digest).is_some() {
                return Err(format!("client {id:?} is listed twice"));
            }
        }
        Ok(ServiceClients(clients))
    }

    /// The stored secret hash of `client_id`.
    pub fn secret_hash(&self, client_id: &str) -> Option<&[u8; 32]> {
        self.0.get(client_id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Hashes of secrets are still secrets to a guesser: Debug shows client ids only.
impl fmt::Debug for ServiceClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

fn decode_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The first account, created on a first start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapConfig {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// The service-desk organisation the directory is asked to create for it.
    pub organisation_ods_code: String,
    pub organisation_name: String,
}

#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub signing_key: SigningKey,
    /// Extra public keys (rotation) besides the signing key's own.
    pub verify_keys: Vec<VerifyingKey>,
    pub access_token_ttl: Duration,
    pub session_idle_ttl: Duration,
    pub session_absolute_ttl: Duration,
    pub links: LinkExpiry,
    pub password_profile_national: PasswordProfile,
    pub password_profile_local: PasswordProfile,
    /// `IDENTITY_BREACHED_PASSWORDS_FILE`: passwords known from breaches, refused with their
    /// decorations on every profile.
    pub breached_passwords: Option<std::sync::Arc<BreachedPasswords>>,
    pub generic_mailboxes: GenericMailboxRules,
    pub lockout: LockoutPolicy,
    pub second_factor: SecondFactorPolicy,
    pub step_up_window: Duration,
    pub oidc: OidcConfig,
    pub hashing: HashingConfig,
    pub service_clients: ServiceClients,
    pub redis_url: String,
    pub redis_namespace: String,
    pub notifications_url: String,
    pub outbox_client_id: String,
    pub directory_url: String,
    pub directory_timeout: Duration,
    pub relay: RelayConfig,
    pub bootstrap: Option<BootstrapConfig>,
    /// `IDENTITY_DISABLED_RETENTION_DAYS`: how long a disabled account's personal data is kept.
    pub disabled_retention: Option<Duration>,
    /// `CQRS_RATE_LIMIT_PER_CLIENT` / `CQRS_RATE_LIMIT_PER_ADDRESS`.
    pub rate_limits: RateLimitConfig,
}

impl IdentityConfig {
    /// Reads and validates the settings, reporting every bad variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let signing_key =
            errs.take(env.required_with("CQRS_TOKEN_SIGNING_KEY", SigningKey::from_env_value));
        let verify_keys = errs.take(
            env.optional_with("CQRS_TOKEN_VERIFY_KEYS", TokenVerifier::from_env_value)
                .map(|v| v.map(|v| v.keys().cloned().collect()).unwrap_or_default()),
        );

        let (min, max) = ACCESS_TOKEN_TTL_RANGE;
        let access_token_ttl = errs.take(
            env.duration_secs("CQRS_ACCESS_TOKEN_TTL_SECS", Duration::from_secs(600))
                .and_then(|ttl| {
                    ConfigError::check(
                        (min..=max).contains(&ttl.as_secs()) && ttl.subsec_nanos() == 0,
                        "CQRS_ACCESS_TOKEN_TTL_SECS",
                        format!("must be a whole number of seconds from {min} to {max}"),
                    )
                    .map(|()| ttl)
                }),
        );
        let session_idle_ttl = errs.take(positive(
            env,
            "CQRS_SESSION_IDLE_TTL_SECS",
            Duration::from_secs(1800),
        ));
        let session_absolute_ttl = errs.take(positive(
            env,
            "CQRS_SESSION_ABSOLUTE_TTL_SECS",
            Duration::from_secs(43_200),
        ));
        if let (Some(idle), Some(absolute)) = (session_idle_ttl, session_absolute_ttl) {
            errs.check(
                idle <= absolute,
                "CQRS_SESSION_IDLE_TTL_SECS",
                "must not exceed CQRS_SESSION_ABSOLUTE_TTL_SECS",
            );
        }

        let reset =
            errs.take(env.duration_secs("CQRS_RESET_LINK_TTL_SECS", Duration::from_secs(3600)));
        let registration = errs.take(env.duration_secs(
            "CQRS_REGISTRATION_LINK_TTL_SECS",
            Duration::from_secs(7 * 24 * 3600),
        ));
        let links = match (registration, reset) {
            (Some(registration), Some(reset)) => {
                errs.take(LinkExpiry::new(registration, reset).map_err(|e| {
                    ConfigError::new(
                        "CQRS_RESET_LINK_TTL_SECS or CQRS_REGISTRATION_LINK_TTL_SECS",
                        e,
                    )
                }))
            }
            _ => None,
        };

        let password_profile_national = errs.take(profile(
            env,
            "CQRS_PASSWORD_PROFILE_NATIONAL",
            PasswordProfile::CqrsNational,
        ));
        let password_profile_local = errs.take(profile(
            env,
            "CQRS_PASSWORD_PROFILE_LOCAL",
            PasswordProfile::CqrsLocal,
        ));

        let generic_mailboxes = errs.take(cqrs_runtime::config::generic_mailbox_rules(env));

        let second_factor = errs.take(
            env.optional_with("CQRS_SECOND_FACTOR_ROLES", |raw| {
                SecondFactorPolicy::parse(raw).map_err(|_| {
                    "expected none or a comma list of roles such as SERVICE_DESK,PRACTICE_MANAGER"
                })
            })
            .map(Option::unwrap_or_default),
        );
        let oidc = errs.take(oidc(env));
        let step_up_window = errs.take(positive(
            env,
            "CQRS_STEP_UP_WINDOW_SECS",
            Duration::from_secs(900),
        ));

        let permanent_after = errs.take(env.or("CQRS_LOCKOUT_PERMANENT_AFTER", 10).and_then(
            |n: u32| {
                ConfigError::check(
                    n <= MAX_PERMANENT_AFTER,
                    "CQRS_LOCKOUT_PERMANENT_AFTER",
                    format!("must be at most {MAX_PERMANENT_AFTER} (SECURITY 2)"),
                )
                .map(|()| n)
            },
        ));
        let temporary_after = errs.take(env.or("CQRS_LOCKOUT_TEMPORARY_AFTER", 5));
        let base_wait =
            errs.take(env.duration_secs("CQRS_LOCKOUT_BASE_WAIT_SECS", Duration::from_secs(60)));
        let max_wait =
            errs.take(env.duration_secs("CQRS_LOCKOUT_MAX_WAIT_SECS", Duration::from_secs(3600)));
        let failure_window = errs.take(env.duration_secs(
            "CQRS_LOCKOUT_FAILURE_WINDOW_SECS",
            Duration::from_secs(24 * 3600),
        ));
        let lockout = match (
            temporary_after,
            base_wait,
            max_wait,
            permanent_after,
            failure_window,
        ) {
            (Some(temporary), Some(base), Some(max), Some(permanent), Some(window)) => errs.take(
                LockoutPolicy::new(temporary, base, max, permanent, window)
                    .map_err(|e| ConfigError::new("CQRS_LOCKOUT_*", e)),
            ),
            _ => None,
        };

        let hashing_defaults = HashingConfig::default();
        let m_cost_kib =
            errs.take(env.or("IDENTITY_ARGON2_M_COST_KIB", hashing_defaults.m_cost_kib));
        let t_cost = errs.take(env.or("IDENTITY_ARGON2_T_COST", hashing_defaults.t_cost));
        let p_cost = errs.take(env.or("IDENTITY_ARGON2_P_COST", hashing_defaults.p_cost));
        let max_concurrency = errs.take(env.or(
            "IDENTITY_HASH_CONCURRENCY",
            hashing_defaults.max_concurrency,
        ));
        let queue_timeout_ms = errs.take(env.or(
            "IDENTITY_HASH_QUEUE_TIMEOUT_MS",
            u64::try_from(hashing_defaults.queue_timeout.as_millis()).unwrap_or(2000),
        ));
        let hashing = match (
            m_cost_kib,
            t_cost,
            p_cost,
            max_concurrency,
            queue_timeout_ms,
        ) {
            (Some(m_cost_kib), Some(t_cost), Some(p_cost), Some(max_concurrency), Some(ms)) => {
                let hashing = HashingConfig {
                    m_cost_kib,
                    t_cost,
                    p_cost,
                    max_concurrency,
                    queue_timeout: Duration::from_millis(ms),
                };
                // Checked here so a weak setting is a configuration error at start, naming
                // its variable.
                errs.take(
                    crate::hashing::PasswordHasher::new(&hashing)
                        .map(|_| hashing)
                        .map_err(|e| {
                            ConfigError::new(
                                "IDENTITY_ARGON2_* / IDENTITY_HASH_CONCURRENCY",
                                e.to_string(),
                            )
                        }),
                )
            }
            _ => None,
        };

        let service_clients = errs.take(
            env.optional_with("CQRS_SERVICE_CLIENTS", ServiceClients::parse)
                .map(Option::unwrap_or_default),
        );
        let notifications_url = errs.take(
            env.optional_with("NOTIFICATIONS_URL", parse_http_url)
                .map(|url| url.unwrap_or_else(|| "http://127.0.0.1:50054".to_owned())),
        );
        let outbox_client_id =
            errs.take(env.or("IDENTITY_OUTBOX_CLIENT_ID", "identity".to_owned()));
        let directory_url = errs.take(
            env.optional_with("DIRECTORY_URL", parse_http_url)
                .map(|url| url.unwrap_or_else(|| "http://127.0.0.1:50052".to_owned())),
        );
        let directory_timeout_ms =
            errs.take(at_least_one(env, "IDENTITY_DIRECTORY_TIMEOUT_MS", 2000));
        let poll_ms = errs.take(at_least_one(env, "IDENTITY_OUTBOX_POLL_INTERVAL_MS", 1000));

        let bootstrap = errs.take(bootstrap(env));
        let disabled_retention = errs.take(env.optional_with(
            "IDENTITY_DISABLED_RETENTION_DAYS",
            |raw| match raw.parse::<u32>() {
                Ok(days) if days > 0 => Ok(Duration::from_secs(u64::from(days) * 86_400)),
                _ => Err("expected a whole number of days, at least 1"),
            },
        ));
        let redis_url = errs.take(cqrs_runtime::config::redis_url(env));
        let redis_namespace = errs.take(cqrs_runtime::config::redis_namespace(env));
        let rate_limits = errs.take(RateLimitConfig::from_env(env));
        let breached_passwords = errs.take(env.optional_with(
            "IDENTITY_BREACHED_PASSWORDS_FILE",
            |path| match std::fs::read_to_string(path) {
                Ok(text) => {
                    let list = BreachedPasswords::parse(&text);
                    if list.is_empty() {
                        Err(format!("{path} lists no passwords"))
                    } else {
                        Ok(std::sync::Arc::new(list))
                    }
                }
                Err(e) => Err(format!("cannot read {path}: {e}")),
            },
        ));

        errs.finish(|| {
            Some(IdentityConfig {
                rate_limits: rate_limits?,
                signing_key: signing_key?,
                verify_keys: verify_keys?,
                access_token_ttl: access_token_ttl?,
                session_idle_ttl: session_idle_ttl?,
                session_absolute_ttl: session_absolute_ttl?,
                links: links?,
                password_profile_national: password_profile_national?,
                password_profile_local: password_profile_local?,
                breached_passwords: breached_passwords?,
                generic_mailboxes: generic_mailboxes?,
                lockout: lockout?,
                second_factor: second_factor?,
                step_up_window: step_up_window?,
                oidc: oidc?,
                hashing: hashing?,
                service_clients: service_clients?,
                redis_url: redis_url?,
                redis_namespace: redis_namespace?,
                notifications_url: notifications_url?,
                outbox_client_id: outbox_client_id?,
                directory_url: directory_url?,
                directory_timeout: Duration::from_millis(directory_timeout_ms?),
                relay: RelayConfig {
                    poll_interval: Duration::from_millis(poll_ms?),
                    producer: "identity",
                    ..RelayConfig::default()
                },
                bootstrap: bootstrap?,
                disabled_retention: disabled_retention?,
            })
        })
    }

    /// The password profile of `realm`.
    pub fn profile(&self, realm: Realm) -> PasswordProfile {
        match realm {
            Realm::National => self.password_profile_national,
            Realm::Local => self.password_profile_local,
        }
    }

    /// Every public key a current token may be signed with: the signing key's first, then
    /// the configured ones (older keys during a rotation), without duplicate key ids.
    pub fn public_keys(&self) -> Vec<VerifyingKey> {
        let mut keys = vec![self.signing_key.verifying_key()];
        for key in &self.verify_keys {
            if !keys.iter().any(|k| k.kid == key.kid) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// The verifier for this service's own server: tokens it signs and rotated-out keys.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(self.public_keys())
    }
}

fn positive(env: &Env, var: &str, default: Duration) -> Result<Duration, ConfigError> {
    env.duration_secs(var, default).and_then(nonzero(var))
}

/// A count of milliseconds, `default` when unset; zero is refused.
fn at_least_one(env: &Env, var: &str, default: u64) -> Result<u64, ConfigError> {
    let value = env.or(var, default)?;
    ConfigError::check(value > 0, var, "must be at least 1")?;
    Ok(value)
}

/// The first account, when `CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL` is set; every bad name reported.
/// An upstream OpenID provider this suite signs people in with.
#[derive(Clone)]
pub struct OidcProvider {
    pub id: String,
    pub label: String,
    pub issuer: String,
    pub client_id: String,
    /// A credential: never logged (`Debug` hides it).
    pub client_secret: String,
    /// Lower-case e-mail domains allowed; empty allows any.
    pub domains: Vec<String>,
    pub mfa_satisfies: bool,
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("domains", &self.domains)
            .field("mfa_satisfies", &self.mfa_satisfies)
            .finish_non_exhaustive()
    }
}

/// Single sign-on: the providers and where they send the browser back.
#[derive(Clone, Debug, Default)]
pub struct OidcConfig {
    pub providers: Vec<OidcProvider>,
    pub redirect_uri: Option<String>,
}

impl OidcConfig {
    pub fn provider(&self, id: &str) -> Option<&OidcProvider> {
        self.providers.iter().find(|p| p.id == id)
    }
}

fn oidc(env: &Env) -> Result<OidcConfig, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let ids: Vec<String> = errs
        .take(env.get("CQRS_OIDC_PROVIDERS"))
        .flatten()
        .map(|raw| {
            raw.split(',')
                .map(|id| id.trim().to_ascii_lowercase())
                .filter(|id| !id.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut providers = Vec::new();
    for id in &ids {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            errs.take::<(), _>(Err(ConfigError::new(
                "CQRS_OIDC_PROVIDERS",
                format!("{id:?}: provider ids are letters, digits and _"),
            )));
            continue;
        }
        let var = |part: &str| format!("CQRS_OIDC_{}_{part}", id.to_ascii_uppercase());
        let issuer = errs.take(env.required_with(&var("ISSUER"), parse_url));
        let client_id = errs.take(env.required::<String>(&var("CLIENT_ID")));
        let client_secret = errs.take(env.required::<String>(&var("CLIENT_SECRET")));
        let domains: Vec<String> = errs
            .take(env.get(&var("DOMAINS")))
            .flatten()
            .map(|raw| {
                raw.split(',')
                    .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                    .filter(|d| !d.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let label = errs
            .take(env.get(&var("LABEL")))
            .flatten()
            .map_or_else(|| id.clone(), str::to_owned);
        let mfa_satisfies = errs.take(env.or(&var("MFA_SATISFIES"), false));
        if let (Some(issuer), Some(client_id), Some(client_secret), Some(mfa_satisfies)) =
            (issuer, client_id, client_secret, mfa_satisfies)
        {
            providers.push(OidcProvider {
                id: id.clone(),
                label,
                issuer,
                client_id,
                client_secret,
                domains,
                mfa_satisfies,
            });
        }
    }
    let redirect_uri = errs.take(env.optional_with("CQRS_OIDC_REDIRECT_URI", parse_url));
    if !ids.is_empty() && matches!(redirect_uri, Some(None)) {
        errs.take::<(), _>(Err(ConfigError::new(
            "CQRS_OIDC_REDIRECT_URI",
            "is required with CQRS_OIDC_PROVIDERS (the gateway's sign-in/sso/callback page)",
        )));
    }
    errs.finish(|| {
        Some(OidcConfig {
            providers,
            redirect_uri: redirect_uri?,
        })
    })
}

fn bootstrap(env: &Env) -> Result<Option<BootstrapConfig>, ConfigErrors> {
    let Some(raw) = env.get("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL")? else {
        return Ok(None);
    };
    let mut errs = ConfigErrors::default();
    let email = errs.take(
        normalise_email(raw)
            .map_err(|e| ConfigError::new("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL", e.to_string())),
    );
    let mut name = |var: &str, default: &str| {
        errs.take(env.get(var).and_then(|raw| {
            normalise_name(raw.unwrap_or(default)).map_err(|e| ConfigError::new(var, e))
        }))
    };
    let first_name = name("CQRS_BOOTSTRAP_SERVICE_DESK_FIRST_NAME", "Service");
    let last_name = name("CQRS_BOOTSTRAP_SERVICE_DESK_LAST_NAME", "Desk");
    // The directory validates both; here only emptiness is refused early.
    let organisation_ods_code = name("CQRS_BOOTSTRAP_SERVICE_DESK_ODS_CODE", "X26");
    let organisation_name = name(
        "CQRS_BOOTSTRAP_SERVICE_DESK_ORGANISATION",
        "CQRS Service Desk",
    );
    errs.finish(|| {
        Some(Some(BootstrapConfig {
            email: email?,
            first_name: first_name?,
            last_name: last_name?,
            organisation_ods_code: organisation_ods_code?,
            organisation_name: organisation_name?,
        }))
    })
}

fn profile(env: &Env, var: &str, default: PasswordProfile) -> Result<PasswordProfile, ConfigError> {
    Ok(env
        .optional_with(var, |raw| {
            PasswordProfile::parse(raw).ok_or("expected cqrs_national, cqrs_local or nist_800_63b")
        })?
        .unwrap_or(default))
}

/// An absolute http(s) URL, kept exactly as written (an issuer must match the `iss` of its
/// tokens character for character).
fn parse_url(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim();
    match openidconnect::url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(raw.to_owned())
        }
        _ => Err("expected an absolute http(s) URL"),
    }
}

fn parse_http_url(raw: &str) -> Result<String, &'static str> {
    cqrs_runtime::config::parse_endpoint(raw)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, String)> {
        vec![(
            "CQRS_TOKEN_SIGNING_KEY",
            SigningKey::generate("k1").to_env_value(),
        )]
    }

    /// The one error of a configuration that must fail.
    fn one(result: Result<IdentityConfig, ConfigErrors>) -> ConfigError {
        let errs = result.unwrap_err();
        errs.only()
            .cloned()
            .unwrap_or_else(|| panic!("expected exactly one error, got:\n{errs}"))
    }

    fn env_with(extra: &[(&str, &str)]) -> Env {
        let base = base();
        let mut pairs: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.extend_from_slice(extra);
        Env::from_pairs(&pairs)
    }

    #[test]
    fn defaults() {
        let config = IdentityConfig::from_env(&env_with(&[])).unwrap();
        assert_eq!(config.access_token_ttl, Duration::from_secs(600));
        assert_eq!(config.session_idle_ttl, Duration::from_secs(1800));
        assert_eq!(config.session_absolute_ttl, Duration::from_secs(43_200));
        assert_eq!(config.links, LinkExpiry::default());
        assert_eq!(
            config.password_profile_national,
            PasswordProfile::CqrsNational
        );
        assert_eq!(config.password_profile_local, PasswordProfile::CqrsLocal);
        assert_eq!(config.lockout, LockoutPolicy::default());
        assert_eq!(config.notifications_url, "http://127.0.0.1:50054");
        assert_eq!(config.directory_url, "http://127.0.0.1:50052");
        assert_eq!(config.directory_timeout, Duration::from_secs(2));
        assert_eq!(config.redis_namespace, "");
        assert!(config.service_clients.is_empty());
        assert!(config.bootstrap.is_none());
        assert!(config.generic_mailboxes.is_generic("info@nhs.net"));
        assert_eq!(config.public_keys().len(), 1);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("CQRS_ACCESS_TOKEN_TTL_SECS", "60"),
            ("CQRS_ACCESS_TOKEN_TTL_SECS", "3600"),
            ("CQRS_SESSION_IDLE_TTL_SECS", "0"),
            ("CQRS_PASSWORD_PROFILE_LOCAL", "weak"),
            ("CQRS_SERVICE_CLIENTS", "access:nothex"),
            ("CQRS_SERVICE_CLIENTS", "nocolon"),
            ("NOTIFICATIONS_URL", "localhost:50054"),
            ("DIRECTORY_URL", "localhost:50052"),
            ("IDENTITY_DIRECTORY_TIMEOUT_MS", "0"),
            ("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL", "not-an-address"),
            ("CQRS_TOKEN_VERIFY_KEYS", "garbage"),
            ("IDENTITY_HASH_QUEUE_TIMEOUT_MS", "soon"),
        ] {
            let err = one(IdentityConfig::from_env(&env_with(&[(var, value)])));
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
        let err = one(IdentityConfig::from_env(&env_with(&[(
            "CQRS_LOCKOUT_PERMANENT_AFTER",
            "101",
        )])));
        assert_eq!(err.var, "CQRS_LOCKOUT_PERMANENT_AFTER");
        assert!(err.message.contains("100"), "{err}");
        let err = one(IdentityConfig::from_env(&env_with(&[(
            "CQRS_LOCKOUT_TEMPORARY_AFTER",
            "20",
        )])));
        assert!(err.var.starts_with("CQRS_LOCKOUT"), "{err}");
        assert!(IdentityConfig::from_env(&Env::from_pairs(&[])).is_err());
        let err = one(IdentityConfig::from_env(&env_with(&[(
            "IDENTITY_ARGON2_M_COST_KIB",
            "1024",
        )])));
        assert!(err.var.starts_with("IDENTITY_ARGON2"), "{err}");
    }

    #[test]
    fn every_bad_variable_is_reported_at_once() {
        let long_name = "x".repeat(101);
        let errs = IdentityConfig::from_env(&Env::from_pairs(&[
            ("CQRS_TOKEN_SIGNING_KEY", "k1:not-a-key"),
            ("CQRS_ACCESS_TOKEN_TTL_SECS", "60"),
            ("CQRS_SESSION_IDLE_TTL_SECS", "90000"),
            ("CQRS_LOCKOUT_PERMANENT_AFTER", "101"),
            ("IDENTITY_ARGON2_M_COST_KIB", "1024"),
            ("DIRECTORY_URL", "localhost:50052"),
            ("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL", "desk@nhs.net"),
            ("CQRS_BOOTSTRAP_SERVICE_DESK_FIRST_NAME", &long_name),
            ("CQRS_BOOTSTRAP_SERVICE_DESK_LAST_NAME", "A\nB"),
        ]))
        .unwrap_err();
        let vars: Vec<&str> = errs.errors().iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "CQRS_TOKEN_SIGNING_KEY",
                "CQRS_ACCESS_TOKEN_TTL_SECS",
                "CQRS_SESSION_IDLE_TTL_SECS",
                "CQRS_LOCKOUT_PERMANENT_AFTER",
                "IDENTITY_ARGON2_* / IDENTITY_HASH_CONCURRENCY",
                "DIRECTORY_URL",
                "CQRS_BOOTSTRAP_SERVICE_DESK_FIRST_NAME",
                "CQRS_BOOTSTRAP_SERVICE_DESK_LAST_NAME",
            ],
            "{errs}"
        );
        assert_eq!(errs.to_string().lines().count(), vars.len(), "{errs}");
        assert!(!errs.to_string().contains("not-a-key"), "{errs}");
    }

    #[test]
    fn lists_and_clients() {
        let digest = "ab".repeat(32);
        let clients = format!("access:{digest}, directory:{digest}");
        let config = IdentityConfig::from_env(&env_with(&[
            ("CQRS_SERVICE_CLIENTS", &clients),
            ("CQRS_GENERIC_EMAIL_LOCAL_PARTS", "frontdesk"),
            ("CQRS_GENERIC_EMAIL_DOMAINS", "shared.example.org"),
            ("CQRS_BOOTSTRAP_SERVICE_DESK_EMAIL", " Desk.Lead@NHS.NET "),
        ]))
        .unwrap();
        assert_eq!(
            config.service_clients.secret_hash("access"),
            Some(&[0xab; 32])
        );
        assert!(config.service_clients.secret_hash("other").is_none());
        assert!(!format!("{:?}", config.service_clients).contains("ab"));
        assert!(config.generic_mailboxes.is_generic("frontdesk@nhs.net"));
        assert!(!config.generic_mailboxes.is_generic("info@nhs.net"));
        assert!(
            config
                .generic_mailboxes
                .is_generic("ann@shared.example.org")
        );
        let bootstrap = config.bootstrap.unwrap();
        assert_eq!(bootstrap.email, "Desk.Lead@nhs.net");
        assert_eq!(
            (bootstrap.first_name.as_str(), bootstrap.last_name.as_str()),
            ("Service", "Desk")
        );
    }

    #[test]
    fn rotation_keys_are_served_with_the_signing_key() {
        let old = SigningKey::generate("old").verifying_key().to_env_value();
        let config =
            IdentityConfig::from_env(&env_with(&[("CQRS_TOKEN_VERIFY_KEYS", &old)])).unwrap();
        let kids: Vec<String> = config.public_keys().into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, vec!["k1".to_owned(), "old".to_owned()]);
    }
}
