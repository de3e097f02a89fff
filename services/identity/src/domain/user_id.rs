//! NATIONAL User IDs: three letters then three digits (`JSM482`), assigned by the system.
//!
//! The letters come from the person's initials so the ID is easy to remember: the first letter
//! of the first name and the first two letters of the last name, folded to A-Z ("Émile
//! Ødegård" -> `EOD`). Names with too few foldable letters are topped up from the rest of the
//! names, then with random letters; the digits are always random. Uniqueness is the store's job:
//! it retries with a new candidate on conflict, and may fall back to [`random_user_id`].

use rand::{Rng, RngCore};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub const USER_ID_LEN: usize = 6;

/// Whether `s` is a User ID as typed at sign-in: `^[A-Za-z]{3}[0-9]{3}$`. Letters are
/// case-insensitive; [`normalise_user_id`] gives the stored (upper-case) form.
pub fn is_valid_user_id(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == USER_ID_LEN
        && bytes[..3].iter().all(u8::is_ascii_alphabetic)
        && bytes[3..].iter().all(u8::is_ascii_digit)
}

/// The canonical form of a typed User ID (trimmed, upper-case), or `None` when it is not one.
pub fn normalise_user_id(s: &str) -> Option<String> {
    let s = s.trim();
    is_valid_user_id(s).then(|| s.to_ascii_uppercase())
}

/// A candidate User ID from a person's names: initials-based letters, random digits.
pub fn candidate_user_id(first_name: &str, last_name: &str, rng: &mut impl RngCore) -> String {
    let first = fold_to_ascii_letters(first_name);
    let last = fold_to_ascii_letters(last_name);

    let mut letters: Vec<u8> = Vec::with_capacity(3);
    letters.extend(first.iter().take(1));
    letters.extend(last.iter().take(2));
    // Top up from what is left of the names, first name first (a one-letter surname like "O").
    let leftovers = first.iter().skip(1).chain(last.iter().skip(2));
    for &c in leftovers {
        if letters.len() == 3 {
            break;
        }
        letters.push(c);
    }
    while letters.len() < 3 {
        letters.push(random_letter(rng));
    }

    let mut id: String = letters.into_iter().map(char::from).collect();
    push_digits(&mut id, rng);
    id
}

/// A User ID with random letters: the fallback when a person's initials keep colliding.
pub fn random_user_id(rng: &mut impl RngCore) -> String {
    let mut id: String = (0..3).map(|_| char::from(random_letter(rng))).collect();
    push_digits(&mut id, rng);
    id
}

fn random_letter(rng: &mut impl RngCore) -> u8 {
    rng.random_range(b'A'..=b'Z')
}

fn push_digits(id: &mut String, rng: &mut impl RngCore) {
    for _ in 0..3 {
        id.push(char::from(rng.random_range(b'0'..=b'9')));
    }
}

/// The A-Z letters of a name: accents dropped (NFKD then no combining marks), a few Latin
/// letters without a decomposition spelled out, everything else (spaces, hyphens, other
/// scripts) skipped.
fn fold_to_ascii_letters(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c.is_ascii_alphabetic() {
            out.push(c.to_ascii_uppercase() as u8);
            continue;
        }
        let spelled: &str = match c {
            'Ø' | 'ø' => "O",
            'Æ' | 'æ' => "AE",
            'Œ' | 'œ' => "OE",
            'ß' | 'ẞ' => "SS",
            'Ð' | 'ð' | 'Đ' | 'đ' => "D",
            'Þ' | 'þ' => "TH",
            'Ł' | 'ł' => "L",
            'ı' => "I",
            'Ħ' | 'ħ' => "H",
            'Ŧ' | 'ŧ' => "T",
            'Ŋ' | 'ŋ' => "N",
            _ => "",
        };
        out.extend(spelled.bytes());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// `^[A-Z]{3}[0-9]{3}$`, strictly upper-case.
    fn is_canonical(id: &str) -> bool {
        is_valid_user_id(id) && id == id.to_ascii_uppercase()
    }

    #[test]
    fn validates_and_normalises() {
        assert!(is_valid_user_id("JSM482"));
        assert!(is_valid_user_id("jsm482"));
        for bad in [
            "JS482",
            "JSM4821",
            "JSMA82",
            "123JSM",
            "JSM48 ",
            "ÉSM482",
            "",
            "JSM４８２",
        ] {
            assert!(!is_valid_user_id(bad), "{bad:?}");
        }
        assert_eq!(normalise_user_id(" jsm482 ").as_deref(), Some("JSM482"));
        assert_eq!(normalise_user_id("js-482"), None);
    }

    #[test]
    fn letters_come_from_initials() {
        let mut rng = StdRng::seed_from_u64(7);
        let id = candidate_user_id("John", "Smith", &mut rng);
        assert_eq!(&id[..3], "JSM");
        assert!(is_canonical(&id));
        let id = candidate_user_id("Émile", "Ødegård", &mut rng);
        assert_eq!(&id[..3], "EOD");
        let id = candidate_user_id("Åsa", "Ó", &mut rng);
        assert_eq!(
            &id[..3],
            "AOS",
            "one-letter surname topped up from the first name"
        );
        let id = candidate_user_id("  ", "van der Berg", &mut rng);
        assert_eq!(&id[..2], "VA");
        assert_eq!(
            fold_to_ascii_letters("Þóra Łukasz-Straße"),
            b"THORALUKASZSTRASSE"
        );
    }

    #[test]
    fn names_without_latin_letters_get_random_letters() {
        let mut rng = StdRng::seed_from_u64(1);
        let ids: Vec<String> = (0..20)
            .map(|_| candidate_user_id("李", "小龍", &mut rng))
            .collect();
        assert!(ids.iter().all(|id| is_canonical(id)));
        let distinct: std::collections::HashSet<&str> = ids.iter().map(|id| &id[..3]).collect();
        assert!(distinct.len() > 1, "letters should be random: {ids:?}");
        assert!(is_canonical(&random_user_id(&mut rng)));
    }

    proptest! {
        #[test]
        fn generated_ids_always_match_the_pattern(
            first in "\\PC{0,20}",
            last in "\\PC{0,20}",
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let id = candidate_user_id(&first, &last, &mut rng);
            prop_assert!(is_canonical(&id), "{first:?} {last:?} -> {id:?}");
            prop_assert!(is_canonical(&random_user_id(&mut rng)));
        }

        #[test]
        fn latin_names_keep_their_initials(first in "[A-Za-z][a-z]{0,10}", last in "[A-Za-z]{2}[a-z]{0,10}", seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let id = candidate_user_id(&first, &last, &mut rng);
            let expected = format!("{}{}", &first[..1], &last[..2]).to_ascii_uppercase();
            prop_assert_eq!(&id[..3], expected.as_str());
        }
    }
}
