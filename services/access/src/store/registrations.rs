//! Self-registrations.

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use cqrs_runtime::paging::{Page, PageToken, paginate};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{ListFilter, StoreError};
use crate::domain::RegistrationState;

macro_rules! columns {
    () => {
        "id, email, first_name, last_name, organisation_id, organisation_name, ods_code, \
         organisation_path, role, state, reviewer_kind, reviewer_id, decision_reason, \
         reviewed_at, account_id, created_at, updated_at"
    };
}

/// A List query over `registrations`; `$scope` is the condition on `$1`, the scope root.
/// The subtree form (`@>`) can use the GIN index on `organisation_path`; the other matches
/// everything.
macro_rules! list_sql {
    ($scope:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM registrations WHERE ",
            $scope,
            " \
           AND ($2::text[] IS NULL OR role = ANY($2)) \
           AND ($3::text IS NULL OR state = $3) \
           AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5)) \
         ORDER BY created_at DESC, id DESC LIMIT $6"
        )
    };
}

const LIST_EVERYWHERE: &str = list_sql!("$1::uuid IS NULL");
const LIST_SUBTREE: &str = list_sql!("organisation_path @> ARRAY[$1::uuid]");

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RegistrationRow {
    pub id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub organisation_id: Uuid,
    pub organisation_name: String,
    pub ods_code: String,
    pub organisation_path: Vec<Uuid>,
    pub role: String,
    pub state: String,
    pub reviewer_kind: Option<String>,
    pub reviewer_id: Option<String>,
    pub decision_reason: String,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub account_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RegistrationRow {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    pub fn state(&self) -> Option<RegistrationState> {
        RegistrationState::parse(&self.state)
    }
}

/// A new registration, as validated by the api.
#[derive(Clone, Debug)]
pub struct NewRegistration<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub organisation_id: Uuid,
    pub organisation_name: &'a str,
    pub ods_code: &'a str,
    pub organisation_path: &'a [Uuid],
    pub role: Role,
    pub now: DateTime<Utc>,
}

/// Inserts a PENDING registration.
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewRegistration<'_>,
) -> Result<RegistrationRow, StoreError> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO registrations (id, email, first_name, last_name, organisation_id, \
             organisation_name, ods_code, organisation_path, role, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'PENDING', $10, $10) RETURNING ",
        columns!()
    ))
    .bind(new.id)
    .bind(new.email)
    .bind(new.first_name)
    .bind(new.last_name)
    .bind(new.organisation_id)
    .bind(new.organisation_name)
    .bind(new.ods_code)
    .bind(new.organisation_path)
    .bind(new.role.as_str())
    .bind(new.now)
    .fetch_one(conn)
    .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<RegistrationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM registrations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The registration, locked for the rest of the transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<RegistrationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM registrations WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// A review of a locked registration.
#[derive(Clone, Copy, Debug)]
pub struct Review<'a> {
    pub state: RegistrationState,
    pub reviewer_kind: &'a str,
    pub reviewer_id: &'a str,
    pub reason: &'a str,
    pub account_id: Option<Uuid>,
    pub now: DateTime<Utc>,
}

pub async fn review(
    conn: &mut PgConnection,
    id: Uuid,
    review: Review<'_>,
) -> Result<RegistrationRow, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE registrations SET state = $2, reviewer_kind = $3, reviewer_id = $4, \
             decision_reason = $5, account_id = $6, reviewed_at = $7, updated_at = $7 \
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(review.state.as_str())
    .bind(review.reviewer_kind)
    .bind(review.reviewer_id)
    .bind(review.reason)
    .bind(review.account_id)
    .bind(review.now)
    .fetch_one(conn)
    .await?)
}

/// Registrations matching `filter`, newest first.
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<RegistrationRow>, StoreError> {
    let rows: Vec<RegistrationRow> = sqlx::query_as(if filter.root.is_some() {
        LIST_SUBTREE
    } else {
        LIST_EVERYWHERE
    })
    .bind(filter.root)
    .bind(filter.roles.as_deref())
    .bind(filter.state)
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
