//! Account realms and states, and the checks on what a client may put into an account.

use std::fmt;

use crate::names;

/// Longest first or last name accepted, in code points.
pub const MAX_NAME_LEN: usize = 100;

/// An account's realm: it decides the login and the password profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Realm {
    /// Login by system-assigned User ID.
    National,
    /// Login by e-mail address.
    Local,
}

impl Realm {
    pub fn as_str(self) -> &'static str {
        match self {
            Realm::National => "NATIONAL",
            Realm::Local => "LOCAL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "NATIONAL" => Some(Realm::National),
            "LOCAL" => Some(Realm::Local),
            _ => None,
        }
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `PENDING_REGISTRATION -> ACTIVE <-> DISABLED`. The lock is separate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountState {
    PendingRegistration,
    Active,
    Disabled,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::PendingRegistration => "PENDING_REGISTRATION",
            AccountState::Active => "ACTIVE",
            AccountState::Disabled => "DISABLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING_REGISTRATION" => Some(AccountState::PendingRegistration),
            "ACTIVE" => Some(AccountState::Active),
            "DISABLED" => Some(AccountState::Disabled),
            _ => None,
        }
    }
}

impl fmt::Display for AccountState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A first or last name as stored: trimmed, required, bounded, without control characters
/// (names end up in mail headers and logs). The error is the field-violation description.
pub fn normalise_name(raw: &str) -> Result<String, &'static str> {
    names::normalise(raw, MAX_NAME_LEN, "must be at most 100 characters")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalise_name("  Ann ").unwrap(), "Ann");
        assert!(normalise_name("   ").is_err());
        assert!(normalise_name("A\nB").is_err());
        assert!(normalise_name(&"x".repeat(101)).is_err());
        assert!(normalise_name(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn names_round_trip() {
        for realm in [Realm::National, Realm::Local] {
            assert_eq!(Realm::parse(realm.as_str()), Some(realm));
        }
        for state in [
            AccountState::PendingRegistration,
            AccountState::Active,
            AccountState::Disabled,
        ] {
            assert_eq!(AccountState::parse(state.as_str()), Some(state));
        }
        assert_eq!(Realm::parse("national"), None);
    }
}
