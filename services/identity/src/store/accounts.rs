//! Accounts, their links and password history in Postgres.
//!
//! Reads take the pool; writes take the caller's transaction so the api can commit a change
//! with its audit event, its mail and its session changes as one unit.

use chrono::{DateTime, Utc};
use cqrs_runtime::paging::{Page, PageToken, paginate};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::StoreError;
use crate::domain::account::{AccountState, Realm};
use crate::domain::links::LinkPurpose;

/// How many times CreateAccount draws a new User ID after a clash before giving up. With
/// 17 576 000 possible IDs and initials-based letters, more than a few clashes in a row means
/// the initials' space is nearly full; the caller then gets an internal error, not a loop.
const USER_ID_ATTEMPTS: usize = 20;

/// The columns of [`AccountRow`], as a macro so queries stay `&'static str`.
macro_rules! account_columns {
    () => {
        "id, realm, user_id, email, first_name, last_name, state, password_hash, \
         password_changed_at, locked_at, lock_reason, created_at, updated_at, second_factor_at"
    };
}

macro_rules! link_columns {
    () => {
        "l.id, l.purpose, l.account_id, l.email, l.exempt_min_age, l.created_at, l.expires_at"
    };
}

/// An account as stored. `password_hash` is a PHC string: never log or return it.
#[derive(Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub realm: String,
    pub user_id: Option<String>,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub state: String,
    pub password_hash: Option<String>,
    pub password_changed_at: Option<DateTime<Utc>>,
    pub locked_at: Option<DateTime<Utc>>,
    pub lock_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the account's authenticator app was confirmed; `None` without one.
    pub second_factor_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRow")
            .field("id", &self.id)
            .field("realm", &self.realm)
            .field("user_id", &self.user_id)
            .field("state", &self.state)
            .field("locked", &self.locked_at.is_some())
            .finish_non_exhaustive()
    }
}

impl AccountRow {
    pub fn realm(&self) -> Option<Realm> {
        Realm::parse(&self.realm)
    }

    pub fn state(&self) -> Option<AccountState> {
        AccountState::parse(&self.state)
    }

    pub fn is_active(&self) -> bool {
        self.state() == Some(AccountState::Active)
    }
}

/// A link that may still be used.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LinkRow {
    pub id: Uuid,
    pub purpose: String,
    pub account_id: Uuid,
    pub email: String,
    pub exempt_min_age: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A new account; `user_id` draws a candidate User ID for NATIONAL accounts.
pub struct NewAccount<'a> {
    pub realm: Realm,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    /// The client's request id and the hash of the request, for idempotent retries.
    pub request: Option<(Uuid, [u8; 32])>,
}

/// A new link; only the token's hash is stored.
pub struct NewLink {
    pub purpose: LinkPurpose,
    pub token_hash: [u8; 32],
    pub expires_at: DateTime<Utc>,
    pub exempt_min_age: bool,
}

/// ListAccounts filters.
#[derive(Clone, Debug, Default)]
pub struct AccountFilter {
    pub realm: Option<Realm>,
    pub state: Option<AccountState>,
    /// Case-insensitive prefix of the e-mail, User ID, first or last name.
    pub query: Option<String>,
    pub ids: Option<Vec<Uuid>>,
}

/// What a CreateAccount insert found.
pub enum Created {
    /// A new account.
    New(Box<AccountRow>),
    /// The request id was used before for the same request: the account it created.
    Retry(Uuid),
}

pub async fn account(pool: &PgPool, id: Uuid) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The account, locked for the rest of the transaction.
pub async fn account_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The NATIONAL account with this User ID (already normalised to upper case).
pub async fn account_by_user_id(
    db: impl PgExecutor<'_>,
    user_id: &str,
) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(db)
    .await?)
}

/// The account of `realm` with this address (compared without case, like the unique index).
pub async fn account_by_email(
    db: impl PgExecutor<'_>,
    realm: Realm,
    email: &str,
) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE realm = $1 AND lower(email) = lower($2)"
    ))
    .bind(realm.as_str())
    .bind(email)
    .fetch_optional(db)
    .await?)
}

/// Accounts in e-mail order. The page token names the last account of the previous page; the
/// e-mail of an account never changes, so the order is stable.
pub async fn list(
    pool: &PgPool,
    filter: &AccountFilter,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<AccountRow>, StoreError> {
    let pattern = filter
        .query
        .as_deref()
        .map(|q| format!("{}%", escape_like(&q.to_lowercase())));
    let rows: Vec<AccountRow> = sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts \
         WHERE ($1::text IS NULL OR realm = $1) \
           AND ($2::text IS NULL OR state = $2) \
           AND ($3::text IS NULL OR lower(email) LIKE $3 OR lower(user_id) LIKE $3 \
                OR lower(first_name) LIKE $3 OR lower(last_name) LIKE $3) \
           AND ($4::uuid[] IS NULL OR id = ANY($4)) \
           AND ($5::uuid IS NULL OR (email, id) > (SELECT email, id FROM accounts WHERE id = $5)) \
         ORDER BY email, id LIMIT $6"
    ))
    .bind(filter.realm.map(Realm::as_str))
    .bind(filter.state.map(AccountState::as_str))
    .bind(pattern)
    .bind(filter.ids.as_deref())
    .bind(after.map(|t| t.id))
    .bind(page_size + 1)
    .fetch_all(pool)
    .await?;
    Ok(paginate(rows, page_size, |r| PageToken {
        time: r.created_at,
        id: r.id,
    }))
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The request an id was first used for: `Ok(None)` if unused, the account it created if the
/// request is the same, [`StoreError::RequestIdReused`] otherwise.
pub async fn earlier_request(
    pool: &PgPool,
    request_id: Uuid,
    hash: &[u8; 32],
) -> Result<Option<Uuid>, StoreError> {
    let found: Option<(Vec<u8>, Uuid)> = sqlx::query_as(
        "SELECT request_hash, account_id FROM account_requests WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    match found {
        None => Ok(None),
        Some((stored, account_id)) if stored.as_slice() == hash.as_slice() => Ok(Some(account_id)),
        Some(_) => Err(StoreError::RequestIdReused),
    }
}

/// Inserts an account (and its request key) on `conn`. NATIONAL accounts get a User ID from
/// `next_user_id`, redrawn on a clash. A request id already taken (by a parallel retry)
/// gives [`Created::Retry`] with nothing written; the caller rolls back and reads the first
/// answer with [`earlier_request`].
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewAccount<'_>,
    mut next_user_id: impl FnMut() -> String,
    now: DateTime<Utc>,
) -> Result<Created, StoreError> {
    let id = Uuid::now_v7();
    if let Some((request_id, hash)) = &new.request {
        let claimed: Option<(Uuid,)> = sqlx::query_as(
            "INSERT INTO account_requests (request_id, request_hash, account_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
        )
        .bind(request_id)
        .bind(hash.as_slice())
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if claimed.is_none() {
            return Ok(Created::Retry(*request_id));
        }
    }

    for _ in 0..USER_ID_ATTEMPTS {
        let user_id = match new.realm {
            Realm::National => Some(next_user_id()),
            Realm::Local => None,
        };
        // ON CONFLICT without a target absorbs a clash on any unique index, without aborting
        // the transaction; which one it was is decided below.
        let inserted: Option<AccountRow> = sqlx::query_as(concat!(
            "INSERT INTO accounts (id, realm, user_id, email, first_name, last_name, state, \
                 created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'PENDING_REGISTRATION', $7, $7) \
             ON CONFLICT DO NOTHING RETURNING ",
            account_columns!()
        ))
        .bind(id)
        .bind(new.realm.as_str())
        .bind(&user_id)
        .bind(new.email)
        .bind(new.first_name)
        .bind(new.last_name)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = inserted {
            return Ok(Created::New(Box::new(row)));
        }
        let (email_taken,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE realm = $1 AND lower(email) = lower($2))",
        )
        .bind(new.realm.as_str())
        .bind(new.email)
        .fetch_one(&mut *conn)
        .await?;
        if email_taken {
            return Err(StoreError::EmailTaken);
        }
    }
    Err(StoreError::UserIdsExhausted)
}

/// Whether there is no account at all (bootstrap).
pub async fn is_empty(conn: &mut PgConnection) -> Result<bool, StoreError> {
    let (empty,): (bool,) = sqlx::query_as("SELECT NOT EXISTS (SELECT 1 FROM accounts)")
        .fetch_one(conn)
        .await?;
    Ok(empty)
}

/// Holds a transaction-scoped advisory lock, so replicas starting together take turns.
pub async fn advisory_lock(conn: &mut PgConnection, key: i64) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Issues a link, revoking the account's older unused links of the same purpose.
pub async fn insert_link(
    conn: &mut PgConnection,
    account: &AccountRow,
    link: &NewLink,
    now: DateTime<Utc>,
) -> Result<Uuid, StoreError> {
    // Two requests for the same account take turns here, so the second revokes the first's
    // link instead of both revoking what was there before (one live link: `links_one_live`).
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(account.id)
        .execute(&mut *conn)
        .await?;
    revoke_links(&mut *conn, account.id, link.purpose, now).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO links (id, token_hash, purpose, account_id, email, exempt_min_age, \
             created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(link.token_hash.as_slice())
    .bind(link.purpose.as_str())
    .bind(account.id)
    .bind(&account.email)
    .bind(link.exempt_min_age)
    .bind(now)
    .bind(link.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Revokes the account's unused links of `purpose` (e.g. reset links after a password change).
pub async fn revoke_links(
    conn: &mut PgConnection,
    account_id: Uuid,
    purpose: LinkPurpose,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE links SET revoked_at = $3 \
         WHERE account_id = $1 AND purpose = $2 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(account_id)
    .bind(purpose.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The usable link with this token hash and purpose, and its account: unused, not revoked,
/// not expired, and still bound to the account's address. Does not use it up.
pub async fn open_link(
    pool: &PgPool,
    token_hash: &[u8; 32],
    purpose: LinkPurpose,
    now: DateTime<Utc>,
) -> Result<Option<(LinkRow, AccountRow)>, StoreError> {
    let link: Option<LinkRow> = sqlx::query_as(concat!(
        "SELECT ",
        link_columns!(),
        " FROM links l JOIN accounts a ON a.id = l.account_id \
         WHERE l.token_hash = $1 AND l.purpose = $2 AND l.used_at IS NULL \
           AND l.revoked_at IS NULL AND l.expires_at > $3 AND lower(a.email) = lower(l.email)"
    ))
    .bind(token_hash.as_slice())
    .bind(purpose.as_str())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    let Some(link) = link else {
        return Ok(None);
    };
    Ok(account(pool, link.account_id).await?.map(|a| (link, a)))
}

/// Uses a link up. `false` when it was used, revoked or expired in the meantime: the row lock
/// makes a parallel second use wait for the first and then find `used_at` set.
pub async fn consume_link(
    conn: &mut PgConnection,
    link_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let used: Option<(Uuid,)> = sqlx::query_as(
        "UPDATE links SET used_at = $2 \
         WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
         RETURNING id",
    )
    .bind(link_id)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(used.is_some())
}

/// The hashes of the current and up to `previous` earlier passwords, newest first.
pub async fn recent_password_hashes(
    pool: &PgPool,
    account_id: Uuid,
    previous: usize,
) -> Result<Vec<String>, StoreError> {
    let limit = i64::try_from(previous.saturating_add(1)).unwrap_or(i64::MAX);
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT password_hash FROM password_history WHERE account_id = $1 \
         ORDER BY set_at DESC, id DESC LIMIT $2",
    )
    .bind(account_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(h,)| h).collect())
}

/// Sets a new password (and makes a pending account ACTIVE when `activate`), records it in the
/// history and forgets history beyond `keep` entries. `None` if the account is gone or, with
/// `activate`, no longer pending.
pub async fn set_password(
    conn: &mut PgConnection,
    account_id: Uuid,
    phc: &str,
    activate: bool,
    keep: usize,
    now: DateTime<Utc>,
) -> Result<Option<AccountRow>, StoreError> {
    let row: Option<AccountRow> = sqlx::query_as(concat!(
        "UPDATE accounts SET password_hash = $2, password_changed_at = $3, updated_at = $3, \
             state = CASE WHEN $4 THEN 'ACTIVE' ELSE state END \
         WHERE id = $1 AND (NOT $4 OR state = 'PENDING_REGISTRATION') \
         RETURNING ",
        account_columns!()
    ))
    .bind(account_id)
    .bind(phc)
    .bind(now)
    .bind(activate)
    .fetch_optional(&mut *conn)
    .await?;
    if row.is_none() {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO password_history (id, account_id, password_hash, set_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(phc)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // Old hashes are only a liability once the history rule no longer needs them.
    sqlx::query(
        "DELETE FROM password_history WHERE account_id = $1 AND id NOT IN ( \
             SELECT id FROM password_history WHERE account_id = $1 \
             ORDER BY set_at DESC, id DESC LIMIT $2)",
    )
    .bind(account_id)
    .bind(i64::try_from(keep.max(1)).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    Ok(row)
}

/// Replaces a hash made with old settings by one made with the current ones, in the account
/// and its history. Compare-and-set on the old hash, so a password changed in the meantime
/// is left alone.
pub async fn rehash(
    pool: &PgPool,
    account_id: Uuid,
    old_phc: &str,
    new_phc: &str,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let updated =
        sqlx::query("UPDATE accounts SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
            .bind(account_id)
            .bind(old_phc)
            .bind(new_phc)
            .execute(&mut *tx)
            .await?;
    if updated.rows_affected() == 1 {
        sqlx::query(
            "UPDATE password_history SET password_hash = $3 \
             WHERE account_id = $1 AND password_hash = $2",
        )
        .bind(account_id)
        .bind(old_phc)
        .bind(new_phc)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Moves the account from `from` to `to`; `None` if it is not in `from` (or does not exist).
pub async fn set_state(
    conn: &mut PgConnection,
    account_id: Uuid,
    from: AccountState,
    to: AccountState,
    now: DateTime<Utc>,
) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE accounts SET state = $3, updated_at = $4 WHERE id = $1 AND state = $2 RETURNING ",
        account_columns!()
    ))
    .bind(account_id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// Records a permanent lock; `None` if the account was already locked (a parallel attempt
/// recorded it first) or does not exist.
pub async fn lock(
    conn: &mut PgConnection,
    account_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE accounts SET locked_at = $2, lock_reason = $3, updated_at = $2 \
         WHERE id = $1 AND locked_at IS NULL RETURNING ",
        account_columns!()
    ))
    .bind(account_id)
    .bind(now)
    .bind(reason)
    .fetch_optional(conn)
    .await?)
}

/// Lifts a permanent lock (if any).
pub async fn unlock(
    conn: &mut PgConnection,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<AccountRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE accounts SET locked_at = NULL, lock_reason = NULL, updated_at = $2 \
         WHERE id = $1 RETURNING ",
        account_columns!()
    ))
    .bind(account_id)
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// Records that the bootstrap account `account_id` still needs its directory grant.
pub async fn insert_bootstrap_grant(
    conn: &mut PgConnection,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO bootstrap_grants (account_id, created_at) VALUES ($1, $2)")
        .bind(account_id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Erases the personal data of accounts disabled before `cutoff`, a hundred per transaction:
/// names and e-mail address are replaced, links, authenticator app and recovery codes
/// removed. The User ID stays, so the audit trail still says whose account it was. Each
/// erasure is audited without the values erased (the trail would otherwise keep them); what
/// earlier events recorded stays until audit retention purges it. Answers how many.
pub async fn erase_disabled(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut erased = 0;
    loop {
        let mut tx = pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM accounts \
             WHERE state = 'DISABLED' AND updated_at < $1 AND personal_data_erased_at IS NULL \
             ORDER BY updated_at LIMIT 100 FOR UPDATE SKIP LOCKED",
        )
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(erased);
        }
        sqlx::query(
            "UPDATE accounts SET email = 'erased+' || id || '@erased.invalid', \
                 first_name = 'Erased', last_name = 'account', second_factor_at = NULL, \
                 personal_data_erased_at = $2, updated_at = $2 \
             WHERE id = ANY($1)",
        )
        .bind(&ids)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for table in ["links", "totp_factors", "recovery_codes"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE account_id = ANY($1)"
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        // The captured before-values are the very data being erased.
        sqlx::query("DELETE FROM audit_pending_changes WHERE txid = txid_current()")
            .execute(&mut *tx)
            .await?;
        for id in &ids {
            let target = id.to_string();
            let event = cqrs_runtime::audit::Event {
                action: "ERASE_PERSONAL_DATA",
                target_type: "account",
                target_id: &target,
                outcome: "success",
                details: serde_json::json!({ "disabled_before": cutoff.to_rfc3339() }),
                changes: cqrs_runtime::audit::Changes::new().field(
                    "accounts.personal_data",
                    "kept",
                    "erased",
                ),
            };
            cqrs_runtime::audit::record(
                &mut tx,
                now,
                &cqrs_runtime::audit::Actor::system("retention"),
                event,
            )
            .await?;
        }
        tx.commit().await?;
        erased += ids.len();
    }
}

/// Bootstrap accounts whose directory grant is not yet confirmed.
pub async fn pending_bootstrap_grants(pool: &PgPool) -> Result<Vec<Uuid>, StoreError> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT account_id FROM bootstrap_grants WHERE done_at IS NULL ORDER BY created_at",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Marks the bootstrap grant of `account_id` as made, with its audit event.
pub async fn finish_bootstrap_grant(
    pool: &PgPool,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE bootstrap_grants SET done_at = $2 WHERE account_id = $1 AND done_at IS NULL",
    )
    .bind(account_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() > 0 {
        let id = account_id.to_string();
        let event = cqrs_runtime::audit::Event {
            action: "CONFIRM_BOOTSTRAP_GRANT",
            target_type: "account",
            target_id: &id,
            outcome: "success",
            details: serde_json::json!({ "role": "SERVICE_DESK" }),
            changes: cqrs_runtime::audit::Changes::new(),
        };
        cqrs_runtime::audit::record(
            &mut tx,
            now,
            &cqrs_runtime::audit::Actor::system("bootstrap"),
            event,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("a_b%c\\"), "a\\_b\\%c\\\\");
        assert_eq!(escape_like("jsm"), "jsm");
    }
}
