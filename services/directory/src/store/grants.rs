//! Grants (account x organisation x role), always read with their organisation's name, ODS
//! code, kind and ancestry. Lists are newest first; a page token is the last row's
//! (created_at, id).

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use cqrs_runtime::paging::{Page, PageToken, paginate};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{OrganisationRow, StoreError};
use crate::domain::OrganisationKind;

/// The columns of [`GrantRow`] over `grants g JOIN organisations o`.
macro_rules! grant_columns {
    () => {
        "g.id, g.account_id, g.organisation_id, g.role, g.created_at, \
         o.name AS organisation_name, o.ods_code, o.kind AS organisation_kind, \
         o.path AS organisation_path"
    };
}

macro_rules! grant_select {
    () => {
        concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants g JOIN organisations o ON o.id = g.organisation_id "
        )
    };
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct GrantRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub organisation_id: Uuid,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub organisation_name: String,
    pub ods_code: String,
    pub organisation_kind: String,
    /// The organisation's ancestry (itself first … the root).
    pub organisation_path: Vec<Uuid>,
}

impl GrantRow {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }

    pub fn organisation_kind(&self) -> Option<OrganisationKind> {
        OrganisationKind::parse(&self.organisation_kind)
    }

    fn page_token(&self) -> PageToken {
        PageToken {
            time: self.created_at,
            id: self.id,
        }
    }
}

/// Inserts the grant unless the account already holds it. Returns the grant and whether it
/// is new.
pub async fn insert(
    conn: &mut PgConnection,
    account_id: Uuid,
    organisation_id: Uuid,
    role: Role,
    now: DateTime<Utc>,
) -> Result<(GrantRow, bool), StoreError> {
    let inserted: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO grants (id, account_id, organisation_id, role, created_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (account_id, organisation_id, role) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(organisation_id)
    .bind(role.as_str())
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    // A separate statement: its snapshot sees a grant a parallel transaction just committed
    // (the one the insert above waited for).
    let row: GrantRow = sqlx::query_as(concat!(
        grant_select!(),
        "WHERE g.account_id = $1 AND g.organisation_id = $2 AND g.role = $3"
    ))
    .bind(account_id)
    .bind(organisation_id)
    .bind(role.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok((row, inserted.is_some()))
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<GrantRow>, StoreError> {
    Ok(sqlx::query_as(concat!(grant_select!(), "WHERE g.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// The grant and whether the account holds the grant `active` (organisation, role), in one
/// round trip.
pub async fn get_and_active(
    pool: &PgPool,
    id: Uuid,
    active: (Uuid, Uuid, Role),
) -> Result<(Option<GrantRow>, bool), StoreError> {
    let (held,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM grants \
                        WHERE account_id = $1 AND organisation_id = $2 AND role = $3)",
    )
    .bind(active.0)
    .bind(active.1)
    .bind(active.2.as_str())
    .fetch_one(pool)
    .await?;
    Ok((get(pool, id).await?, held))
}

/// Whether the account holds the grant (organisation, role).
pub async fn holds(
    pool: &PgPool,
    account_id: Uuid,
    organisation_id: Uuid,
    role: Role,
) -> Result<bool, StoreError> {
    let (held,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM grants \
                        WHERE account_id = $1 AND organisation_id = $2 AND role = $3)",
    )
    .bind(account_id)
    .bind(organisation_id)
    .bind(role.as_str())
    .fetch_one(pool)
    .await?;
    Ok(held)
}

/// Removes one grant; the row as it was.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<Option<GrantRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "DELETE FROM grants g USING organisations o \
         WHERE g.id = $1 AND o.id = g.organisation_id RETURNING ",
        grant_columns!()
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Removes every grant of the account at `scope` or below it (every grant when `None`).
pub async fn delete_for_account(
    conn: &mut PgConnection,
    account_id: Uuid,
    scope: Option<Uuid>,
) -> Result<Vec<GrantRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "DELETE FROM grants g USING organisations o \
         WHERE g.account_id = $1 AND o.id = g.organisation_id \
           AND ($2::uuid IS NULL OR $2 = ANY(o.path)) RETURNING ",
        grant_columns!()
    ))
    .bind(account_id)
    .bind(scope)
    .fetch_all(conn)
    .await?)
}

/// Every grant of the account (for permission decisions: accounts hold a handful).
pub async fn all_for_account(pool: &PgPool, account_id: Uuid) -> Result<Vec<GrantRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        grant_select!(),
        "WHERE g.account_id = $1 ORDER BY g.created_at DESC, g.id DESC"
    ))
    .bind(account_id)
    .fetch_all(pool)
    .await?)
}

/// The grants held at `organisation_id` (and its descendants when asked), newest first.
pub async fn members(
    pool: &PgPool,
    organisation_id: Uuid,
    include_descendants: bool,
    role: Option<Role>,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<GrantRow>, StoreError> {
    // Two statements rather than a CASE, so each plans onto its own index.
    let sql = if include_descendants {
        concat!(
            grant_select!(),
            "WHERE g.organisation_id IN \
                   (SELECT id FROM organisations WHERE path @> ARRAY[$1::uuid]) \
               AND ($2::text IS NULL OR g.role = $2) \
               AND ($3::timestamptz IS NULL OR (g.created_at, g.id) < ($3, $4)) \
             ORDER BY g.created_at DESC, g.id DESC LIMIT $5"
        )
    } else {
        concat!(
            grant_select!(),
            "WHERE g.organisation_id = $1 \
               AND ($2::text IS NULL OR g.role = $2) \
               AND ($3::timestamptz IS NULL OR (g.created_at, g.id) < ($3, $4)) \
             ORDER BY g.created_at DESC, g.id DESC LIMIT $5"
        )
    };
    let rows: Vec<GrantRow> = sqlx::query_as(sql)
        .bind(organisation_id)
        .bind(role.map(|r| r.as_str()))
        .bind(after.map(|t| t.time))
        .bind(after.map(|t| t.id))
        .bind(page_size + 1)
        .fetch_all(pool)
        .await?;
    Ok(paginate(rows, page_size, GrantRow::page_token))
}

/// Grants of `role` at `organisation_id` or one of its ancestors, newest first.
pub async fn at_ancestry(
    pool: &PgPool,
    organisation_id: Uuid,
    role: Role,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<GrantRow>, StoreError> {
    let rows: Vec<GrantRow> = sqlx::query_as(concat!(
        grant_select!(),
        "JOIN organisations t ON t.id = $1 \
         WHERE g.organisation_id = ANY(t.path) \
           AND g.role = $2 \
           AND ($3::timestamptz IS NULL OR (g.created_at, g.id) < ($3, $4)) \
         ORDER BY g.created_at DESC, g.id DESC LIMIT $5"
    ))
    .bind(organisation_id)
    .bind(role.as_str())
    .bind(after.map(|t| t.time))
    .bind(after.map(|t| t.id))
    .bind(page_size + 1)
    .fetch_all(pool)
    .await?;
    Ok(paginate(rows, page_size, GrantRow::page_token))
}

/// For a permission decision: the target organisation and every grant of the account, in one
/// round trip. `None` when the target does not exist.
pub async fn for_decision(
    pool: &PgPool,
    account_id: Uuid,
    target: Uuid,
) -> Result<Option<(OrganisationRow, Vec<GrantRow>)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Joined {
        t_id: Uuid,
        t_kind: String,
        t_ods_code: String,
        t_name: String,
        t_parent_id: Option<Uuid>,
        t_path: Vec<Uuid>,
        t_multi_level_approval: bool,
        t_created_at: DateTime<Utc>,
        t_updated_at: DateTime<Utc>,
        id: Option<Uuid>,
        account_id: Option<Uuid>,
        organisation_id: Option<Uuid>,
        role: Option<String>,
        created_at: Option<DateTime<Utc>>,
        organisation_name: Option<String>,
        ods_code: Option<String>,
        organisation_kind: Option<String>,
        organisation_path: Option<Vec<Uuid>>,
    }
    let rows: Vec<Joined> = sqlx::query_as(concat!(
        "SELECT t.id AS t_id, t.kind AS t_kind, t.ods_code AS t_ods_code, t.name AS t_name, \
                t.parent_id AS t_parent_id, t.path AS t_path, \
                t.multi_level_approval AS t_multi_level_approval, \
                t.created_at AS t_created_at, t.updated_at AS t_updated_at, ",
        grant_columns!(),
        " FROM organisations t \
          LEFT JOIN (grants g JOIN organisations o ON o.id = g.organisation_id) \
                 ON g.account_id = $1 \
          WHERE t.id = $2"
    ))
    .bind(account_id)
    .bind(target)
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let organisation = OrganisationRow {
        id: first.t_id,
        kind: first.t_kind.clone(),
        ods_code: first.t_ods_code.clone(),
        name: first.t_name.clone(),
        parent_id: first.t_parent_id,
        path: first.t_path.clone(),
        multi_level_approval: first.t_multi_level_approval,
        created_at: first.t_created_at,
        updated_at: first.t_updated_at,
    };
    let grants = rows
        .into_iter()
        .filter_map(|r| {
            Some(GrantRow {
                id: r.id?,
                account_id: r.account_id?,
                organisation_id: r.organisation_id?,
                role: r.role?,
                created_at: r.created_at?,
                organisation_name: r.organisation_name?,
                ods_code: r.ods_code?,
                organisation_kind: r.organisation_kind?,
                organisation_path: r.organisation_path?,
            })
        })
        .collect();
    Ok(Some((organisation, grants)))
}
