//! Keyed creates (DESIGN §3, SECURITY 30): a create carries a client `request_id`; a retry
//! returns the first answer, the same id with a different request is refused.
//!
//! Each service keeps, next to the rows it creates, the request id and a fingerprint of the
//! request (SHA-256 over its normalised fields). The first writer claims the id with
//! `INSERT … ON CONFLICT (request_id) DO NOTHING` in the transaction of the create; a
//! parallel duplicate waits on that row, finds it claimed, and reads the first answer once
//! the first transaction has committed. [`fingerprint`], [`Earlier::check`] and the queries
//! ([`earlier`], [`claim`], [`answer`]) are shared; each service keeps its own `request_keys`
//! table (`request_id uuid PRIMARY KEY, request_hash bytea, response bytea, created_at`) in
//! its schema.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The fingerprint of a request: SHA-256 over its fields, each followed by a NUL byte. No
/// validated field contains NUL, so different requests never share a fingerprint (`["ab",
/// "c"]` and `["a", "bc"]` differ). Start the list with the operation's name when one table
/// keys several operations, so one id reused across operations is refused too.
pub fn fingerprint(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher.finalize().into()
}

/// The same request id was used before for a different request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request id was already used for a different request")]
pub struct RequestIdReused;

/// What a request id's stored row (fingerprint and the answer it led to) says about a request.
pub struct Earlier;

impl Earlier {
    /// `Ok(None)`: the id is unused. `Ok(Some(answer))`: a retry of the same request, answer
    /// with what it gave first. `Err`: the id belongs to another request.
    pub fn check<T>(
        stored: Option<(Vec<u8>, T)>,
        fingerprint: &[u8; 32],
    ) -> Result<Option<T>, RequestIdReused> {
        match stored {
            None => Ok(None),
            Some((hash, answer)) if hash.as_slice() == fingerprint.as_slice() => Ok(Some(answer)),
            Some(_) => Err(RequestIdReused),
        }
    }
}

/// The stored fingerprint and answer of `request_id`, if it was used (and committed).
pub async fn earlier(
    pool: &PgPool,
    request_id: Uuid,
) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, sqlx::Error> {
    sqlx::query_as("SELECT request_hash, response FROM request_keys WHERE request_id = $1")
        .bind(request_id)
        .fetch_optional(pool)
        .await
}

/// Claims `request_id` for this transaction. `false` when another request holds it: a
/// parallel holder is waited for, so `false` means it committed and [`earlier`] has its answer.
pub async fn claim(
    conn: &mut PgConnection,
    request_id: Uuid,
    hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let claimed: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO request_keys (request_id, request_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
    )
    .bind(request_id)
    .bind(hash.as_slice())
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(claimed.is_some())
}

/// Stores the answer of a claimed request, in the transaction that claimed it.
pub async fn answer(
    conn: &mut PgConnection,
    request_id: Uuid,
    response: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE request_keys SET response = $2 WHERE request_id = $1")
        .bind(request_id)
        .bind(response)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_fields() {
        let a = fingerprint(&["LOCAL", "ab@x.org", "Ann", "Lee"]);
        assert_eq!(a, fingerprint(&["LOCAL", "ab@x.org", "Ann", "Lee"]));
        assert_ne!(a, fingerprint(&["NATIONAL", "ab@x.org", "Ann", "Lee"]));
        assert_ne!(a, fingerprint(&["LOCAL", "ab@x.org", "An", "nLee"]));
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
    }

    #[test]
    fn earlier_answers() {
        let fp = fingerprint(&["x"]);
        assert_eq!(Earlier::check::<u8>(None, &fp), Ok(None));
        assert_eq!(Earlier::check(Some((fp.to_vec(), 7)), &fp), Ok(Some(7)));
        assert_eq!(
            Earlier::check(Some((fingerprint(&["y"]).to_vec(), 7)), &fp),
            Err(RequestIdReused)
        );
    }
}
