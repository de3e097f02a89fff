//! E-mail addresses of accounts: one normal form, the same strictness as the notification
//! service (so an address identity accepts is one notifications can send to), and the rule
//! that refuses generic or shared mailboxes (DESIGN §2: an account belongs to one person).
//!
//! Generic mailboxes are matched on the local part, case-insensitively, either exactly or after
//! dropping a `+tag` ("info+gp@x" is "info@x"); and on the domain, exactly or as a subdomain of
//! a listed domain. Fuzzier matching ("info.practice", "reception1") was left out on purpose:
//! it refuses real people ("Office.Jones") and is easy to get round anyway, whereas an exact
//! list is predictable, documented to users and extended by configuration.

use thiserror::Error;

pub const MAX_ADDRESS_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 63;
const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";

/// Local parts refused by default: role and team mailboxes, and senders that never read.
pub const DEFAULT_GENERIC_LOCAL_PARTS: &[&str] = &[
    "admin",
    "administrator",
    "info",
    "information",
    "reception",
    "enquiries",
    "enquiry",
    "inquiries",
    "office",
    "team",
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "contact",
    "support",
    "helpdesk",
    "mail",
    "hello",
    "practice",
    "generic",
    "general",
    "accounts",
    "postmaster",
    "webmaster",
    "hostmaster",
    "abuse",
];

/// Why an address was refused. The messages match the notification service's field
/// violations so both services word the same problem the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum EmailError {
    #[error("is required")]
    Required,
    #[error("must be at most 254 characters")]
    TooLong,
    #[error("must be an e-mail address")]
    Invalid,
}

impl EmailError {
    /// Stable code for ErrorInfo metadata.
    pub fn code(&self) -> &'static str {
        match self {
            EmailError::Required => "EMAIL_REQUIRED",
            EmailError::TooLong => "EMAIL_TOO_LONG",
            EmailError::Invalid => "EMAIL_INVALID",
        }
    }
}

/// The stored form of an address: trimmed, domain lower-cased, local part kept as given (RFC
/// 5321 §2.4: only the receiving host may interpret its case), and validated.
pub fn normalise_email(s: &str) -> Result<String, EmailError> {
    let trimmed = s.trim();
    let normalised = match trimmed.split_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => trimmed.to_owned(),
    };
    validate_email(&normalised)?;
    Ok(normalised)
}

/// The notification service's rules: a dot-atom local part of printable ASCII (no quoted
/// strings) of at most 64 octets, and a domain of at least two LDH labels of at most 63
/// octets each; at most 254 octets in all. Internationalised addresses are refused, as by the
/// notification service, so every stored address can be delivered.
pub fn validate_email(address: &str) -> Result<(), EmailError> {
    if address.is_empty() {
        return Err(EmailError::Required);
    }
    if address.len() > MAX_ADDRESS_LEN {
        return Err(EmailError::TooLong);
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err(EmailError::Invalid);
    };
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(EmailError::Invalid)
    }
}

/// Which addresses are generic or shared mailboxes, refused for accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenericMailboxRules {
    local_parts: Vec<String>,
    domains: Vec<String>,
}

impl GenericMailboxRules {
    /// Entries are trimmed and lower-cased; empty ones (from "a,,b" in configuration) are
    /// dropped, and a leading '@' on a domain is tolerated.
    pub fn new<L, D>(local_parts: L, domains: D) -> Self
    where
        L: IntoIterator,
        L::Item: AsRef<str>,
        D: IntoIterator,
        D::Item: AsRef<str>,
    {
        let mut local_parts: Vec<String> = local_parts
            .into_iter()
            .map(|s| s.as_ref().trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        let mut domains: Vec<String> = domains
            .into_iter()
            .map(|s| {
                let s = s.as_ref().trim();
                s.strip_prefix('@').unwrap_or(s).trim().to_lowercase()
            })
            .filter(|s| !s.is_empty())
            .collect();
        local_parts.sort();
        local_parts.dedup();
        domains.sort();
        domains.dedup();
        GenericMailboxRules {
            local_parts,
            domains,
        }
    }

    pub fn local_parts(&self) -> &[String] {
        &self.local_parts
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// `normalised` is an address from [`normalise_email`].
    pub fn is_generic(&self, normalised: &str) -> bool {
        let Some((local, domain)) = normalised.rsplit_once('@') else {
            return false;
        };
        let local = local.to_lowercase();
        let untagged = local.split_once('+').map_or(local.as_str(), |(l, _)| l);
        let domain = domain.to_lowercase();
        let local_generic = self
            .local_parts
            .iter()
            .any(|l| *l == local || *l == untagged);
        let domain_generic = self.domains.iter().any(|d| {
            domain == *d
                || domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        });
        local_generic || domain_generic
    }
}

impl Default for GenericMailboxRules {
    fn default() -> Self {
        GenericMailboxRules::new(DEFAULT_GENERIC_LOCAL_PARTS, std::iter::empty::<&str>())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn deliverable_addresses() {
        for good in ["a@b.co", "first.last+tag@nhs.net", "x_y@sub.domain-1.org"] {
            assert_eq!(validate_email(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@nhs.net",
            "a@",
            "a@nhs",
            "a..b@nhs.net",
            ".a@nhs.net",
            "a@-nhs.net",
            "a b@nhs.net",
            "a@nhs.net\r\nBcc: x@y.z",
            "a@@nhs.net",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        assert!(validate_email(&format!("{}@nhs.net", "a".repeat(65))).is_err());
    }

    #[test]
    fn normalises_domain_case_and_keeps_local_case() {
        assert_eq!(
            normalise_email("  Jane.Doe@Example.NHS.uk \n").unwrap(),
            "Jane.Doe@example.nhs.uk"
        );
        assert_eq!(normalise_email("a+b@x.io").unwrap(), "a+b@x.io");
    }

    #[test]
    fn refuses_what_notifications_refuses() {
        assert_eq!(normalise_email("   "), Err(EmailError::Required));
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
        assert_eq!(long.len(), 255);
        assert_eq!(normalise_email(&long), Err(EmailError::TooLong));
        let longest = format!(
            "{}@{}.co",
            "a".repeat(64),
            "b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(58)
        );
        assert_eq!(longest.len(), 254);
        assert!(normalise_email(&longest).is_ok());
        for bad in [
            "plain",
            "@x.com",
            "a@",
            "a@localhost",
            "a@x..com",
            "a@-x.com",
            "a@x-.com",
            "a@x_y.com",
            ".a@x.com",
            "a.@x.com",
            "a..b@x.com",
            "a b@x.com",
            "a@b@x.com",
            "\"quoted\"@x.com",
            "jös@x.com",
            "a@bücher.de",
            &format!("{}@x.com", "a".repeat(65)),
            &format!("a@{}.com", "b".repeat(64)),
        ] {
            assert_eq!(normalise_email(bad), Err(EmailError::Invalid), "{bad:?}");
        }
        assert!(normalise_email("o'brien!#$%&*+-/=?^_`{|}~@x-y.example.com").is_ok());
        assert_eq!(EmailError::Invalid.to_string(), "must be an e-mail address");
    }

    #[test]
    fn generic_mailboxes_by_local_part_tag_and_domain() {
        let rules = GenericMailboxRules::default();
        for generic in [
            "info@practice.nhs.uk",
            "Reception@x.com",
            "no-reply@x.com",
            "noreply@x.com",
            "admin+gp@x.com",
            "ENQUIRIES+x+y@x.com",
            "practice@x.com",
            "generic@x.com",
        ] {
            assert!(rules.is_generic(generic), "{generic}");
        }
        for person in [
            "jane.doe@x.com",
            "info.practice@x.com",
            "reception1@x.com",
            "office.jones@x.com",
            "teamwork@x.com",
            "x+info@x.com",
        ] {
            assert!(!rules.is_generic(person), "{person}");
        }
        assert!(rules.domains().is_empty());
    }

    #[test]
    fn configured_lists_replace_the_defaults() {
        let rules = GenericMailboxRules::new([" Shared ", "", "shared"], ["@Mailinator.com", " "]);
        assert_eq!(rules.local_parts(), ["shared"]);
        assert_eq!(rules.domains(), ["mailinator.com"]);
        assert!(rules.is_generic("shared@x.com"));
        assert!(!rules.is_generic("info@x.com"));
        assert!(rules.is_generic("jane@mailinator.com"));
        assert!(rules.is_generic("jane@eu.mailinator.com"));
        assert!(!rules.is_generic("jane@notmailinator.com"));
    }
}
