//! Second factors: authenticator-app codes (RFC 6238 TOTP) and recovery codes.
//!
//! Rules (SECURITY 34):
//! * A code is 6 digits of TOTP with SHA-1 and 30-second steps, what authenticator apps
//!   support. It is accepted for the current step or one step either side (clock skew).
//! * A step is accepted once: the highest accepted step is stored, and a code of that step or
//!   an earlier one is refused even when it matches (replay).
//! * Wrong codes and wrong recovery codes count in the account's one lock-out budget (see
//!   [`super::lockout`]): a second factor is not a second, separate guess budget.
//! * Ten recovery codes per enrolment, 80 random bits each, shown once and stored as SHA-256
//!   (a fast hash suffices for random codes of that length); each works once.
//! * Which roles need a second factor is configuration ([`SecondFactorPolicy`]).

use std::fmt;

use cqrs_rules::Role;
use rand::{Rng as _, RngCore as _};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, TOTP};

/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
const SKEW_STEPS: u64 = 1;
/// Secret length: 160 bits, RFC 4226's recommendation.
const SECRET_BYTES: usize = 20;
/// Recovery codes made per enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (base32, 5 bits each: 80 bits).
const RECOVERY_CODE_CHARS: usize = 16;
/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "CQRS";

/// A TOTP secret. Never logged: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    /// A stored secret.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        TotpSecret(bytes)
    }

    /// A secret as an app is given it (unpadded base32, any case, spaces ignored).
    pub fn from_base32(text: &str) -> Option<Self> {
        let text: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        totp_rs::Secret::Encoded(text)
            .to_bytes()
            .ok()
            .map(TotpSecret)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The generator for `account_name` (shown in the app beside the issuer); `None` for a
    /// secret too short for RFC 4226 (a stored value that was tampered with).
    fn totp(&self, account_name: &str) -> Option<TOTP> {
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECS,
            self.0.clone(),
            Some(ISSUER.to_owned()),
            account_name.to_owned(),
        )
        .ok()
    }

    /// The secret in unpadded base32, for typing into an app.
    pub fn base32(&self) -> Option<String> {
        self.totp("").map(|totp| totp.get_secret_base32())
    }

    /// `otpauth://totp/CQRS:<account>?secret=…&issuer=CQRS` for a QR code.
    pub fn otpauth_uri(&self, account_name: &str) -> Option<String> {
        self.totp(account_name).map(|totp| totp.get_url())
    }

    /// The code for unix time `at` (for tests and the local test tools).
    pub fn code_at(&self, at: u64) -> Option<String> {
        self.totp("").map(|totp| totp.generate(at))
    }

    /// The time step `code` matches at unix time `now`, if it is within the skew and later
    /// than `last_step` (a step is accepted once). Compared in constant time.
    pub fn matching_step(&self, code: &str, now: u64, last_step: u64) -> Option<u64> {
        let code = normalise_code(code)?;
        let totp = self.totp("")?;
        let current = now / STEP_SECS;
        let first = current
            .saturating_sub(SKEW_STEPS)
            .max(last_step.saturating_add(1));
        (first..=current.saturating_add(SKEW_STEPS))
            .find(|step| totp.check(&code, step.saturating_mul(STEP_SECS)))
    }
}

/// The digits of a code as typed ("123 456" and "123-456" allowed), or `None` if it cannot
/// be one.
pub fn normalise_code(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// A new set of recovery codes, each as shown to the person: `ABCD-EFGH-JKLM-NPQR`.
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut rng = rand::rng();
            let chars: Vec<char> = (0..RECOVERY_CODE_CHARS)
                .map(|_| char::from(BASE32[rng.random_range(0..BASE32.len())]))
                .collect();
            chars
                .chunks(4)
                .map(|chunk| chunk.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// A recovery code as typed, reduced to its 16 characters (any case, dashes and spaces
/// ignored), or `None` if it cannot be one.
pub fn normalise_recovery_code(raw: &str) -> Option<String> {
    let code: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == RECOVERY_CODE_CHARS
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)))
    .then_some(code)
}

/// What is stored for a recovery code: SHA-256 of its normalised form.
pub fn hash_recovery_code(normalised: &str) -> [u8; 32] {
    Sha256::digest(normalised.as_bytes()).into()
}

/// RFC 4648 base32, the alphabet of secrets typed into apps and of recovery codes.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Which roles need a second factor before they can be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecondFactorPolicy {
    roles: Vec<Role>,
}

impl Default for SecondFactorPolicy {
    /// Every administrative role and the service desk.
    fn default() -> Self {
        SecondFactorPolicy {
            roles: vec![
                Role::ServiceDesk,
                Role::CommissioningAccountAdministrator,
                Role::CommissioningApprover,
            ],
        }
    }
}

impl SecondFactorPolicy {
    pub fn new(roles: Vec<Role>) -> Self {
        SecondFactorPolicy { roles }
    }

    /// `none`, or role names separated by commas (e.g. `SERVICE_DESK,PRACTICE_MANAGER`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("none") {
            return Ok(SecondFactorPolicy { roles: Vec::new() });
        }
        raw.split(',')
            .map(|name| {
                Role::parse(name.trim()).ok_or_else(|| format!("{:?} is not a role", name.trim()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(SecondFactorPolicy::new)
    }

    pub fn requires(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 6238 appendix B, SHA-1: the secret "12345678901234567890" at 59 s is 94287082
    /// (8 digits); its last 6 digits are the 6-digit code.
    #[test]
    fn codes_follow_rfc_6238() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(secret.code_at(59).unwrap(), "287082");
        assert_eq!(secret.code_at(1_111_111_109).unwrap(), "081804");
        assert_eq!(secret.base32().unwrap(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            TotpSecret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq"),
            Some(secret)
        );
    }

    #[test]
    fn a_step_is_accepted_once_within_one_step_of_skew() {
        let secret = TotpSecret::generate();
        let now = 1_750_000_015;
        let step = now / STEP_SECS;
        let code = secret.code_at(now).unwrap();
        assert_eq!(secret.matching_step(&code, now, 0), Some(step));
        // Replay: the same step is not accepted again.
        assert_eq!(secret.matching_step(&code, now, step), None);
        // The previous and next steps are accepted; two steps away is not.
        let previous = secret.code_at(now - STEP_SECS).unwrap();
        assert_eq!(secret.matching_step(&previous, now, 0), Some(step - 1));
        let next = secret.code_at(now + STEP_SECS).unwrap();
        assert_eq!(secret.matching_step(&next, now, 0), Some(step + 1));
        let old = secret.code_at(now - 2 * STEP_SECS).unwrap();
        if old != code && old != previous && old != next {
            assert_eq!(secret.matching_step(&old, now, 0), None);
        }
        // Spaces are allowed; junk is not a code.
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(secret.matching_step(&spaced, now, 0), Some(step));
        for junk in ["", "12345", "1234567", "abcdef"] {
            assert_eq!(secret.matching_step(junk, now, 0), None);
        }
    }

    #[test]
    fn the_uri_is_what_apps_read() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let uri = secret.otpauth_uri("JSM482").unwrap();
        assert!(uri.starts_with("otpauth://totp/CQRS:JSM482?"), "{uri}");
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        assert!(uri.contains("issuer=CQRS"), "{uri}");
        assert!(!format!("{secret:?}").contains("GEZ"));
    }

    #[test]
    fn recovery_codes_are_random_and_read_back_as_typed() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            let normalised = normalise_recovery_code(code).unwrap();
            assert_eq!(
                normalise_recovery_code(&code.to_lowercase().replace('-', " ")),
                Some(normalised.clone())
            );
            assert_ne!(hash_recovery_code(&normalised), [0u8; 32]);
        }
        for junk in [
            "",
            "ABCD-EFGH",
            "ABCD-EFGH-IJKL-MNO1",
            "ABCD-EFGH-IJKL-MNOPQ",
        ] {
            assert_eq!(normalise_recovery_code(junk), None, "{junk}");
        }
    }

    #[test]
    fn the_policy_names_roles() {
        let default = SecondFactorPolicy::default();
        assert!(default.requires(Role::ServiceDesk));
        assert!(default.requires(Role::CommissioningAccountAdministrator));
        assert!(!default.requires(Role::PracticeUser));
        let parsed = SecondFactorPolicy::parse("PRACTICE_MANAGER, SERVICE_DESK").unwrap();
        assert!(parsed.requires(Role::PracticeManager));
        assert!(!parsed.requires(Role::CommissioningApprover));
        assert!(
            !SecondFactorPolicy::parse("none")
                .unwrap()
                .requires(Role::ServiceDesk)
        );
        assert!(SecondFactorPolicy::parse("SERVICE_DESK,KING").is_err());
    }
}
