//! Opaque keyset page tokens and page-size rules shared by every List RPC.
//!
//! A token names the last row of the previous page by (time, id), the order every list
//! uses (newest first), so paging stays stable while rows are added and costs one index
//! seek whatever the depth.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::errors::FieldViolations;

pub const DEFAULT_PAGE_SIZE: i32 = 50;
pub const MAX_PAGE_SIZE: i32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageToken {
    pub time: DateTime<Utc>,
    pub id: Uuid,
}

impl PageToken {
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.time.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(token: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (micros, id) = bytes.split_at_checked(8)?;
        let micros = i64::from_be_bytes(micros.try_into().ok()?);
        let id = Uuid::from_slice(id).ok()?;
        Some(PageToken {
            time: DateTime::from_timestamp_micros(micros)?,
            id,
        })
    }
}

/// One page of a List RPC's rows and where the next one starts.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<PageToken>,
}

impl<T> Page<T> {
    /// The `next_page_token` field: empty on the last page.
    pub fn next_page_token(&self) -> String {
        self.next.map(|t| t.encode()).unwrap_or_default()
    }
}

/// Builds a page from a query that fetched `page_size + 1` rows in list order: the extra
/// row's presence means there is a next page, which starts after the last row returned.
pub fn paginate<T>(mut rows: Vec<T>, page_size: i64, key: impl Fn(&T) -> PageToken) -> Page<T> {
    let page_size = usize::try_from(page_size).unwrap_or(0);
    let next = if rows.len() > page_size {
        rows.truncate(page_size);
        rows.last().map(key)
    } else {
        None
    };
    Page { items: rows, next }
}

/// Checks `page_size` and `page_token` of a List request, recording problems in
/// `violations`. Returns the page size to use and the decoded token.
pub fn page_request(
    violations: &mut FieldViolations,
    page_size: i32,
    page_token: &str,
) -> (i64, Option<PageToken>) {
    page_request_bounded(
        violations,
        page_size,
        page_token,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    )
}

/// [`page_request`] for a List RPC whose contract sets its own sizes: 0 means `default`, at
/// most `max`.
pub fn page_request_bounded(
    violations: &mut FieldViolations,
    page_size: i32,
    page_token: &str,
    default: i32,
    max: i32,
) -> (i64, Option<PageToken>) {
    let size = match page_size {
        0 => default,
        n if (1..=max).contains(&n) => n,
        _ => {
            violations.add("page_size", format!("must be between 0 and {max}"));
            default
        }
    };
    let token = if page_token.is_empty() {
        None
    } else {
        let decoded = PageToken::decode(page_token);
        if decoded.is_none() {
            violations.add("page_token", "is not a token this service issued");
        }
        decoded
    };
    (i64::from(size), token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token = PageToken {
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(PageToken::decode(&token.encode()), Some(token));
        assert_eq!(PageToken::decode("not base64!"), None);
        assert_eq!(PageToken::decode("AAAA"), None);
    }

    #[test]
    fn page_sizes() {
        let mut v = FieldViolations::new();
        assert_eq!(page_request(&mut v, 0, "").0, 50);
        assert_eq!(page_request(&mut v, 7, "").0, 7);
        assert!(v.is_empty());
        page_request(&mut v, -1, "");
        page_request(&mut v, 101, "junk!");
        assert!(!v.is_empty());

        let mut v = FieldViolations::new();
        assert_eq!(page_request_bounded(&mut v, 0, "", 1000, 1000).0, 1000);
        assert_eq!(page_request_bounded(&mut v, 1000, "", 1000, 1000).0, 1000);
        assert!(v.is_empty());
        page_request_bounded(&mut v, 1001, "", 1000, 1000);
        assert_eq!(v.to_string(), "page_size: must be between 0 and 1000");
    }
}
