//! Registration and password-reset links (DESIGN §2 "Links", SECURITY 17, 18).
//!
//! A link carries 256 bits from a CSPRNG, base64url without padding (43 characters). Only the
//! SHA-256 of the token text is stored, so a database leak yields no usable link; lookups go by
//! that hash. Each token is bound to a purpose and an account, is single use and expires: reset
//! links after 1 hour, registration links after 7 days, both configurable. Invitation links
//! belong to the access service, which uses the same scheme.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_BYTES: usize = 32;
/// Length of the base64url (no padding) text of a token.
pub const TOKEN_LEN: usize = 43;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkPurpose {
    Registration,
    PasswordReset,
}

impl LinkPurpose {
    pub const ALL: [LinkPurpose; 2] = [LinkPurpose::Registration, LinkPurpose::PasswordReset];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Registration => "REGISTRATION",
            LinkPurpose::PasswordReset => "PASSWORD_RESET",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == value)
    }
}

/// The raw token, to put in the e-mailed link and nowhere else: not stored, not logged (its
/// `Debug` is redacted and it has no `Display`).
#[derive(Clone)]
pub struct LinkToken(String);

impl LinkToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken(<redacted>)")
    }
}

/// A new token and the hash to store for it.
pub fn new_link_token() -> (LinkToken, [u8; 32]) {
    let mut bytes = [0u8; TOKEN_BYTES];
    // ThreadRng is a CSPRNG seeded from the OS and reseeded periodically.
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (LinkToken(token), hash)
}

/// SHA-256 of the token text as it appears in the link. Hashing the text (not the decoded
/// bytes) means whatever a caller presents can be looked up without decoding it first.
pub fn hash_token(raw: &str) -> [u8; 32] {
    Sha256::digest(raw.as_bytes()).into()
}

/// Whether a presented string could be one of our tokens, so obvious junk is refused without a
/// database round trip. It does not reveal anything: junk and unknown tokens answer alike.
pub fn is_well_formed_token(raw: &str) -> bool {
    raw.len() == TOKEN_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Constant-time equality of two hashes, for any comparison done in the service rather than
/// by an indexed lookup.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// How long each kind of link stays valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkExpiry {
    pub registration: Duration,
    pub password_reset: Duration,
}

impl Default for LinkExpiry {
    fn default() -> Self {
        LinkExpiry {
            registration: Duration::from_secs(7 * 24 * 60 * 60),
            password_reset: Duration::from_secs(60 * 60),
        }
    }
}

impl LinkExpiry {
    pub fn new(registration: Duration, password_reset: Duration) -> Result<Self, String> {
        if registration.is_zero() || password_reset.is_zero() {
            return Err("link lifetimes must be more than zero".to_owned());
        }
        // Anything longer than a year is a configuration mistake, and keeps the arithmetic
        // below far from chrono's limits.
        let year = Duration::from_secs(366 * 24 * 60 * 60);
        if registration > year || password_reset > year {
            return Err("link lifetimes must be at most a year".to_owned());
        }
        Ok(LinkExpiry {
            registration,
            password_reset,
        })
    }

    pub fn ttl(&self, purpose: LinkPurpose) -> Duration {
        match purpose {
            LinkPurpose::Registration => self.registration,
            LinkPurpose::PasswordReset => self.password_reset,
        }
    }
}

/// When a link issued `now` for `purpose` stops working.
pub fn link_expiry(purpose: LinkPurpose, now: DateTime<Utc>, cfg: &LinkExpiry) -> DateTime<Utc> {
    // Out-of-range lifetimes (only possible when built by hand) saturate rather than fail.
    TimeDelta::from_std(cfg.ttl(purpose))
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A link is usable strictly before its expiry.
pub fn is_expired(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now >= expires_at
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::HashSet;

    #[test]
    fn tokens_are_256_bit_base64url_and_hash_to_what_is_stored() {
        let (token, hash) = new_link_token();
        assert_eq!(token.as_str().len(), TOKEN_LEN);
        assert!(is_well_formed_token(token.as_str()));
        let decoded = URL_SAFE_NO_PAD.decode(token.as_str()).unwrap();
        assert_eq!(decoded.len(), TOKEN_BYTES);
        assert_eq!(hash, hash_token(token.as_str()));
        assert!(hashes_equal(&hash, &hash_token(token.as_str())));
        assert!(!hashes_equal(&hash, &hash_token("something else")));
        assert!(!hashes_equal(&hash, &hash[..31]));
        assert_eq!(format!("{token:?}"), "LinkToken(<redacted>)");
    }

    #[test]
    fn tokens_do_not_repeat() {
        let tokens: HashSet<String> = (0..1000)
            .map(|_| new_link_token().0.as_str().to_owned())
            .collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn junk_is_not_well_formed() {
        for junk in [
            "",
            "abc",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
            &format!("{}+", "a".repeat(42)),
        ] {
            assert!(!is_well_formed_token(junk), "{junk:?}");
        }
    }

    #[test]
    fn sha256_of_known_text() {
        let hash = hash_token("abc");
        assert_eq!(
            hash[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }

    #[test]
    fn expiry_per_purpose_and_configurable() {
        let now = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let cfg = LinkExpiry::default();
        assert_eq!(
            link_expiry(LinkPurpose::PasswordReset, now, &cfg),
            now + TimeDelta::hours(1)
        );
        assert_eq!(
            link_expiry(LinkPurpose::Registration, now, &cfg),
            now + TimeDelta::days(7)
        );
        let short = LinkExpiry::new(Duration::from_secs(3600), Duration::from_secs(600)).unwrap();
        let expires = link_expiry(LinkPurpose::PasswordReset, now, &short);
        assert_eq!(expires, now + TimeDelta::minutes(10));
        assert!(!is_expired(expires, expires - TimeDelta::milliseconds(1)));
        assert!(is_expired(expires, expires));
        assert!(LinkExpiry::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(LinkExpiry::new(Duration::from_secs(400 * 86400), Duration::from_secs(1)).is_err());
        let absurd = LinkExpiry {
            registration: Duration::from_secs(u64::MAX),
            password_reset: Duration::from_secs(1),
        };
        assert_eq!(
            link_expiry(LinkPurpose::Registration, now, &absurd),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn purposes_round_trip() {
        for purpose in LinkPurpose::ALL {
            assert_eq!(LinkPurpose::parse(purpose.as_str()), Some(purpose));
        }
        assert_eq!(LinkPurpose::parse("INVITATION"), None);
    }
}
