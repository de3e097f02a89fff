//! Per-account failure counters and locks in Redis.
//!
//! One hash per account, `{namespace}identity:{<account_id>}:lockout` (the account's hash tag,
//! [`cqrs_auth::account_key_prefix`], as its sessions), with the fields
//! `failures`, `locked_until_ms`, `permanent` and `durable`. Everything that decides whether a
//! password may be checked happens inside ONE Lua script, so parallel attempts are serialised
//! by Redis and can never check more passwords than the policy allows:
//!
//! * a locked account (temporary lock not yet over, or permanent) answers `Locked` and the
//!   counter does not move;
//! * otherwise the failure is counted *before* the password is checked. A right password then
//!   resets the counter ([`LockoutStore::record_success`]); a wrong one leaves the count as it
//!   is. A right password of an account with a second factor only takes its own count back
//!   ([`LockoutStore::forgive_attempt`]): the code comes through the same gate, and only a
//!   right code resets the counter. Counting up front is what makes 200 parallel wrong passwords at threshold `T` produce
//!   at most `T` verifications and a stored counter of exactly `T`.
//!
//! The wait after each failure comes from [`LockoutPolicy::waits_ms`], so the rule lives in the
//! domain module and the script only applies the table. The clock is an argument (never Redis'
//! `TIME`) so the service and the tests decide what "now" is.
//!
//! The counted attempt is confirmed by `replica_acks` replicas before the password is checked
//! ([`RedisConnection::exec_replicated`]): a failover that loses the count would otherwise
//! hand out fresh guesses. Unconfirmed, the attempt is refused as the store being unavailable.
//!
//! `permanent` is set by the script when the count reaches `permanent_after` (that attempt is
//! still checked: the service records the permanent lock in Postgres only if the password is
//! wrong). [`LockoutStore::set_permanent`] then marks the lock `durable`, a mirror of the
//! Postgres flag so locked answers need no database round trip. A durable lock survives a late
//! `record_success` from an attempt that started earlier; only [`LockoutStore::clear`] (the
//! service-desk unlock) removes it.

use std::fmt;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use cqrs_redis::RedisConnection;
use redis::{AsyncCommands, ErrorKind, RedisError, Script};

use cqrs_auth::account_key_prefix;
use uuid::Uuid;

use crate::domain::lockout::LockoutPolicy;

/// KEYS[1] = lockout hash; ARGV = now_ms, failure_window_ms, permanent_after, waits...
/// (ARGV[3 + n] is the wait after n failures; 0 or missing = no lock).
/// Returns `{0, locked_until_ms}` (`-1` = permanent) or `{1, failures, permanent_reached}`.
const BEGIN_ATTEMPT_LUA: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local permanent_after = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'permanent', 'locked_until_ms')
if state[1] then
  return {0, -1}
end
local locked_until = tonumber(state[2])
if locked_until and locked_until > now then
  return {0, locked_until}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= permanent_after then
  redis.call('HSET', KEYS[1], 'permanent', '1')
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', window))
  return {1, failures, 1}
end
local ttl = window
local wait = tonumber(ARGV[3 + failures]) or 0
if wait > 0 then
  redis.call('HSET', KEYS[1], 'locked_until_ms', string.format('%.0f', now + wait))
  -- The lock must not vanish with the counter before it is over.
  if wait > ttl then
    ttl = wait
  end
end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl))
return {1, failures, 0}
";

/// KEYS[1] = lockout hash. Deletes it unless the lock was made durable (see module docs).
const RECORD_SUCCESS_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'durable') == 1 then
  return 0
end
return redis.call('DEL', KEYS[1])
";

/// KEYS[1] = lockout hash. Takes back the one failure counted for an attempt that turned out
/// right but does not finish a sign-in (the password of an account with a second factor),
/// with the lock that count started: the gate had let the attempt through, so any lock now
/// set was set by it. A durable lock stays.
const FORGIVE_ATTEMPT_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'durable') == 1 then
  return 0
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', -1)
if failures <= 0 then
  return redis.call('DEL', KEYS[1])
end
redis.call('HDEL', KEYS[1], 'locked_until_ms', 'permanent')
return 1
";

static FORGIVE_ATTEMPT: LazyLock<Script> = LazyLock::new(|| Script::new(FORGIVE_ATTEMPT_LUA));

/// What the lock-out allows for one sign-in (or change-password) attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptGate {
    /// Check the password. `failures` already counts this attempt; `permanent_reached` means a
    /// wrong password now must be recorded as a permanent lock.
    Proceed {
        failures: u32,
        permanent_reached: bool,
    },
    /// Do not check the password. `until_ms` is the end of a temporary lock (Unix ms), `None`
    /// for a permanent one.
    Locked { until_ms: Option<i64> },
}

/// Lock-out counters in Redis, one hash per account beside its sessions.
#[derive(Clone)]
pub struct LockoutStore {
    conn: RedisConnection,
    namespace: String,
}

impl fmt::Debug for LockoutStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockoutStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl LockoutStore {
    /// `namespace` prefixes every key (`""` in production, a per-test prefix in tests).
    pub fn new(conn: RedisConnection, namespace: impl Into<String>) -> Self {
        Self {
            conn,
            namespace: namespace.into(),
        }
    }

    fn key(&self, account_id: Uuid) -> String {
        format!("{}lockout", account_key_prefix(&self.namespace, account_id))
    }

    /// Decides, atomically, whether this attempt may check a password, counting it as a
    /// failure up front when it may. Call before verifying; call
    /// [`record_success`](Self::record_success) when the password was right.
    pub async fn begin_attempt(
        &self,
        account_id: Uuid,
        policy: &LockoutPolicy,
        now: DateTime<Utc>,
    ) -> Result<AttemptGate, RedisError> {
        // PEXPIRE 0 would delete the key at once and forget the count, so a degenerate window
        // still keeps the counter for a millisecond.
        let window_ms =
            clamp_ms(u64::try_from(policy.failure_window.as_millis()).unwrap_or(u64::MAX)).max(1);
        let mut attempt = redis::pipe();
        let invocation = attempt
            .cmd("EVAL")
            .arg(BEGIN_ATTEMPT_LUA)
            .arg(1)
            .arg(self.key(account_id))
            .arg(now.timestamp_millis())
            .arg(window_ms)
            // The capped threshold (SECURITY 2), not the raw field.
            .arg(policy.permanent_threshold());
        for wait in policy.waits_ms() {
            invocation.arg(clamp_ms(wait));
        }
        let (reply,): (Vec<i64>,) = self.conn.clone().exec_replicated(&attempt).await?;
        parse_gate(&reply)
    }

    /// A right password: the consecutive-failure count starts again (unless a permanent lock
    /// was already recorded by a parallel attempt).
    pub async fn record_success(&self, account_id: Uuid) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        self.success_command(account_id)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// [`record_success`](Self::record_success) as a command, for the transaction that
    /// starts the session the right password earned: one round trip for both (the keys share
    /// the account's hash tag, so they are in one slot of a cluster).
    pub fn success_command(&self, account_id: Uuid) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RECORD_SUCCESS_LUA).arg(1).arg(self.key(account_id));
        cmd
    }

    /// Failures counted so far (0 when there is no record). Never creates a key.
    /// Takes back the failure counted for an attempt that was right but is not the end of
    /// the sign-in (see [`FORGIVE_ATTEMPT_LUA`]): the count is as before the attempt.
    pub async fn forgive_attempt(&self, account_id: Uuid) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        FORGIVE_ATTEMPT
            .key(self.key(account_id))
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn failures(&self, account_id: Uuid) -> Result<u32, RedisError> {
        let mut conn = self.conn.clone();
        let failures: Option<u32> = conn.hget(self.key(account_id), "failures").await?;
        Ok(failures.unwrap_or(0))
    }

    /// When a lock now in force on the account ends (Unix ms): the end of a temporary lock,
    /// or, for a permanent flag no durable lock backs yet, the expiry of the counter it lapses
    /// with. `None` when attempts are not refused, or are refused for good (a durable permanent
    /// lock mirrors Postgres, which reports it). Read-only: never creates a key.
    pub async fn locked_until(
        &self,
        account_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, RedisError> {
        Ok(self
            .locked_until_many(&[account_id], now)
            .await?
            .pop()
            .flatten())
    }

    /// [`locked_until`](Self::locked_until) for several accounts in one round trip, in order.
    pub async fn locked_until_many(
        &self,
        account_ids: &[Uuid],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>, RedisError> {
        if account_ids.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline per account, sent together: a cluster keeps accounts on different
        // nodes, and a pipeline goes to one.
        let now_ms = now.timestamp_millis();
        let reads = account_ids.iter().map(|&id| {
            let key = self.key(id);
            let mut conn = self.conn.clone();
            async move {
                let mut read = redis::pipe();
                read.hmget(&key, &["permanent", "durable", "locked_until_ms"])
                    .pttl(&key);
                let (fields, ttl_ms): (LockFields, i64) = read.query_async(&mut conn).await?;
                Ok::<_, RedisError>(lock_end(&fields, ttl_ms, now_ms))
            }
        });
        futures::future::try_join_all(reads).await
    }

    /// Service-desk unlock: forgets the count and any lock, temporary or permanent.
    pub async fn clear(&self, account_id: Uuid) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(self.key(account_id)).await
    }

    /// Mirrors a permanent lock recorded in Postgres, without expiry, so locked answers need
    /// no database read and a late success from an earlier attempt cannot lift it.
    pub async fn set_permanent(&self, account_id: Uuid) -> Result<(), RedisError> {
        let key = self.key(account_id);
        let mut lock = redis::pipe();
        lock.hset_multiple(&key, &[("permanent", "1"), ("durable", "1")])
            .persist(&key);
        let _: redis::Value = self.conn.clone().exec_replicated(&lock).await?;
        Ok(())
    }
}

/// `permanent`, `durable` and `locked_until_ms` of a lock-out hash (all absent without one).
type LockFields = (Option<String>, Option<String>, Option<i64>);

/// See [`LockoutStore::locked_until`]; `ttl_ms` is the key's PTTL (negative: no key, or no
/// expiry).
fn lock_end((permanent, durable, until_ms): &LockFields, ttl_ms: i64, now_ms: i64) -> Option<i64> {
    if permanent.is_some() {
        return (durable.is_none() && ttl_ms > 0).then(|| now_ms.saturating_add(ttl_ms));
    }
    until_ms.filter(|&until| until > now_ms)
}

/// Lua numbers are doubles and PEXPIRE refuses times that overflow, so durations are kept
/// below 2^50 ms (tens of thousands of years): exact in a double even when added to "now".
fn clamp_ms(ms: u64) -> u64 {
    ms.min(1 << 50)
}

fn parse_gate(reply: &[i64]) -> Result<AttemptGate, RedisError> {
    match *reply {
        [0, until] => Ok(AttemptGate::Locked {
            until_ms: (until >= 0).then_some(until),
        }),
        [1, failures, reached] => Ok(AttemptGate::Proceed {
            failures: u32::try_from(failures).map_err(|_| unexpected_reply())?,
            permanent_reached: reached == 1,
        }),
        _ => Err(unexpected_reply()),
    }
}

fn unexpected_reply() -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "unexpected reply from the lock-out script",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ends() {
        let now = 1_700_000_000_000;
        let some = |s: &str| Some(s.to_owned());
        // No key, or a counter without a lock.
        assert_eq!(lock_end(&(None, None, None), -2, now), None);
        assert_eq!(lock_end(&(None, None, None), 86_400_000, now), None);
        // A temporary lock, in force or over.
        assert_eq!(
            lock_end(&(None, None, Some(now + 60_000)), 86_400_000, now),
            Some(now + 60_000)
        );
        assert_eq!(lock_end(&(None, None, Some(now)), 86_400_000, now), None);
        // The script's permanent flag lapses with the counter until made durable.
        assert_eq!(
            lock_end(&(some("1"), None, Some(now - 5)), 3_600_000, now),
            Some(now + 3_600_000)
        );
        assert_eq!(lock_end(&(some("1"), some("1"), None), -1, now), None);
        assert_eq!(lock_end(&(some("1"), None, None), -1, now), None);
    }

    #[test]
    fn gate_replies() {
        assert_eq!(
            parse_gate(&[0, -1]).ok(),
            Some(AttemptGate::Locked { until_ms: None })
        );
        assert_eq!(
            parse_gate(&[0, 1_700_000_000_000]).ok(),
            Some(AttemptGate::Locked {
                until_ms: Some(1_700_000_000_000)
            })
        );
        assert_eq!(
            parse_gate(&[1, 3, 0]).ok(),
            Some(AttemptGate::Proceed {
                failures: 3,
                permanent_reached: false
            })
        );
        assert_eq!(
            parse_gate(&[1, 10, 1]).ok(),
            Some(AttemptGate::Proceed {
                failures: 10,
                permanent_reached: true
            })
        );
        assert!(parse_gate(&[]).is_err());
        assert!(parse_gate(&[1, -1, 0]).is_err());
        assert!(parse_gate(&[2, 0]).is_err());
    }
}
