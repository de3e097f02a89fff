//! Organisations. Lists are in name order (the lower-cased name, then id): a page token names
//! the last organisation of the previous page, whose name key is looked up by id — names
//! could change one day, ids never do, and organisations are never removed.

use chrono::{DateTime, Utc};
use cqrs_auth::Role;
use cqrs_runtime::paging::{Page, PageToken, paginate};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{NewOrganisation, OrganisationKind};

macro_rules! org_columns {
    () => {
        "id, kind, ods_code, name, parent_id, path, multi_level_approval, created_at, updated_at"
    };
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OrganisationRow {
    pub id: Uuid,
    pub kind: String,
    pub ods_code: String,
    pub name: String,
    pub parent_id: Option<Uuid>,
    /// The organisation itself, its parent, … the root.
    pub path: Vec<Uuid>,
    pub multi_level_approval: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrganisationRow {
    pub fn kind(&self) -> Option<OrganisationKind> {
        OrganisationKind::parse(&self.kind)
    }

    fn page_token(&self) -> PageToken {
        PageToken {
            time: self.created_at,
            id: self.id,
        }
    }
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<OrganisationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        org_columns!(),
        " FROM organisations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The organisation, locked for the rest of the transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<OrganisationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        org_columns!(),
        " FROM organisations WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Inserts an organisation under `parent` (whose path it extends). An ODS code in use is
/// [`StoreError::OdsCodeTaken`], detected without aborting the transaction.
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewOrganisation,
    parent: Option<&OrganisationRow>,
    now: DateTime<Utc>,
) -> Result<OrganisationRow, StoreError> {
    let id = Uuid::now_v7();
    let mut path = Vec::with_capacity(parent.map_or(1, |p| p.path.len() + 1));
    path.push(id);
    if let Some(parent) = parent {
        path.extend_from_slice(&parent.path);
    }
    let inserted: Option<OrganisationRow> = sqlx::query_as(concat!(
        "INSERT INTO organisations (id, kind, ods_code, name, parent_id, path, \
             multi_level_approval, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         ON CONFLICT (ods_code) DO NOTHING RETURNING ",
        org_columns!()
    ))
    .bind(id)
    .bind(new.kind.as_str())
    .bind(&new.ods_code)
    .bind(&new.name)
    .bind(parent.map(|p| p.id))
    .bind(&path)
    .bind(new.multi_level_approval)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    inserted.ok_or(StoreError::OdsCodeTaken)
}

pub async fn set_approval_level(
    conn: &mut PgConnection,
    id: Uuid,
    multi_level_approval: bool,
    now: DateTime<Utc>,
) -> Result<Option<OrganisationRow>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "UPDATE organisations SET multi_level_approval = $2, updated_at = $3 WHERE id = $1 \
         RETURNING ",
        org_columns!()
    ))
    .bind(id)
    .bind(multi_level_approval)
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// The children of `parent` (the roots when `None`), in name order.
pub async fn children(
    pool: &PgPool,
    parent: Option<Uuid>,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<OrganisationRow>, StoreError> {
    let rows: Vec<OrganisationRow> = sqlx::query_as(concat!(
        "SELECT ",
        org_columns!(),
        " FROM organisations \
         WHERE parent_id IS NOT DISTINCT FROM $1 \
           AND ($2::uuid IS NULL \
                OR (name_key, id) > (SELECT name_key, id FROM organisations WHERE id = $2)) \
         ORDER BY name_key, id LIMIT $3"
    ))
    .bind(parent)
    .bind(after.map(|t| t.id))
    .bind(page_size + 1)
    .fetch_all(pool)
    .await?;
    Ok(paginate(rows, page_size, OrganisationRow::page_token))
}

/// Organisations whose lower-cased name starts with the lower-cased `name_prefix`, or whose
/// ODS code is `ods_code`, optionally of one kind, in name order.
///
/// The prefix is an explicit range on `name_key` (byte-wise "C" order): `[p, p || U+10FFFF)`
/// holds every string starting with `p` that a validated name can produce, and — unlike
/// `LIKE $1` — stays an index range in a generic plan. `starts_with` keeps the answer exact.
///
/// The name and ODS-code matches are two ordered branches merged, not one `OR`: an `OR` plans
/// as a bitmap scan that reads and sorts every organisation with the prefix (a thousand for
/// "th" among 10k), where each branch here walks its index in order and stops at the page.
/// The ODS branch leaves out names with the prefix, which the first branch finds in order.
pub async fn search(
    pool: &PgPool,
    name_prefix: &str,
    ods_code: Option<&str>,
    kind: Option<OrganisationKind>,
    page_size: i64,
    after: Option<&PageToken>,
) -> Result<Page<OrganisationRow>, StoreError> {
    let rows: Vec<OrganisationRow> = sqlx::query_as(concat!(
        "SELECT ",
        org_columns!(),
        " FROM ((SELECT ",
        org_columns!(),
        ", name_key FROM organisations \
                 WHERE name_key >= lower($1) AND name_key < lower($1) || chr(1114111) \
                   AND starts_with(name_key, lower($1)) \
                   AND ($3::text IS NULL OR kind = $3) \
                   AND ($4::uuid IS NULL OR (name_key, id) > \
                        (SELECT name_key, id FROM organisations WHERE id = $4)) \
                 ORDER BY name_key, id LIMIT $5) \
                UNION ALL \
                (SELECT ",
        org_columns!(),
        ", name_key FROM organisations \
                 WHERE ods_code = $2 AND NOT starts_with(name_key, lower($1)) \
                   AND ($3::text IS NULL OR kind = $3) \
                   AND ($4::uuid IS NULL OR (name_key, id) > \
                        (SELECT name_key, id FROM organisations WHERE id = $4)))) found \
         ORDER BY name_key, id LIMIT $5"
    ))
    .bind(name_prefix)
    .bind(ods_code)
    .bind(kind.map(OrganisationKind::as_str))
    .bind(after.map(|t| t.id))
    .bind(page_size + 1)
    .fetch_all(pool)
    .await?;
    Ok(paginate(rows, page_size, OrganisationRow::page_token))
}

/// The target's ancestry (itself first … the root) and whether the account holds the grant
/// `active` (organisation, role), in one round trip. `None` when the target does not exist.
pub async fn ancestry_and_grant(
    pool: &PgPool,
    target: Uuid,
    active: Option<(Uuid, Uuid, Role)>,
) -> Result<(Option<Vec<Uuid>>, bool), StoreError> {
    let (account, org, role) = match active {
        Some((account, org, role)) => (Some(account), Some(org), Some(role.as_str())),
        None => (None, None, None),
    };
    let (path, held): (Option<Vec<Uuid>>, bool) = sqlx::query_as(
        "SELECT (SELECT path FROM organisations WHERE id = $1), \
                EXISTS (SELECT 1 FROM grants \
                        WHERE account_id = $2 AND organisation_id = $3 AND role = $4)",
    )
    .bind(target)
    .bind(account)
    .bind(org)
    .bind(role)
    .fetch_one(pool)
    .await?;
    Ok((path, held))
}
