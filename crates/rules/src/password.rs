//! Password policy. Each realm is configured with one profile; every profile is checked on the
//! NFKC form of the password and a refusal lists every rule that failed, so a user fixes
//! everything in one go (DESIGN §2, SECURITY 12, 13, 15, 16).
//!
//! Rules
//! - Always on, every profile:
//!   - the password is normalised to NFKC before anything else, and that form is what gets
//!     hashed, so the same password typed on different keyboards (full-width digits,
//!     ligatures, composed or decomposed accents) is the same password;
//!   - length is counted in Unicode code points of the NFKC form and the password is never
//!     truncated (an emoji is one code point, a ZWJ emoji sequence several);
//!   - not empty (`EMPTY`), no control characters (`CONTROL_CHARACTER`): they cannot be typed
//!     reliably and are a common way to smuggle terminal or log escapes;
//!   - not a common password (`COMMON_PASSWORD`): equal to an entry of the embedded
//!     `common_passwords.txt`, or such an entry with digits/symbols around it
//!     (`Summer2024!`), or a trivial repetition (`aaaa…`, `abab…`, `qwertyqwerty`);
//!   - not easy to guess (`TOO_GUESSABLE`): zxcvbn (Dropbox's estimator: dictionaries of
//!     breached passwords, names and words, with capitals, l33t swaps, reversals, dates,
//!     keyboard walks and appended digits or years taken into account, and the account's
//!     User ID and address as extra words) must estimate at least 10^8 guesses, which a random
//!     8-character password just reaches; and the word under the decorations (the password
//!     without the digits and symbols around it, swapped letters undone) must need 10^6 on its
//!     own;
//!     checked only when every other rule passed. Passwords over [`GUESS_CHECK_MAX_LEN`] code
//!     points are long enough not to need it;
//!   - context words (NIST SP 800-63B §3.1.1.2 "context-specific words"): not containing the
//!     account's whole User ID (`CONTAINS_USER_ID`) nor the local part of its e-mail address
//!     when that has at least three characters (`CONTAINS_EMAIL`).
//! - `cqrs_national`: 8–32 code points; at least three of the four classes upper, lower,
//!   digit, other (`NOT_ENOUGH_CLASSES`); not containing the first or last three characters
//!   of the User ID (`CONTAINS_USER_ID_PART`), case-insensitively; history of 8 and a minimum
//!   age of 72 hours, which the service enforces with stored hashes (`history_len`, `min_age`,
//!   [`min_age_blocks`]).
//! - `cqrs_local`: 8–128 code points with all four classes (`MISSING_UPPERCASE`, ...).
//! - `nist_800_63b`: 15–128 code points (NIST asks that at least 64 be accepted), no class
//!   rules, no history, no minimum age.
//!
//! Character classes are decided on the NFKC form: upper and lower are Unicode upper/lower
//! case letters, digits are Unicode numerics, and "other" is everything else — symbols,
//! spaces, and letters of scripts without case.
//!
//! When a password fails several rules that overlap (a password containing the whole User ID
//! also contains its first three characters), every failed rule is still listed: the API turns
//! each into a field violation and the client decides how to show them.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use unicode_normalization::UnicodeNormalization;

/// Upper bound of the profiles without a design maximum. NIST asks for at least 64; 128 leaves
/// room for long passphrases while keeping hashing input and request size small.
pub const DEFAULT_MAX_LEN: usize = 128;

/// NFKC can turn several code points into one (a base letter and its combining marks), but
/// never by more than a handful. Input longer than this many times the profile maximum cannot
/// normalise to an acceptable length, so it is refused before paying for normalisation.
const RAW_LENGTH_FACTOR: usize = 8;

/// Shortest e-mail local part that counts as a context word; shorter ones ("jo") would refuse
/// too many unrelated passwords.
const MIN_EMAIL_CONTEXT_LEN: usize = 3;

/// Shortest string the repetition rule looks at.
const MIN_REPETITION_LEN: usize = 4;

/// Longest password the guessability estimate is run on: its cost grows with the length, and a
/// password this long that passed the other rules is not in any guessing dictionary.
pub const GUESS_CHECK_MAX_LEN: usize = 64;

/// Least guesses zxcvbn must estimate: 10^8, which a random 8-character password just reaches
/// (its score 3 starts a few guesses higher, which would refuse those).
const MIN_GUESSES: u64 = 100_000_000;

/// How many characters from each end of the User ID the national profile forbids.
const USER_ID_PART_LEN: usize = 3;

/// Profiles chosen per realm in configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PasswordProfile {
    CqrsNational,
    CqrsLocal,
    Nist80063b,
}

impl PasswordProfile {
    pub const ALL: [PasswordProfile; 3] = [
        PasswordProfile::CqrsNational,
        PasswordProfile::CqrsLocal,
        PasswordProfile::Nist80063b,
    ];

    /// The configuration names; surrounding space and ASCII case are ignored.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        Self::ALL
            .into_iter()
            .find(|profile| profile.as_str().eq_ignore_ascii_case(value))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PasswordProfile::CqrsNational => "cqrs_national",
            PasswordProfile::CqrsLocal => "cqrs_local",
            PasswordProfile::Nist80063b => "nist_800_63b",
        }
    }

    /// Minimum length in code points of the NFKC form.
    pub fn min_len(self) -> usize {
        match self {
            PasswordProfile::CqrsNational | PasswordProfile::CqrsLocal => 8,
            PasswordProfile::Nist80063b => 15,
        }
    }

    /// Maximum length in code points of the NFKC form.
    pub fn max_len(self) -> usize {
        match self {
            PasswordProfile::CqrsNational => 32,
            PasswordProfile::CqrsLocal | PasswordProfile::Nist80063b => DEFAULT_MAX_LEN,
        }
    }

    /// How long a password must be kept before the owner may change it again.
    pub fn min_age(self) -> Option<Duration> {
        match self {
            PasswordProfile::CqrsNational => Some(Duration::from_secs(72 * 60 * 60)),
            PasswordProfile::CqrsLocal | PasswordProfile::Nist80063b => None,
        }
    }

    /// How many previous passwords a new one must differ from, besides the current one.
    pub fn history_len(self) -> usize {
        match self {
            PasswordProfile::CqrsNational => 8,
            PasswordProfile::CqrsLocal | PasswordProfile::Nist80063b => 0,
        }
    }

    /// The policy in sentences for people, in the order the Security Information screen lists
    /// it (seed 001); the registration and password pages show it before the form.
    pub fn policy_lines(self) -> Vec<String> {
        let mut lines = vec![format!(
            "Password must be {}-{} characters long.",
            self.min_len(),
            self.max_len()
        )];
        match self {
            PasswordProfile::CqrsNational => {
                lines.push(
                    "Password must contain three of these four: upper-case letters (A-Z), \
                     lower-case letters (a-z), digits (0-9), other characters (such as ! ? #)."
                        .to_owned(),
                );
                lines.push(
                    "Password can not contain all or part (first or last part) of the User ID."
                        .to_owned(),
                );
            }
            PasswordProfile::CqrsLocal => lines.push(
                "Password must contain an upper-case letter (A-Z), a lower-case letter (a-z), \
                 a digit (0-9) and another character (such as ! @ # $)."
                    .to_owned(),
            ),
            PasswordProfile::Nist80063b => {}
        }
        lines.push("Password must not contain the name part of your e-mail address.".to_owned());
        lines.push(
            "Password must not be a commonly used password, nor easy to guess (common words, \
             names, dates or keyboard patterns with a few characters added)."
                .to_owned(),
        );
        if self.history_len() > 0 {
            lines.push(format!(
                "Password must be different from the current password and the previous {} \
                 passwords.",
                self.history_len()
            ));
        }
        if let Some(age) = self.min_age() {
            lines.push(format!(
                "Password may only be changed once every {} hours.",
                age.as_secs() / 3600
            ));
        }
        lines
    }

    /// Checks a new password. Returns its NFKC form, ready to hash, or every failed rule in a
    /// stable order.
    pub fn check(
        &self,
        password: &str,
        ctx: &PolicyContext<'_>,
    ) -> Result<NormalisedPassword, Vec<PolicyRule>> {
        let min = self.min_len();
        let max = self.max_len();
        // Bounded work for absurd input: see RAW_LENGTH_FACTOR.
        if password.chars().count() > max.saturating_mul(RAW_LENGTH_FACTOR) {
            return Err(vec![PolicyRule::TooLong { max }]);
        }

        let normalised = NormalisedPassword::from_presented(password);
        let text = normalised.0.as_str();
        let lower = text.to_lowercase();
        let len = text.chars().count();
        let mut failed = Vec::new();

        if text.is_empty() {
            failed.push(PolicyRule::Empty);
        }
        if text.chars().any(char::is_control) {
            failed.push(PolicyRule::ControlCharacter);
        }
        if len < min {
            failed.push(PolicyRule::TooShort { min });
        }
        if len > max {
            failed.push(PolicyRule::TooLong { max });
        }

        let present = ClassSet::of(text);
        match self {
            PasswordProfile::CqrsNational => {
                let found = present.count();
                if found < 3 {
                    failed.push(PolicyRule::NotEnoughClasses { required: 3, found });
                }
            }
            PasswordProfile::CqrsLocal => {
                for class in CharClass::ALL {
                    if !present.contains(class) {
                        failed.push(PolicyRule::MissingClass(class));
                    }
                }
            }
            PasswordProfile::Nist80063b => {}
        }

        if let Some(user_id) = ctx.user_id.map(str::trim).filter(|id| !id.is_empty()) {
            let user_id = user_id.to_lowercase();
            if lower.contains(&user_id) {
                failed.push(PolicyRule::ContainsUserId);
            }
            if *self == PasswordProfile::CqrsNational
                && user_id_parts(&user_id)
                    .iter()
                    .any(|part| lower.contains(part.as_str()))
            {
                failed.push(PolicyRule::ContainsUserIdPart);
            }
        }

        if let Some(local) = ctx.email.and_then(email_context_word)
            && lower.contains(&local)
        {
            failed.push(PolicyRule::ContainsEmail);
        }

        if is_common(&lower) || ctx.breached.is_some_and(|list| list.matches(&lower)) {
            failed.push(PolicyRule::CommonPassword);
        } else if failed.is_empty() && len <= GUESS_CHECK_MAX_LEN {
            // Last, and only for a password every other rule let through: it is the one
            // refusal left to explain.
            let mut words: Vec<&str> = Vec::new();
            words.extend(ctx.user_id);
            if let Some(email) = ctx.email {
                words.push(email);
                words.extend(email.split('@').next());
            }
            if zxcvbn::zxcvbn(text, &words).guesses() < MIN_GUESSES
                || base_is_guessable(&lower, &words)
            {
                failed.push(PolicyRule::TooGuessable);
            }
        }

        if failed.is_empty() {
            Ok(normalised)
        } else {
            Err(failed)
        }
    }
}

impl fmt::Display for PasswordProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy knows about the account the password is for, and the deployment's list of
/// breached passwords if it has one.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyContext<'a> {
    /// NATIONAL accounts: the User ID, e.g. `JSM482`.
    pub user_id: Option<&'a str>,
    /// The account's normalised e-mail address.
    pub email: Option<&'a str>,
    /// Passwords known from breaches (`IDENTITY_BREACHED_PASSWORDS_FILE`): one of them, or one
    /// decorated with digits, symbols or swapped letters, is `COMMON_PASSWORD`.
    pub breached: Option<&'a BreachedPasswords>,
}

/// A deployment's list of breached passwords (for example the most common of Have I Been
/// Pwned's or SecLists'), one per line; kept lower-cased in NFKC, as the policy compares.
#[derive(Clone, Default)]
pub struct BreachedPasswords(HashSet<String>);

impl BreachedPasswords {
    /// One password per line; blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Self {
        BreachedPasswords(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(|line| line.nfkc().collect::<String>().to_lowercase())
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `lower` (the lower-cased NFKC password) is on the list, or its base word is.
    fn matches(&self, lower: &str) -> bool {
        self.0.contains(lower) || base_words(lower).iter().any(|base| self.0.contains(base))
    }
}

impl fmt::Debug for BreachedPasswords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BreachedPasswords({} passwords)", self.0.len())
    }
}

/// The four character classes of the complexity rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CharClass {
    Upper,
    Lower,
    Digit,
    Other,
}

impl CharClass {
    pub const ALL: [CharClass; 4] = [
        CharClass::Upper,
        CharClass::Lower,
        CharClass::Digit,
        CharClass::Other,
    ];

    /// The class of one character of an NFKC-normalised password.
    pub fn of(c: char) -> CharClass {
        if c.is_uppercase() {
            CharClass::Upper
        } else if c.is_lowercase() {
            CharClass::Lower
        } else if c.is_numeric() {
            CharClass::Digit
        } else {
            CharClass::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CharClass::Upper => "UPPERCASE",
            CharClass::Lower => "LOWERCASE",
            CharClass::Digit => "DIGIT",
            CharClass::Other => "OTHER",
        }
    }

    fn bit(self) -> u8 {
        match self {
            CharClass::Upper => 1,
            CharClass::Lower => 2,
            CharClass::Digit => 4,
            CharClass::Other => 8,
        }
    }
}

/// Which classes occur in a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ClassSet(u8);

impl ClassSet {
    fn of(text: &str) -> Self {
        ClassSet(
            text.chars()
                .fold(0, |bits, c| bits | CharClass::of(c).bit()),
        )
    }

    fn contains(self, class: CharClass) -> bool {
        self.0 & class.bit() != 0
    }

    fn count(self) -> usize {
        self.0.count_ones() as usize
    }
}

/// One failed rule. `code()` is stable: the API sends it as the field-violation description
/// and clients may key messages on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyRule {
    Empty,
    ControlCharacter,
    TooShort {
        min: usize,
    },
    TooLong {
        max: usize,
    },
    NotEnoughClasses {
        required: usize,
        found: usize,
    },
    MissingClass(CharClass),
    ContainsUserId,
    ContainsUserIdPart,
    ContainsEmail,
    CommonPassword,
    TooGuessable,
    /// Decided by the service against stored hashes (current + `history_len` previous).
    ReusedPassword,
    /// Decided by the service with [`min_age_blocks`].
    ChangedTooRecently,
}

impl PolicyRule {
    pub fn code(&self) -> &'static str {
        match self {
            PolicyRule::Empty => "EMPTY",
            PolicyRule::ControlCharacter => "CONTROL_CHARACTER",
            PolicyRule::TooShort { .. } => "TOO_SHORT",
            PolicyRule::TooLong { .. } => "TOO_LONG",
            PolicyRule::NotEnoughClasses { .. } => "NOT_ENOUGH_CLASSES",
            PolicyRule::MissingClass(CharClass::Upper) => "MISSING_UPPERCASE",
            PolicyRule::MissingClass(CharClass::Lower) => "MISSING_LOWERCASE",
            PolicyRule::MissingClass(CharClass::Digit) => "MISSING_DIGIT",
            PolicyRule::MissingClass(CharClass::Other) => "MISSING_OTHER",
            PolicyRule::ContainsUserId => "CONTAINS_USER_ID",
            PolicyRule::ContainsUserIdPart => "CONTAINS_USER_ID_PART",
            PolicyRule::ContainsEmail => "CONTAINS_EMAIL",
            PolicyRule::CommonPassword => "COMMON_PASSWORD",
            PolicyRule::TooGuessable => "TOO_GUESSABLE",
            PolicyRule::ReusedPassword => "REUSED_PASSWORD",
            PolicyRule::ChangedTooRecently => "CHANGED_TOO_RECENTLY",
        }
    }

    /// A sentence for people; never contains the password.
    pub fn describe(&self) -> String {
        match self {
            PolicyRule::Empty => "must not be empty".to_owned(),
            PolicyRule::ControlCharacter => "must not contain control characters".to_owned(),
            PolicyRule::TooShort { min } => format!("must be at least {min} characters"),
            PolicyRule::TooLong { max } => format!("must be at most {max} characters"),
            PolicyRule::NotEnoughClasses { required, found } => format!(
                "must contain at least {required} of: upper-case letters, lower-case letters, \
                 digits, other characters (found {found})"
            ),
            PolicyRule::MissingClass(CharClass::Upper) => {
                "must contain an upper-case letter".to_owned()
            }
            PolicyRule::MissingClass(CharClass::Lower) => {
                "must contain a lower-case letter".to_owned()
            }
            PolicyRule::MissingClass(CharClass::Digit) => "must contain a digit".to_owned(),
            PolicyRule::MissingClass(CharClass::Other) => {
                "must contain a character that is not a letter or digit".to_owned()
            }
            PolicyRule::ContainsUserId => "must not contain the User ID".to_owned(),
            PolicyRule::ContainsUserIdPart => {
                "must not contain the first or last three characters of the User ID".to_owned()
            }
            PolicyRule::ContainsEmail => "must not contain the e-mail address".to_owned(),
            PolicyRule::CommonPassword => {
                "is a commonly used password or a simple variation of one".to_owned()
            }
            PolicyRule::TooGuessable => "is too easy to guess: avoid common words, names, dates \
                 and keyboard patterns, even with capitals, digits or symbols added; a few \
                 unrelated words together work well"
                .to_owned(),
            PolicyRule::ReusedPassword => "must differ from recent passwords".to_owned(),
            PolicyRule::ChangedTooRecently => {
                "the password was changed too recently to change it again".to_owned()
            }
        }
    }
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A password in NFKC form: what gets hashed and verified. Its contents never appear in
/// `Debug` output, and it has no `Display` nor `PartialEq` (comparisons go through the hasher).
#[derive(Clone)]
pub struct NormalisedPassword(String);

impl NormalisedPassword {
    /// The NFKC form of a password as presented at sign-in or as the current password, with no
    /// policy applied: today's policy must not decide whether an older password still works.
    pub fn from_presented(raw: &str) -> Self {
        NormalisedPassword(raw.nfkc().collect())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for NormalisedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NormalisedPassword(<redacted>)")
    }
}

/// Whether the minimum age forbids changing the password now. A reset sent by the service desk
/// or forced after a compromise is `exempt` (SECURITY 15); a password never set has no age.
/// The boundary is inclusive: exactly `min_age` after the last change is allowed.
pub fn min_age_blocks(
    last_changed: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    min_age: Option<Duration>,
    exempt: bool,
) -> bool {
    if exempt {
        return false;
    }
    let (Some(last_changed), Some(min_age)) = (last_changed, min_age) else {
        return false;
    };
    // An unrepresentable age (absurd configuration) blocks rather than silently allowing.
    match TimeDelta::from_std(min_age)
        .ok()
        .and_then(|age| last_changed.checked_add_signed(age))
    {
        Some(allowed_from) => now < allowed_from,
        None => true,
    }
}

/// First and last three characters of a lower-cased User ID (the whole ID when shorter).
fn user_id_parts(user_id: &str) -> Vec<String> {
    let chars: Vec<char> = user_id.chars().collect();
    let n = USER_ID_PART_LEN.min(chars.len());
    let first: String = chars.iter().take(n).collect();
    let last: String = chars.iter().skip(chars.len() - n).collect();
    vec![first, last]
}

/// The lower-cased local part of an address, when long enough to be a meaningful context word.
fn email_context_word(email: &str) -> Option<String> {
    let local = email
        .trim()
        .rsplit_once('@')
        .map_or(email.trim(), |(l, _)| l);
    let local = local.nfkc().collect::<String>().to_lowercase();
    (local.chars().count() >= MIN_EMAIL_CONTEXT_LEN).then_some(local)
}

/// Builds the word lists a password check reads (the built-in list of common passwords and
/// zxcvbn's dictionaries, ~5 MiB between them), which are otherwise built by the first check.
/// A service that sets passwords calls it at start-up: that first check would otherwise be
/// the slow one, and the memory it keeps for good shows from the start rather than after the
/// first registration.
pub fn load_word_lists() {
    LazyLock::force(&BLOCKLIST);
    // Any text reaches every dictionary matcher, which builds all of them at once.
    let _ = zxcvbn::zxcvbn("load the word lists", &[]);
}

static BLOCKLIST: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("common_passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.nfkc().collect::<String>().to_lowercase())
        .collect()
});

/// Whether the word under the decorations is easy to guess on its own: the password without
/// the digits and symbols around it, its letter-for-symbol swaps undone (`J3$$1c@2024!` is
/// `jessica`). zxcvbn rates `Butterfly2024!` above 10^8 guesses because a year and a symbol
/// multiply a common word's rank, yet that is the first thing a cracker tries; so the base
/// must stand on its own at [`MIN_BASE_GUESSES`].
fn base_is_guessable(lower: &str, words: &[&str]) -> bool {
    base_words(lower)
        .iter()
        .any(|base| base != lower && zxcvbn::zxcvbn(base, words).guesses() < MIN_BASE_GUESSES)
}

/// The words a decorated password may be built on: without the digits and symbols around it,
/// its swapped letters undone. The run of digits and symbols at the end is the decoration,
/// though its first character may be a swapped letter (`m0n1qu3` + `2024!`): both readings.
fn base_words(lower: &str) -> Vec<String> {
    let kept = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    let run_start = lower.get(kept.len()..).and_then(|run| run.chars().next());
    let mut readings = vec![kept.to_owned()];
    if let Some(first) = run_start {
        readings.push(format!("{kept}{first}"));
    }
    let mut bases: Vec<String> = readings
        .iter()
        .map(|reading| {
            let unswapped: String = reading.chars().map(unswap).collect();
            unswapped
                .trim_matches(|c: char| !c.is_alphabetic())
                .to_owned()
        })
        .filter(|base| !base.is_empty())
        .collect();
    bases.dedup();
    bases
}

/// The letter a symbol or digit commonly stands for in a password.
fn unswap(c: char) -> char {
    match c {
        '@' | '4' => 'a',
        '0' => 'o',
        '3' => 'e',
        '1' | '!' | '|' => 'i',
        '$' | '5' => 's',
        '7' | '+' => 't',
        '8' => 'b',
        other => other,
    }
}

/// Least guesses the base word of a decorated password must need (see [`base_is_guessable`]).
const MIN_BASE_GUESSES: u64 = 1_000_000;

/// `lower` is the lower-cased NFKC password.
fn is_common(lower: &str) -> bool {
    if lower.is_empty() {
        return false;
    }
    let blocked = |s: &str| BLOCKLIST.contains(s);
    // The classic way to pass complexity rules: a common word with digits and a symbol added.
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    blocked(lower)
        || (!core.is_empty() && blocked(core))
        || is_trivial_repetition(lower, &blocked)
        || (!core.is_empty() && is_trivial_repetition(core, &blocked))
}

/// One or two characters repeated (`aaaa`, `abababab`), or a blocklisted word repeated. Strings
/// under four characters are left alone: "qq" inside "Qq7#..." is not a pattern worth a rule.
fn is_trivial_repetition(s: &str, blocked: &dyn Fn(&str) -> bool) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    if n < MIN_REPETITION_LEN {
        return false;
    }
    let Some(period) =
        (1..n).find(|&p| n.is_multiple_of(p) && chars.chunks(p).all(|c| c == &chars[..p]))
    else {
        return false;
    };
    let unit: String = chars[..period].iter().collect();
    period <= 2 || blocked(&unit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    use PasswordProfile::{CqrsLocal as Local, CqrsNational as National, Nist80063b as Nist};

    fn codes(
        profile: PasswordProfile,
        password: &str,
        ctx: &PolicyContext<'_>,
    ) -> Vec<&'static str> {
        match profile.check(password, ctx) {
            Ok(_) => Vec::new(),
            Err(rules) => rules.iter().map(PolicyRule::code).collect(),
        }
    }

    const NONE: PolicyContext<'static> = PolicyContext {
        user_id: None,
        email: None,
        breached: None,
    };
    const JSM: PolicyContext<'static> = PolicyContext {
        user_id: Some("JSM482"),
        email: Some("john.smith@example.nhs.uk"),
        breached: None,
    };
    const LOCAL_CTX: PolicyContext<'static> = PolicyContext {
        user_id: None,
        email: Some("Jane.Doe@example.org"),
        breached: None,
    };

    /// Every rule of every profile, from one table (DESIGN §2: "all tested from one table").
    #[test]
    fn policy_table() {
        let local_128 = "Kx7#pLm2".repeat(16);
        let local_136 = "Kx7#pLm2".repeat(17);
        let nist_128: String = "abcdefghijklmnopqrstuvwxyz "
            .chars()
            .cycle()
            .take(128)
            .collect();
        let nist_130 = "Tr0ub4dor&3-horse-battery-".repeat(5);
        let cases: Vec<(PasswordProfile, &str, PolicyContext<'_>, &[&str])> = vec![
            // ---- cqrs_national
            (National, "Kx7#pLm2", JSM, &[]),
            (National, "kx7#plm2", JSM, &[]), // lower, digit, other: 3 of 4
            (National, "KX7PLMQ2", JSM, &["NOT_ENOUGH_CLASSES"]), // upper, digit
            (National, "Kx7#pLm", JSM, &["TOO_SHORT"]),
            (National, "Kx7#pLm2Kx7#pLm2Kx7#pLm2Kx7#pLm2", JSM, &[]), // exactly 32
            (
                National,
                "Kx7#pLm2Kx7#pLm2Kx7#pLm2Kx7#pLm2Q",
                JSM,
                &["TOO_LONG"],
            ),
            (National, "kxqpvlmwz", JSM, &["NOT_ENOUGH_CLASSES"]),
            (
                National,
                "Kx7pJsm482",
                JSM,
                &["CONTAINS_USER_ID", "CONTAINS_USER_ID_PART"],
            ),
            (
                National,
                "Kx7#jsm482",
                JSM,
                &["CONTAINS_USER_ID", "CONTAINS_USER_ID_PART"],
            ),
            (National, "Kx7#pLjSm", JSM, &["CONTAINS_USER_ID_PART"]),
            (National, "Kx7#p482q", JSM, &["CONTAINS_USER_ID_PART"]),
            (National, "Kx7#p48q2", JSM, &[]), // "48" alone is not three characters
            (National, "Summer2024!", JSM, &["COMMON_PASSWORD"]),
            (National, "P@ssw0rd", JSM, &["COMMON_PASSWORD"]),
            (National, "Kx7#pLm2\u{7}", JSM, &["CONTROL_CHARACTER"]),
            (
                National,
                "",
                JSM,
                &["EMPTY", "TOO_SHORT", "NOT_ENOUGH_CLASSES"],
            ),
            (National, "John.Smith#9", JSM, &["CONTAINS_EMAIL"]),
            (
                National,
                "jsm482",
                JSM,
                &[
                    "TOO_SHORT",
                    "NOT_ENOUGH_CLASSES",
                    "CONTAINS_USER_ID",
                    "CONTAINS_USER_ID_PART",
                ],
            ),
            // ---- cqrs_local
            (Local, "Kx7#pLm2", LOCAL_CTX, &[]),
            (Local, "Kx7#pLm", LOCAL_CTX, &["TOO_SHORT"]),
            (Local, "kx7#plm2", LOCAL_CTX, &["MISSING_UPPERCASE"]),
            (Local, "KX7#PLM2", LOCAL_CTX, &["MISSING_LOWERCASE"]),
            (Local, "Kxq#pLmw", LOCAL_CTX, &["MISSING_DIGIT"]),
            (Local, "Kx7qpLm2", LOCAL_CTX, &["MISSING_OTHER"]),
            (Local, "Kx7 pLm2", LOCAL_CTX, &[]), // a space is "other"
            (Local, &local_128, LOCAL_CTX, &[]),
            (Local, &local_136, LOCAL_CTX, &["TOO_LONG"]),
            (Local, "Kx7#pjsm482", JSM, &["CONTAINS_USER_ID"]), // no part rule
            (Local, "Winter2025!", LOCAL_CTX, &["COMMON_PASSWORD"]),
            (Local, "x#jane.doe9Q", LOCAL_CTX, &["CONTAINS_EMAIL"]),
            (Local, "Kx7#p\u{0}Lm2", LOCAL_CTX, &["CONTROL_CHARACTER"]),
            (
                Local,
                "",
                LOCAL_CTX,
                &[
                    "EMPTY",
                    "TOO_SHORT",
                    "MISSING_UPPERCASE",
                    "MISSING_LOWERCASE",
                    "MISSING_DIGIT",
                    "MISSING_OTHER",
                ],
            ),
            // ---- nist_800_63b
            (Nist, "correct pony staple drum", NONE, &[]),
            (Nist, "lowercaseonlybutlong", NONE, &[]), // no class rules
            (Nist, "fourteen chars", NONE, &["TOO_SHORT"]),
            (Nist, &nist_128, NONE, &[]), // NIST: at least 64 accepted
            (Nist, &nist_130, NONE, &["TOO_LONG"]),
            (Nist, "Password123456789", NONE, &["COMMON_PASSWORD"]),
            (Nist, "qwertyqwertyqwerty", NONE, &["COMMON_PASSWORD"]),
            (Nist, "zzzzzzzzzzzzzzzzzzzz", NONE, &["COMMON_PASSWORD"]),
            (
                Nist,
                "correct horse battery staple",
                NONE,
                &["COMMON_PASSWORD"],
            ),
            (Nist, "my id is jsm482 ok then", JSM, &["CONTAINS_USER_ID"]), // no part rule
            (Nist, "contact john.smith please", JSM, &["CONTAINS_EMAIL"]),
            (Nist, "tab\tinside a long one", NONE, &["CONTROL_CHARACTER"]),
            (Nist, "", NONE, &["EMPTY", "TOO_SHORT"]),
        ];
        for (profile, password, ctx, expected) in &cases {
            assert_eq!(
                codes(*profile, password, ctx),
                expected.to_vec(),
                "profile {profile}, password {password:?}"
            );
        }
        // Every rule check() can produce appears in the table at least once.
        let seen: HashSet<&str> = cases
            .iter()
            .flat_map(|(_, _, _, expected)| expected.iter().copied())
            .collect();
        for code in [
            "EMPTY",
            "CONTROL_CHARACTER",
            "TOO_SHORT",
            "TOO_LONG",
            "NOT_ENOUGH_CLASSES",
            "MISSING_UPPERCASE",
            "MISSING_LOWERCASE",
            "MISSING_DIGIT",
            "MISSING_OTHER",
            "CONTAINS_USER_ID",
            "CONTAINS_USER_ID_PART",
            "CONTAINS_EMAIL",
            "COMMON_PASSWORD",
        ] {
            assert!(seen.contains(code), "{code} is not covered by the table");
        }
    }

    #[test]
    fn profiles_parse_and_expose_their_numbers() {
        for profile in PasswordProfile::ALL {
            assert_eq!(PasswordProfile::parse(profile.as_str()), Some(profile));
        }
        assert_eq!(PasswordProfile::parse(" CQRS_National "), Some(National));
        assert_eq!(PasswordProfile::parse("nist"), None);
        assert_eq!(National.min_age(), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(National.history_len(), 8);
        assert_eq!((Local.min_age(), Local.history_len()), (None, 0));
        assert_eq!((Nist.min_age(), Nist.history_len()), (None, 0));
        assert!(Nist.max_len() >= 64);
    }

    #[test]
    fn min_age_blocks_until_exactly_72_hours() {
        let changed = Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0).unwrap();
        let age = National.min_age();
        let at = |delta: TimeDelta| changed + delta;
        let boundary = TimeDelta::hours(72);
        assert!(min_age_blocks(Some(changed), changed, age, false));
        assert!(min_age_blocks(
            Some(changed),
            at(boundary - TimeDelta::milliseconds(1)),
            age,
            false
        ));
        assert!(!min_age_blocks(Some(changed), at(boundary), age, false));
        assert!(!min_age_blocks(
            Some(changed),
            at(boundary + TimeDelta::seconds(1)),
            age,
            false
        ));
        // A service-desk or compromise reset is never blocked (SECURITY 15).
        assert!(!min_age_blocks(Some(changed), changed, age, true));
        // Never set, or a profile without a minimum age.
        assert!(!min_age_blocks(None, changed, age, false));
        assert!(!min_age_blocks(
            Some(changed),
            changed,
            Local.min_age(),
            false
        ));
        // A clock that went backwards still blocks.
        assert!(min_age_blocks(
            Some(changed),
            changed - TimeDelta::hours(1),
            age,
            false
        ));
        // An absurd configuration blocks instead of overflowing.
        assert!(min_age_blocks(
            Some(changed),
            changed,
            Some(Duration::from_secs(u64::MAX)),
            false
        ));
    }

    #[test]
    fn password_material_never_shows_in_debug() {
        let ok = National.check("Kx7#pLm2", &JSM).unwrap();
        assert_eq!(format!("{ok:?}"), "NormalisedPassword(<redacted>)");
        let err = National.check("Summer2024!", &JSM).unwrap_err();
        let shown = format!(
            "{err:?} {}",
            err.iter()
                .map(PolicyRule::describe)
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(!shown.to_lowercase().contains("summer"), "{shown}");
    }

    #[test]
    fn nfkc_form_is_what_gets_hashed_and_is_never_truncated() {
        // Full-width letters and digits become ASCII; a ligature becomes two letters.
        let full = National.check("Ｋｘ７＃ｐＬｍ２", &NONE).unwrap();
        assert_eq!(full.as_bytes(), b"Kx7#pLm2");
        assert_eq!(
            NormalisedPassword::from_presented("\u{FB01}").as_bytes(),
            b"fi"
        );
        // Decomposed and composed accents are the same password.
        assert_eq!(
            NormalisedPassword::from_presented("Ce\u{301}sar").as_bytes(),
            NormalisedPassword::from_presented("C\u{e9}sar").as_bytes()
        );
        let long = "Kx7#pLm2".repeat(16);
        assert_eq!(
            Local.check(&long, &NONE).unwrap().as_bytes(),
            long.as_bytes()
        );
        // Absurd input is refused without normalising it.
        let huge = "a".repeat(Local.max_len() * RAW_LENGTH_FACTOR + 1);
        assert_eq!(codes(Local, &huge, &NONE), vec!["TOO_LONG"]);
    }

    /// Common words dressed up with capitals, swaps, years and symbols are too easy to guess;
    /// a deployment's breached list catches the ones no dictionary has.
    #[test]
    fn decorated_common_words_are_refused() {
        for guessable in [
            "Butterfly2024!",
            "J3$$1c@2024!",
            "0ct0b3r2024!",
            "Iloveu2024!",
        ] {
            assert_eq!(
                codes(National, guessable, &NONE),
                vec!["TOO_GUESSABLE"],
                "{guessable}"
            );
        }
        for fine in ["Velvet#Harbor42", "Kx7#pLm2", "violet tundra ember quill"] {
            assert_eq!(
                codes(Nist, fine, &NONE).len(),
                usize::from(fine.len() < 15),
                "{fine}"
            );
        }
        let breached = BreachedPasswords::parse("# the list\nmaldita\n\nMonique\n");
        assert_eq!(breached.len(), 2);
        let ctx = PolicyContext {
            breached: Some(&breached),
            ..NONE
        };
        assert!(codes(National, "M@ld1t@2024!", &NONE).is_empty());
        for listed in ["M@ld1t@2024!", "Maldita#1", "m0n1qu32024!"] {
            assert_eq!(
                codes(National, listed, &ctx),
                vec!["COMMON_PASSWORD"],
                "{listed}"
            );
        }
    }

    #[test]
    fn length_is_code_points_of_the_nfkc_form() {
        // e + combining acute composes to one code point: nine typed, eight counted.
        let composed = "E\u{301}x7#p\u{e9}z\u{e8}";
        assert_eq!(composed.chars().count(), 9);
        assert_eq!(codes(National, composed, &NONE), Vec::<&str>::new());
        assert_eq!(
            codes(National, &composed[..composed.len() - 2], &NONE),
            vec!["TOO_SHORT"]
        );
        // q + combining acute has no composed form: two code points each, so six visible
        // characters can be eight code points.
        assert_eq!(
            codes(National, "Qq\u{301}7#x\u{301}v", &NONE),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes(National, "Qq\u{301}7#q\u{301}", &NONE),
            vec!["TOO_SHORT"]
        );
        // An emoji is one code point; a ZWJ sequence is several.
        assert_eq!(codes(National, "Kx7#pL\u{1F600}", &NONE), vec!["TOO_SHORT"]);
        assert_eq!(
            codes(National, "Kx7#pQ\u{1F469}\u{200D}\u{1F4BB}", &NONE),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn blocklist_is_loaded_and_normalised() {
        assert!(BLOCKLIST.len() > 300);
        assert!(BLOCKLIST.contains("password"));
        assert!(BLOCKLIST.iter().all(|w| *w == w.to_lowercase()));
        assert!(!BLOCKLIST.iter().any(|w| w.starts_with('#') || w.is_empty()));
        for common in [
            "123456",
            "QWERTY",
            "Password1",
            "!Welcome123",
            "P@ssW0rd!!",
            "abababab",
        ] {
            assert!(is_common(&common.to_lowercase()), "{common}");
        }
        for fine in ["kx7#plm2", "correct pony staple drum", "summerhouse22"] {
            assert!(!is_common(fine), "{fine}");
        }
    }

    fn class_pool(class: CharClass) -> &'static [char] {
        match class {
            CharClass::Upper => &['A', 'K', 'Z', '\u{c9}', '\u{d8}', '\u{394}'],
            CharClass::Lower => &['a', 'k', 'z', '\u{e9}', '\u{df}', '\u{3b4}'],
            CharClass::Digit => &['0', '4', '9', '\u{FF17}', '\u{663}'],
            CharClass::Other => &['#', ' ', '!', '\u{20AC}', '\u{4E2D}', '_'],
        }
    }

    /// A password of 8 to 20 characters drawn from exactly the classes in `mask`.
    fn password_from_classes() -> impl Strategy<Value = (u8, String)> {
        (1u8..16).prop_flat_map(|mask| {
            let classes: Vec<CharClass> = CharClass::ALL
                .into_iter()
                .filter(|c| mask & c.bit() != 0)
                .collect();
            let n = classes.len();
            (
                Just(mask),
                Just(classes),
                prop::collection::vec((0..n, 0usize..8), 8..20),
            )
                .prop_map(move |(mask, classes, picks)| {
                    // The first n characters cover every class of the mask once.
                    let s: String = picks
                        .iter()
                        .enumerate()
                        .map(|(i, &(class, k))| {
                            let class = if i < classes.len() {
                                classes[i]
                            } else {
                                classes[class]
                            };
                            let pool = class_pool(class);
                            pool[k % pool.len()]
                        })
                        .collect();
                    (mask, s)
                })
        })
    }

    proptest! {
        #[test]
        fn class_counting((mask, password) in password_from_classes()) {
            let normalised = NormalisedPassword::from_presented(&password);
            let text = std::str::from_utf8(normalised.as_bytes()).unwrap();
            prop_assert_eq!(ClassSet::of(text), ClassSet(mask));
            let found = mask.count_ones() as usize;
            let national = codes(National, &password, &NONE);
            prop_assert_eq!(national.contains(&"NOT_ENOUGH_CLASSES"), found < 3);
            let local = codes(Local, &password, &NONE);
            for class in CharClass::ALL {
                let missing = PolicyRule::MissingClass(class).code();
                prop_assert_eq!(local.contains(&missing), mask & class.bit() == 0);
            }
            let nist = codes(Nist, &password, &NONE);
            prop_assert!(!nist.iter().any(|c| c.starts_with("MISSING") || *c == "NOT_ENOUGH_CLASSES"));
        }

        #[test]
        fn national_refuses_user_id_and_its_ends_in_any_case(
            user_id in "[A-Z]{3}[0-9]{3}",
            which in 0usize..3,
            flips in prop::collection::vec(any::<bool>(), 6),
            // No leading combining mark in the suffix: it would compose with the fragment's
            // last letter into a different character.
            prefix in "\\PC{0,12}",
            suffix in "([\\PC&&\\PM]\\PC{0,11})?",
        ) {
            let fragment: String = match which {
                0 => user_id.clone(),
                1 => user_id[..3].to_owned(),
                _ => user_id[3..].to_owned(),
            };
            let fragment: String = fragment
                .chars()
                .zip(flips)
                .map(|(c, lower)| if lower { c.to_ascii_lowercase() } else { c })
                .collect();
            let password = format!("{prefix}{fragment}{suffix}");
            let ctx = PolicyContext { user_id: Some(&user_id), email: None, breached: None };
            let found = codes(National, &password, &ctx);
            prop_assert!(found.contains(&"CONTAINS_USER_ID_PART"), "{found:?}");
            let normalised = NormalisedPassword::from_presented(&password);
            let lower = std::str::from_utf8(normalised.as_bytes()).unwrap().to_lowercase();
            prop_assert_eq!(
                found.contains(&"CONTAINS_USER_ID"),
                lower.contains(&user_id.to_lowercase())
            );
            prop_assert!(which != 0 || found.contains(&"CONTAINS_USER_ID"));
        }

        #[test]
        fn length_counts_code_points(
            chars in prop::collection::vec(
                prop::sample::select(vec!['a', 'Z', '7', '#', '\u{e9}', '\u{1F600}', '\u{4E2D}', '\u{10348}']),
                0..140,
            )
        ) {
            let password: String = chars.iter().collect();
            let n = chars.len();
            for profile in PasswordProfile::ALL {
                let found = codes(profile, &password, &NONE);
                prop_assert_eq!(found.contains(&"TOO_SHORT"), n < profile.min_len());
                prop_assert_eq!(found.contains(&"TOO_LONG"), n > profile.max_len());
                if let Ok(normalised) = profile.check(&password, &NONE) {
                    prop_assert_eq!(normalised.as_bytes(), password.as_bytes());
                }
            }
        }

        #[test]
        fn fullwidth_forms_count_after_normalisation(password in "[A-Za-z0-9#!?]{1,30}") {
            // U+FF01..U+FF5E are the full-width forms of ASCII 0x21..0x7E.
            let fullwidth: String = password
                .chars()
                .map(|c| char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap())
                .collect();
            for profile in PasswordProfile::ALL {
                let plain = profile.check(&password, &JSM);
                let wide = profile.check(&fullwidth, &JSM);
                match (plain, wide) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a.as_bytes(), b.as_bytes()),
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
                }
            }
            let digits_only: String = password.chars().filter(char::is_ascii_digit).collect();
            if !digits_only.is_empty() {
                let wide_digits: String = digits_only
                    .chars()
                    .map(|c| char::from_u32(c as u32 - 0x30 + 0xFF10).unwrap())
                    .collect();
                let normalised = NormalisedPassword::from_presented(&wide_digits);
                prop_assert_eq!(normalised.as_bytes(), digits_only.as_bytes());
                let text = std::str::from_utf8(normalised.as_bytes()).unwrap();
                prop_assert_eq!(ClassSet::of(text), ClassSet(CharClass::Digit.bit()));
            }
        }
    }

    #[test]
    fn the_policy_reads_as_the_security_information_screen() {
        let national = PasswordProfile::CqrsNational.policy_lines();
        assert_eq!(national[0], "Password must be 8-32 characters long.");
        assert!(national.iter().any(|l| l.contains("previous 8 passwords")));
        assert!(national.iter().any(|l| l.contains("once every 72 hours")));
        let local = PasswordProfile::CqrsLocal.policy_lines();
        assert_eq!(local[0], "Password must be 8-128 characters long.");
        assert!(
            !local
                .iter()
                .any(|l| l.contains("hours") || l.contains("previous"))
        );
        assert!(PasswordProfile::Nist80063b.policy_lines()[0].contains("15-128"));
    }
}
