//! Access requests.

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use cqrs_runtime::paging::{Page, PageToken, paginate};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{ListFilter, StoreError};
use crate::domain::AccessRequestState;

/// The unique index that allows one PENDING request per account, organisation and role.
pub const ONE_PENDING: &str = "access_requests_one_pending";

macro_rules! columns {
    () => {
        "id, account_id, organisation_id, organisation_name, organisation_path, role, reason, \
         state, reviewer_kind, reviewer_id, decision_reason, reviewed_at, grant_id, created_at, \
         updated_at"
    };
}

/// A List query over `access_requests`; `$scope` is the condition on `$1`, the scope root.
/// The subtree form (`@>`) can use the GIN index on `organisation_path`; the other matches
/// everything.
macro_rules! list_sql {
    ($scope:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM access_requests WHERE ",
            $scope,
            " \
           AND ($2::text[] IS NULL OR role = ANY($2)) \
           AND ($3::text IS NULL OR state = $3) \
           AND ($4::uuid IS NULL OR account_id = $4) \
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6)) \
         ORDER BY created_at DESC, id DESC LIMIT $7"
        )
    };
}

const LIST_EVERYWHERE: &str = list_sql!("$1::uuid IS NULL");
const LIST_SUBTREE: &str = list_sql!("organisation_path @> ARRAY[$1::uuid]");

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AccessRequestRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub organisation_id: Uuid,
    pub organisation_name: String,
    pub organisation_path: Vec<Uuid>,
    pub role: String,
    pub reason: String,
    pub state: String,
    /// Who made the last transition: the reviewer, or the requester for a withdrawal.
    pub reviewer_kind: Option<String>,
    pub reviewer_id: Option<String>,
    pub decision_reason: String,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub grant_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AccessRequestRow {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    pub fn state(&self) -> Option<AccessRequestState> {
        AccessRequestState::parse(&self.state)
    }
}

/// A new access request, as validated by the api.
#[derive(Clone, Debug)]
pub struct NewAccessRequest<'a> {
    pub id: Uuid,
    pub account_id: Uuid,
    pub organisation_id: Uuid,
    pub organisation_name: &'a str,
    pub organisation_path: &'a [Uuid],
    pub role: Role,
    pub reason: &'a str,
    pub now: DateTime<Utc>,
}

/// Inserts a PENDING request. A PENDING one for the same account, organisation and role is
/// [`StoreError::Conflict`] ([`ONE_PENDING`]).
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewAccessRequest<'_>,
) -> Result<AccessRequestRow, StoreError> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO access_requests (id, account_id, organisation_id, organisation_name, \
             organisation_path, role, reason, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8, $8) RETURNING ",
        columns!()
    ))
    .bind(new.id)
    .bind(new.account_id)
    .bind(new.organisation_id)
    .bind(new.organisation_name)
    .bind(new.organisation_path)
    .bind(new.role.as_str())
    .bind(new.reason)
    .bind(new.now)
    .fetch_one(conn)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<AccessRequestRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM access_requests WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The request, locked for the rest of the transaction: a review and a withdrawal of one
/// request queue here, and the second finds the first's final state.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<AccessRequestRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM access_requests WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// A transition of a locked request: a review or a withdrawal.
#[derive(Clone, Copy, Debug)]
pub struct Transition<'a> {
    pub state: AccessRequestState,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub reason: &'a str,
    pub grant_id: Option<Uuid>,
    pub now: DateTime<Utc>,
}

pub async fn set_state(
    conn: &mut PgConnection,
    id: Uuid,
    transition: Transition<'_>,
) -> Result<AccessRequestRow, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE access_requests SET state = $2, reviewer_kind = $3, reviewer_id = $4, \
             decision_reason = $5, grant_id = $6, reviewed_at = $7, updated_at = $7 \
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(transition.state.as_str())
    .bind(transition.actor_kind)
    .bind(transition.actor_id)
    .bind(transition.reason)
    .bind(transition.grant_id)
    .bind(transition.now)
    .fetch_one(conn)
    .await?)
}

/// Requests matching `filter` (and, if given, of one requester), newest first.
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
    requester: Option<Uuid>,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<AccessRequestRow>, StoreError> {
    let rows: Vec<AccessRequestRow> = sqlx::query_as(if filter.root.is_some() {
        LIST_SUBTREE
    } else {
        LIST_EVERYWHERE
    })
    .bind(filter.root)
    .bind(filter.roles.as_deref())
    .bind(filter.state)
    .bind(requester)
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
