//! Sign-in sessions in Redis.
//!
//! An account's keys all start with [`cqrs_auth::account_key_prefix`],
//! `{namespace}identity:{<account_id>}:` — the braces are a Redis Cluster hash tag, so every
//! key of one account lives on one node and a transaction may touch them together:
//! * `session:{sid}` — hash with `account_id`, `created_ms`, `absolute_expiry_ms`, `org`,
//!   `role` (both empty while no grant is active), `token_hash`, `amr` (how the person
//!   signed in, space-separated RFC 8176 names) and `sfa` (unix seconds of the session's last
//!   second-factor check; empty without one). The key name is
//!   [`cqrs_auth::session_key`]: every service checks a token's `sub` and `sid` with `EXISTS`
//!   on it, so deleting this key is what ends a session everywhere at once.
//! * `session-token:{hex sha256(token)}` — the session id, found from the refresh token. The
//!   token is `<account id>.<secret>` (the account names the hash tag); it is stored only
//!   hashed, and the secret is a different random value from the session id (which travels in
//!   every access token), so knowing a `sid` does not let anyone refresh.
//! * `sessions` — set of the account's session ids, so sign-out everywhere, disable, lock,
//!   password change and role revocation can find them.
//!
//! Keys of no account, under `{namespace}identity:`:
//! * `sign-in-challenge:{hex sha256(token)}` — the account whose password was right and whose
//!   second factor is being asked for, with how the first step was made; lives
//!   [`CHALLENGE_TTL`], ends when the sign-in does.
//! * `sso-state:{hex sha256(state)}` — a federated sign-in at its provider: the provider, the
//!   nonce and the PKCE verifier; lives [`FEDERATED_TTL`], taken once when the browser is back.
//!
//! Session and token keys share one TTL: min(idle TTL, time left before the absolute expiry).
//! Using the token pushes the idle TTL out again, never past the absolute expiry. Members of
//! the account set may outlive their session (it expired); they are dropped whenever the set
//! is walked.
//!
//! Every ending is announced on [`cqrs_auth::sessions_ended_channel`] as soon as its
//! transaction is done, so services that cache live sessions forget them at once.
//!
//! Ending sessions and changing what a live session may do (its grant, its second-factor
//! check) go through [`RedisConnection::exec_replicated`]: with `replica_acks` set they are
//! on a replica before they are answered, so a failover cannot bring an ended session back.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use cqrs_auth::{
    ActiveGrant, CachedSessionCheck, Role, account_key_prefix, session_key, sessions_ended_channel,
};
use cqrs_redis::RedisConnection;
use rand::RngCore as _;
use redis::{AsyncCommands, ErrorKind, RedisError, Script, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// KEYS[1] = session, KEYS[2] = token key; ARGV = now_ms, idle_ms, token hash.
/// Checks the session still belongs to this token and is inside its absolute lifetime, then
/// refreshes both TTLs in the same step, so a refresh can never revive an ended session.
const BY_TOKEN_LUA: &str = r"
local fields = redis.call('HMGET', KEYS[1], 'absolute_expiry_ms', 'token_hash')
if not fields[1] then
  redis.call('DEL', KEYS[2])
  return false
end
if fields[2] ~= ARGV[3] then
  return false
end
local remaining = tonumber(fields[1]) - tonumber(ARGV[1])
if remaining <= 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return false
end
local ttl = tonumber(ARGV[2])
if remaining < ttl then
  ttl = remaining
end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
redis.call('PEXPIRE', KEYS[2], string.format('%.0f', ttl))
return redis.call('HGETALL', KEYS[1])
";

/// KEYS[1] = session; ARGV = org, role. A plain HSET on an ended session would recreate it
/// without a TTL, i.e. bring it back to life; the existence check prevents that.
const SET_ACTIVE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'org', ARGV[1], 'role', ARGV[2])
return 1
";

/// How long the second step of a sign-in may wait for its code.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// How long a federated sign-in may take at the provider.
pub const FEDERATED_TTL: Duration = Duration::from_secs(600);

/// A federated sign-in waiting for the browser to come back. The nonce and the PKCE verifier
/// are credentials of this sign-in: never logged.
pub struct FederatedPending {
    pub provider_id: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// KEYS[1] = session; ARGV = amr, sfa. Like SET_ACTIVE: never recreates an ended session.
const SET_PROOF_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'amr', ARGV[1], 'sfa', ARGV[2])
return 1
";

static BY_TOKEN: LazyLock<Script> = LazyLock::new(|| Script::new(BY_TOKEN_LUA));

/// A live session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The `sid` claim of the session's access tokens.
    pub session_id: String,
    pub account_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The session ends then however active it is.
    pub absolute_expiry: DateTime<Utc>,
    /// The grant the user picked, if any.
    pub active: Option<ActiveGrant>,
    /// How the person signed in (RFC 8176 `amr` names).
    pub methods: Vec<String>,
    /// The session's last second-factor check (unix seconds), if any.
    pub second_factor_at: Option<i64>,
    /// The person's display name at sign-in (for the `name` claim).
    pub display_name: String,
}

/// Sessions in Redis under `{namespace}identity:`.
#[derive(Clone)]
pub struct SessionStore {
    conn: RedisConnection,
    namespace: String,
    idle_ttl: Duration,
    absolute_ttl: Duration,
    /// This service's own cached checker, told of every ending at once.
    local: Option<Arc<CachedSessionCheck>>,
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStore")
            .field("namespace", &self.namespace)
            .field("idle_ttl", &self.idle_ttl)
            .field("absolute_ttl", &self.absolute_ttl)
            .finish_non_exhaustive()
    }
}

/// Session fields read when ending sessions: account, token hash, org, role.
type EndFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl SessionStore {
    /// `namespace` prefixes every key; a session lives at most `absolute_ttl` and ends after
    /// `idle_ttl` without a refresh.
    pub fn new(
        conn: RedisConnection,
        namespace: impl Into<String>,
        idle_ttl: Duration,
        absolute_ttl: Duration,
    ) -> Self {
        Self {
            conn,
            namespace: namespace.into(),
            idle_ttl,
            absolute_ttl,
            local: None,
        }
    }

    /// The same store, telling `local` (this service's session checker) of every ending
    /// before it is answered.
    #[must_use]
    pub fn with_local_check(mut self, local: Arc<CachedSessionCheck>) -> Self {
        self.local = Some(local);
        self
    }

    /// Tells this service's checker, then every other one (cqrs_auth::CachedSessionCheck),
    /// that the sessions at `keys` ended. Not part of the ending's transaction: a cluster
    /// routes the channel apart from the account's keys. An announcement that fails is an
    /// error, so the caller (who retries) never takes the ending as done while other
    /// services may still hold the session.
    async fn announce(
        &self,
        conn: &mut RedisConnection,
        keys: &[String],
    ) -> Result<(), RedisError> {
        if let Some(local) = &self.local {
            local.forget(keys);
        }
        conn.publish(sessions_ended_channel(&self.namespace), keys.join("\n"))
            .await
    }

    fn token_key(&self, account_id: Uuid, token_hash: &str) -> String {
        format!(
            "{}session-token:{token_hash}",
            account_key_prefix(&self.namespace, account_id)
        )
    }

    fn account_key(&self, account_id: Uuid) -> String {
        format!(
            "{}sessions",
            account_key_prefix(&self.namespace, account_id)
        )
    }

    fn session_key(&self, account_id: Uuid, sid: &str) -> String {
        session_key(&self.namespace, account_id, sid)
    }

    /// Starts a session for `account_id`. Returns the refresh secret (shown to the client once,
    /// never stored) and the record; the session id is a separate random value.
    pub async fn create(
        &self,
        account_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(String, SessionRecord), RedisError> {
        self.create_with(account_id, now, &["pwd"], None, "", None)
            .await
    }

    /// Starts a session of `display_name`, signed in with `methods`, its second factor
    /// checked at `second_factor_at` (unix seconds) if it was; `alongside` (the sign-in's
    /// lock-out reset) runs in the same transaction, its reply ignored.
    pub async fn create_with(
        &self,
        account_id: Uuid,
        now: DateTime<Utc>,
        methods: &[&str],
        second_factor_at: Option<i64>,
        display_name: &str,
        alongside: Option<redis::Cmd>,
    ) -> Result<(String, SessionRecord), RedisError> {
        let session_id = random_secret();
        let token = format!("{}.{}", account_id.simple(), random_secret());
        let token_hash = hash_token(&token);

        let now_ms = now.timestamp_millis();
        let absolute_ms = duration_ms(self.absolute_ttl);
        let absolute_expiry_ms = now_ms.saturating_add(absolute_ms);
        // Both keys vanish together; a zero TTL would mean "delete now", so keep at least 1 ms.
        let ttl_ms = duration_ms(self.idle_ttl).min(absolute_ms).max(1);

        let record = SessionRecord {
            session_id: session_id.clone(),
            account_id,
            created_at: from_ms(now_ms)?,
            absolute_expiry: from_ms(absolute_expiry_ms)?,
            active: None,
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            second_factor_at,
            display_name: display_name.to_owned(),
        };
        let amr = methods.join(" ");
        let sfa = second_factor_at
            .map(|at| at.to_string())
            .unwrap_or_default();

        let session = self.session_key(account_id, &session_id);
        let account = self.account_key(account_id);
        let account_str = account_id.to_string();
        let mut conn = self.conn.clone();
        let mut transaction = redis::pipe();
        transaction.atomic();
        if let Some(command) = alongside {
            transaction.add_command(command).ignore();
        }
        transaction
            .hset_multiple(
                &session,
                &[
                    ("account_id", account_str.as_str()),
                    ("created_ms", now_ms.to_string().as_str()),
                    (
                        "absolute_expiry_ms",
                        absolute_expiry_ms.to_string().as_str(),
                    ),
                    ("org", ""),
                    ("role", ""),
                    ("token_hash", token_hash.as_str()),
                    ("amr", amr.as_str()),
                    ("sfa", sfa.as_str()),
                    ("name", display_name),
                ],
            )
            .ignore()
            .pexpire(&session, ttl_ms)
            .ignore()
            .pset_ex(
                self.token_key(account_id, &token_hash),
                &session_id,
                ttl_ms_u64(ttl_ms),
            )
            .ignore()
            .sadd(&account, &session_id)
            .ignore()
            // Every session of the account ends within absolute_ttl of the newest one's
            // creation, so the index outlives them all.
            .pexpire(&account, absolute_ms.max(1))
            .ignore()
            .exec_async(&mut conn)
            .await?;
        crate::metrics::session_started();
        Ok((token, record))
    }

    /// The session a refresh secret belongs to, if it is still live; pushes its idle expiry
    /// out (bounded by the absolute expiry). A wrong or ended token gives `None`.
    pub async fn by_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, RedisError> {
        // Anything not shaped like a token of ours is simply not one.
        let Some(account_id) = token
            .split_once('.')
            .and_then(|(account, _)| Uuid::try_parse(account).ok())
        else {
            return Ok(None);
        };
        let token_hash = hash_token(token);
        let token_key = self.token_key(account_id, &token_hash);
        let mut conn = self.conn.clone();
        let Some(session_id): Option<String> = conn.get(&token_key).await? else {
            return Ok(None);
        };
        let fields: Option<HashMap<String, String>> = BY_TOKEN
            .key(self.session_key(account_id, &session_id))
            .key(&token_key)
            .arg(now.timestamp_millis())
            .arg(duration_ms(self.idle_ttl).max(1))
            .arg(&token_hash)
            .invoke_async(&mut conn)
            .await?;
        fields
            .map(|fields| parse_record(session_id, &fields))
            .transpose()
    }

    /// The session `sid` of `account_id`, if it is live. Does not refresh it.
    pub async fn get(
        &self,
        account_id: Uuid,
        sid: &str,
    ) -> Result<Option<SessionRecord>, RedisError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> =
            conn.hgetall(self.session_key(account_id, sid)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(sid.to_owned(), &fields).map(Some)
    }

    /// Records the grant the user switched to (or none). `false` when the session has ended.
    pub async fn set_active(
        &self,
        account_id: Uuid,
        sid: &str,
        grant: Option<ActiveGrant>,
    ) -> Result<bool, RedisError> {
        let (org, role) = match grant {
            Some(grant) => (grant.organisation_id.to_string(), grant.role.as_str()),
            None => (String::new(), ""),
        };
        let mut update = redis::pipe();
        update
            .cmd("EVAL")
            .arg(SET_ACTIVE_LUA)
            .arg(1)
            .arg(self.session_key(account_id, sid))
            .arg(org)
            .arg(role);
        let (updated,): (i64,) = self.conn.clone().exec_replicated(&update).await?;
        Ok(updated == 1)
    }

    /// Records a second-factor check at `at` (unix seconds) on a live session, adding `otp`
    /// to its methods. `false` when the session has ended.
    pub async fn record_second_factor(
        &self,
        record: &SessionRecord,
        at: i64,
    ) -> Result<bool, RedisError> {
        let mut methods = record.methods.clone();
        if !methods.iter().any(|m| m == "otp") {
            methods.push("otp".to_owned());
        }
        let mut update = redis::pipe();
        update
            .cmd("EVAL")
            .arg(SET_PROOF_LUA)
            .arg(1)
            .arg(self.session_key(record.account_id, &record.session_id))
            .arg(methods.join(" "))
            .arg(at.to_string());
        let (updated,): (i64,) = self.conn.clone().exec_replicated(&update).await?;
        Ok(updated == 1)
    }

    fn challenge_key(&self, token: &str) -> String {
        format!(
            "{}identity:sign-in-challenge:{}",
            self.namespace,
            hash_token(token)
        )
    }

    /// A challenge for the second step of `account_id`'s sign-in, whose first step was
    /// `method` (`pwd` or `fed`); returns its token (shown to the client once, stored only
    /// hashed).
    pub async fn create_challenge(
        &self,
        account_id: Uuid,
        method: &str,
    ) -> Result<String, RedisError> {
        let token = random_secret();
        let mut conn = self.conn.clone();
        let () = conn
            .pset_ex(
                self.challenge_key(&token),
                format!("{account_id} {method}"),
                ttl_ms_u64(duration_ms(CHALLENGE_TTL)),
            )
            .await?;
        Ok(token)
    }

    /// The account a live challenge belongs to, and how its first step was made.
    pub async fn challenge(&self, token: &str) -> Result<Option<(Uuid, String)>, RedisError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = conn.get(self.challenge_key(token)).await?;
        value
            .map(|value| {
                let (account, method) = value.split_once(' ').unwrap_or((&value, "pwd"));
                Uuid::parse_str(account)
                    .map(|id| (id, method.to_owned()))
                    .map_err(|_| corrupt("challenge"))
            })
            .transpose()
    }

    fn federated_key(&self, state: &str) -> String {
        format!("{}identity:sso-state:{}", self.namespace, hash_token(state))
    }

    /// Keeps what a federated sign-in needs when the browser comes back, under its `state`
    /// (stored only hashed), for [`FEDERATED_TTL`].
    pub async fn keep_federated(
        &self,
        state: &str,
        pending: &FederatedPending,
    ) -> Result<(), RedisError> {
        let value = format!(
            "{}\n{}\n{}",
            pending.provider_id, pending.nonce, pending.pkce_verifier
        );
        let mut conn = self.conn.clone();
        conn.pset_ex(
            self.federated_key(state),
            value,
            ttl_ms_u64(duration_ms(FEDERATED_TTL)),
        )
        .await
    }

    /// Takes (and so uses up) the federated sign-in kept under `state`.
    pub async fn take_federated(
        &self,
        state: &str,
    ) -> Result<Option<FederatedPending>, RedisError> {
        let mut conn = self.conn.clone();
        let value: Option<String> = conn.get_del(self.federated_key(state)).await?;
        Ok(value.and_then(|value| {
            let mut parts = value.splitn(3, '\n');
            Some(FederatedPending {
                provider_id: parts.next()?.to_owned(),
                nonce: parts.next()?.to_owned(),
                pkce_verifier: parts.next()?.to_owned(),
            })
        }))
    }

    /// Ends a challenge (the sign-in completed, or the account locked). `false` when it had
    /// ended already: of two parallel completions only one goes on.
    pub async fn end_challenge(&self, token: &str) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        let removed: i64 = conn.del(self.challenge_key(token)).await?;
        Ok(removed == 1)
    }

    /// Ends one session (sign-out). Ending an ended or unknown session is not an error.
    pub async fn end(&self, account_id: Uuid, sid: &str) -> Result<(), RedisError> {
        let session = self.session_key(account_id, sid);
        let mut conn = self.conn.clone();
        let token_hash: Option<String> = conn.hget(&session, "token_hash").await?;
        let mut ending = redis::pipe();
        ending.del(&session);
        if let Some(token_hash) = &token_hash {
            ending.del(self.token_key(account_id, token_hash));
        }
        ending.srem(self.account_key(account_id), sid);
        let _: Vec<Value> = conn.exec_replicated(&ending).await?;
        self.announce(&mut conn, &[session]).await?;
        crate::metrics::sessions_ended(u32::from(token_hash.is_some()));
        Ok(())
    }

    /// Ends every session of the account; returns how many were live.
    pub async fn end_all(&self, account_id: Uuid) -> Result<u32, RedisError> {
        self.end_where(account_id, |_| true).await
    }

    /// Ends the account's sessions whose active grant matches: the organisation when given and
    /// the role when given (both `None` = any active grant). Sessions without an active grant
    /// never match. Returns how many were ended.
    pub async fn end_matching(
        &self,
        account_id: Uuid,
        organisation_id: Option<Uuid>,
        role: Option<Role>,
    ) -> Result<u32, RedisError> {
        let org = organisation_id.map(|o| o.to_string());
        self.end_where(account_id, |(_, _, s_org, s_role)| {
            let (Some(s_org), Some(s_role)) = (s_org.as_deref(), s_role.as_deref()) else {
                return false;
            };
            !s_org.is_empty()
                && !s_role.is_empty()
                && org.as_deref().is_none_or(|o| o == s_org)
                && role.is_none_or(|r| r.as_str() == s_role)
        })
        .await
    }

    /// Walks the account's index, drops members whose session already expired, and ends the
    /// sessions `matches` selects in one MULTI/EXEC. Reading the sessions first is not atomic
    /// with the delete; the only effect of a concurrent change is that a session switching
    /// grant in between is judged on its previous grant, and grant switches are checked
    /// against the durable grants anyway.
    async fn end_where(
        &self,
        account_id: Uuid,
        matches: impl Fn(&EndFields) -> bool,
    ) -> Result<u32, RedisError> {
        let account = self.account_key(account_id);
        let mut conn = self.conn.clone();
        let sids: Vec<String> = conn.smembers(&account).await?;
        if sids.is_empty() {
            return Ok(0);
        }

        let mut read = redis::pipe();
        for sid in &sids {
            read.hmget(
                self.session_key(account_id, sid),
                &["account_id", "token_hash", "org", "role"],
            );
        }
        let sessions: Vec<EndFields> = read.query_async(&mut conn).await?;

        let mut write = redis::pipe();
        let mut cleanup = redis::pipe();
        let mut ended_keys = Vec::new();
        let mut stale = Vec::new();
        let mut ending = 0usize;
        for (sid, fields) in sids.iter().zip(&sessions) {
            if fields.0.is_none() {
                stale.push(sid.as_str());
                continue;
            }
            if !matches(fields) {
                continue;
            }
            ending += 1;
            // Every session's DEL first, so their replies lead EXEC's.
            let key = self.session_key(account_id, sid);
            write.del(&key);
            ended_keys.push(key);
            if let Some(token_hash) = &fields.1 {
                cleanup.del(self.token_key(account_id, token_hash));
            }
            cleanup.srem(&account, sid);
        }
        if !stale.is_empty() {
            cleanup.srem(&account, &stale);
        }
        if ending == 0 && stale.is_empty() {
            return Ok(0);
        }
        for cmd in cleanup.cmd_iter() {
            write.add_command(cmd.clone());
        }
        let replies: Vec<Value> = conn.exec_replicated(&write).await?;
        if !ended_keys.is_empty() {
            self.announce(&mut conn, &ended_keys).await?;
        }
        // One reply per session DEL: a session that ended in between is not counted.
        let ended = replies
            .iter()
            .take(ending)
            .map(|reply| u32::from(matches!(reply, Value::Int(1))))
            .sum();
        crate::metrics::sessions_ended(ended);
        Ok(ended)
    }
}

/// 256 bits from the thread-local CSPRNG, base64url without padding (43 characters).
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256 of the refresh secret: the only form it is stored in.
fn hash_token(token: &str) -> String {
    use fmt::Write as _;
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn ttl_ms_u64(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(1)
}

fn from_ms(ms: i64) -> Result<DateTime<Utc>, RedisError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp out of range"))
}

fn parse_record(
    session_id: String,
    fields: &HashMap<String, String>,
) -> Result<SessionRecord, RedisError> {
    let field = |name: &'static str| {
        fields
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| corrupt(name))
    };
    let ms = |name: &'static str| -> Result<DateTime<Utc>, RedisError> {
        let value = field(name)?.parse::<i64>().map_err(|_| corrupt(name))?;
        from_ms(value)
    };
    let account_id = Uuid::parse_str(field("account_id")?).map_err(|_| corrupt("account_id"))?;
    let org = fields.get("org").map(String::as_str).unwrap_or_default();
    let role = fields.get("role").map(String::as_str).unwrap_or_default();
    let active = if org.is_empty() || role.is_empty() {
        None
    } else {
        Some(ActiveGrant {
            organisation_id: Uuid::parse_str(org).map_err(|_| corrupt("org"))?,
            role: Role::parse(role).ok_or_else(|| corrupt("role"))?,
        })
    };
    // Sessions from before second factors have neither field: a password sign-in.
    let methods = fields.get("amr").map_or_else(
        || vec!["pwd".to_owned()],
        |amr| amr.split_whitespace().map(str::to_owned).collect(),
    );
    let second_factor_at = match fields.get("sfa").map(String::as_str) {
        None | Some("") => None,
        Some(at) => Some(at.parse::<i64>().map_err(|_| corrupt("sfa"))?),
    };
    Ok(SessionRecord {
        session_id,
        account_id,
        created_at: ms("created_ms")?,
        absolute_expiry: ms("absolute_expiry_ms")?,
        active,
        methods,
        second_factor_at,
        // Sessions from before names were kept have none.
        display_name: fields.get("name").cloned().unwrap_or_default(),
    })
}

/// A record we cannot read is treated as a store failure (callers answer Unavailable) rather
/// than as "no session", so corruption never silently signs anyone in or out.
fn corrupt(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "malformed session record",
        what.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn secrets_are_256_bit_base64url() {
        let a = random_secret();
        let b = random_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn token_hash_is_hex_sha256() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn record_round_trip() {
        let org = Uuid::new_v4();
        let account = Uuid::new_v4();
        let mut fields = HashMap::from([
            ("account_id".to_owned(), account.to_string()),
            ("created_ms".to_owned(), "1700000000000".to_owned()),
            ("absolute_expiry_ms".to_owned(), "1700000060000".to_owned()),
            ("org".to_owned(), String::new()),
            ("role".to_owned(), String::new()),
        ]);
        let record = parse_record("sid".into(), &fields).unwrap();
        assert_eq!(record.account_id, account);
        assert_eq!(record.active, None);
        assert_eq!(record.created_at.timestamp_millis(), 1_700_000_000_000);

        fields.insert("org".into(), org.to_string());
        fields.insert("role".into(), "PRACTICE_USER".into());
        let record = parse_record("sid".into(), &fields).unwrap();
        assert_eq!(
            record.active,
            Some(ActiveGrant {
                organisation_id: org,
                role: Role::PracticeUser
            })
        );

        fields.insert("role".into(), "NOT_A_ROLE".into());
        assert!(parse_record("sid".into(), &fields).is_err());
        fields.remove("account_id");
        assert!(parse_record("sid".into(), &fields).is_err());
    }
}
