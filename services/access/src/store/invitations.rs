//! Invitations. The link token is stored only as its SHA-256 and never read back out: rows
//! loaded here carry no token material.

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use cqrs_runtime::paging::{Page, PageToken, paginate};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{ListFilter, StoreError};
use crate::domain::InvitationState;

/// The unique index that allows one SENT invitation per person, organisation and role.
pub const ONE_SENT: &str = "invitations_one_sent";

macro_rules! columns {
    () => {
        "id, email, first_name, last_name, organisation_id, organisation_name, \
         organisation_path, role, state, inviter_kind, inviter_id, account_id, \
         changed_by_kind, changed_by_id, change_reason, created_at, updated_at, expires_at, \
         sent_at"
    };
}

/// A List query over `invitations`; `$scope` is the condition on `$1`, the scope root.
/// The subtree form (`@>`) can use the GIN index on `organisation_path`; the other matches
/// everything.
macro_rules! list_sql {
    ($scope:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM invitations WHERE ",
            $scope,
            " \
           AND ($2::text[] IS NULL OR role = ANY($2)) \
           AND ($3::text IS NULL OR \
                (CASE WHEN state = 'SENT' AND expires_at <= $4 THEN 'EXPIRED' ELSE state END) = $3) \
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6)) \
         ORDER BY created_at DESC, id DESC LIMIT $7"
        )
    };
}

const LIST_EVERYWHERE: &str = list_sql!("$1::uuid IS NULL");
const LIST_SUBTREE: &str = list_sql!("organisation_path @> ARRAY[$1::uuid]");

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub organisation_id: Uuid,
    pub organisation_name: String,
    /// The organisation, its parent, … the root (as the directory gave it at creation).
    pub organisation_path: Vec<Uuid>,
    pub role: String,
    pub state: String,
    pub inviter_kind: String,
    pub inviter_id: String,
    pub account_id: Option<Uuid>,
    pub changed_by_kind: String,
    pub changed_by_id: String,
    pub change_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
}

impl InvitationRow {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    /// The stored state (see `domain::invitation::effective` for the one to act on).
    pub fn stored_state(&self) -> Option<InvitationState> {
        InvitationState::parse(&self.state)
    }
}

/// A new invitation, as validated by the api.
#[derive(Clone, Debug)]
pub struct NewInvitation<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub organisation_id: Uuid,
    pub organisation_name: &'a str,
    pub organisation_path: &'a [Uuid],
    pub role: Role,
    pub inviter_kind: &'a str,
    pub inviter_id: &'a str,
    pub token_hash: &'a [u8; 32],
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Inserts a SENT invitation. A SENT one for the same address, organisation and role is
/// [`StoreError::Conflict`] ([`ONE_SENT`]).
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewInvitation<'_>,
) -> Result<InvitationRow, StoreError> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO invitations (id, email, first_name, last_name, organisation_id, \
             organisation_name, organisation_path, role, state, inviter_kind, inviter_id, \
             token_hash, changed_by_kind, changed_by_id, created_at, updated_at, expires_at, \
             sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'SENT', $9, $10, $11, $9, $10, $12, $12, $13, $12) \
         RETURNING ",
        columns!()
    ))
    .bind(new.id)
    .bind(new.email)
    .bind(new.first_name)
    .bind(new.last_name)
    .bind(new.organisation_id)
    .bind(new.organisation_name)
    .bind(new.organisation_path)
    .bind(new.role.as_str())
    .bind(new.inviter_kind)
    .bind(new.inviter_id)
    .bind(new.token_hash.as_slice())
    .bind(new.now)
    .bind(new.expires_at)
    .fetch_one(conn)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The invitation, locked for the rest of the transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The invitation whose current link has this token hash.
pub async fn by_token(
    pool: &PgPool,
    token_hash: &[u8; 32],
) -> Result<Option<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE token_hash = $1"
    ))
    .bind(token_hash.as_slice())
    .fetch_optional(pool)
    .await?)
}

/// [`by_token`], locked for the rest of the transaction: of parallel accepts of one link, the
/// others wait here and then find it no longer SENT.
pub async fn by_token_for_update(
    conn: &mut PgConnection,
    token_hash: &[u8; 32],
) -> Result<Option<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE token_hash = $1 FOR UPDATE"
    ))
    .bind(token_hash.as_slice())
    .fetch_optional(conn)
    .await?)
}

/// Who made a transition and why.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub reason: &'a str,
    pub now: DateTime<Utc>,
}

/// Moves a locked invitation to `state` (ACCEPTED also records the account and the names the
/// invitee confirmed).
pub async fn set_state(
    conn: &mut PgConnection,
    id: Uuid,
    state: InvitationState,
    change: Change<'_>,
    accepted: Option<(Uuid, &str, &str)>,
) -> Result<InvitationRow, StoreError> {
    let (account_id, first_name, last_name) = match accepted {
        Some((account, first, last)) => (Some(account), Some(first), Some(last)),
        None => (None, None, None),
    };
    Ok(sqlx::query_as(concat!(
        "UPDATE invitations SET state = $2, changed_by_kind = $3, changed_by_id = $4, \
             change_reason = $5, updated_at = $6, account_id = COALESCE($7, account_id), \
             first_name = COALESCE($8, first_name), last_name = COALESCE($9, last_name) \
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(state.as_str())
    .bind(change.kind)
    .bind(change.id)
    .bind(change.reason)
    .bind(change.now)
    .bind(account_id)
    .bind(first_name)
    .bind(last_name)
    .fetch_one(conn)
    .await?)
}

/// A new link for a locked SENT invitation: the old token's hash is replaced, so the old link
/// stops working in the same commit.
pub async fn resend(
    conn: &mut PgConnection,
    id: Uuid,
    token_hash: &[u8; 32],
    expires_at: DateTime<Utc>,
    change: Change<'_>,
) -> Result<InvitationRow, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE invitations SET token_hash = $2, expires_at = $3, sent_at = $4, \
             updated_at = $4, changed_by_kind = $5, changed_by_id = $6, change_reason = '' \
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(token_hash.as_slice())
    .bind(expires_at)
    .bind(change.now)
    .bind(change.kind)
    .bind(change.id)
    .fetch_one(conn)
    .await?)
}

/// SENT invitations whose link ran out by `now`, locked; rows another transaction holds are
/// skipped (it is acting on them, or another sweeper is). At most `limit`.
pub async fn due_for_update(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE state = 'SENT' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The run-out SENT invitation (if any) for this address, organisation and role, locked: it
/// must be recorded as EXPIRED before a new invitation can take its place.
pub async fn lapsed_for_update(
    conn: &mut PgConnection,
    email: &str,
    organisation_id: Uuid,
    role: Role,
    now: DateTime<Utc>,
) -> Result<Option<InvitationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM invitations WHERE email = $1 AND organisation_id = $2 AND role = $3 \
           AND state = 'SENT' AND expires_at <= $4 FOR UPDATE"
    ))
    .bind(email)
    .bind(organisation_id)
    .bind(role.as_str())
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// Invitations matching `filter`, newest first. The state filter uses the effective state at
/// `now`: a SENT invitation past its expiry is listed as EXPIRED.
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
    now: DateTime<Utc>,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<InvitationRow>, StoreError> {
    let rows: Vec<InvitationRow> = sqlx::query_as(if filter.root.is_some() {
        LIST_SUBTREE
    } else {
        LIST_EVERYWHERE
    })
    .bind(filter.root)
    .bind(filter.roles.as_deref())
    .bind(filter.state)
    .bind(now)
    .bind(after.map(|t| t.time))
    .bind(after.map(|t| t.id))
    .bind(page_size + 1)
    .fetch_all(pool)
    .await?;
    Ok(paginate(rows, page_size, |r| PageToken {
        time: r.created_at,
        id: r.id,
    }))
}
