//! Times as people read them: UK local time ("6 December 2025, 18:29"), and the dates typed
//! into filters.
//!
//! UK local time is worked out here rather than with a time-zone database crate: the rule
//! (British Summer Time, +1 h, from 01:00 UTC on the last Sunday of March to 01:00 UTC on the
//! last Sunday of October) has been fixed in law since 2002, and the tz database would add
//! a large generated crate for one zone.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc, Weekday};

/// The UTC instant of 01:00 on the last Sunday of `month` (March or October) of `year`.
fn summer_time_edge(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let last = NaiveDate::from_ymd_opt(year, month, 31)?;
    let back = last.weekday().num_days_from_sunday();
    let sunday = last - TimeDelta::days(i64::from(back));
    debug_assert_eq!(sunday.weekday(), Weekday::Sun);
    Some(sunday.and_hms_opt(1, 0, 0)?.and_utc())
}

/// `instant` on the UK's clocks.
fn uk(instant: DateTime<Utc>) -> chrono::NaiveDateTime {
    let year = instant.year();
    let summer = match (summer_time_edge(year, 3), summer_time_edge(year, 10)) {
        (Some(starts), Some(ends)) => (starts..ends).contains(&instant),
        _ => false,
    };
    let offset = if summer {
        TimeDelta::hours(1)
    } else {
        TimeDelta::zero()
    };
    instant.naive_utc() + offset
}

fn instant(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// "6 December 2025".
pub fn day(seconds: i64) -> String {
    uk(instant(seconds)).format("%-d %B %Y").to_string()
}

/// "6 December 2025, 18:29".
pub fn when(seconds: i64) -> String {
    uk(instant(seconds)).format("%-d %B %Y, %H:%M").to_string()
}

/// "6 December 2025, 18:29:09" (the audit trail, where seconds matter).
pub fn when_precise(seconds: i64) -> String {
    uk(instant(seconds))
        .format("%-d %B %Y, %H:%M:%S")
        .to_string()
}

/// [`when`] of an optional protobuf timestamp; empty when unset.
pub fn stamp(time: Option<&prost_types::Timestamp>) -> String {
    time.map(|t| when(t.seconds)).unwrap_or_default()
}

/// A date typed as `2025-03-31`: the start of that day (UTC) in Unix seconds; empty is
/// `None`; anything else (including 2025-02-30) is an error.
pub fn parse_day(text: &str) -> Result<Option<i64>, ()> {
    if text.is_empty() {
        return Ok(None);
    }
    let shaped = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| ())?;
    if !shaped {
        return Err(());
    }
    date.and_hms_opt(0, 0, 0)
        .map(|t| Some(t.and_utc().timestamp()))
        .ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_time_follows_british_summer_time() {
        // 2025: BST from 30 March 01:00 UTC to 26 October 01:00 UTC.
        assert_eq!(when(1_743_296_399), "30 March 2025, 00:59");
        assert_eq!(when(1_743_296_400), "30 March 2025, 02:00");
        assert_eq!(when(1_761_440_399), "26 October 2025, 01:59");
        assert_eq!(when(1_761_440_400), "26 October 2025, 01:00");
        assert_eq!(when(1_746_281_100), "3 May 2025, 15:05");
        assert_eq!(when_precise(1_746_281_109), "3 May 2025, 15:05:09");
        assert_eq!(when(0), "1 January 1970, 00:00");
        // Late in a summer evening UTC is already the next day in the UK.
        assert_eq!(day(1_751_324_400), "1 July 2025");
        assert_eq!(stamp(None), "");
    }

    #[test]
    fn typed_days_are_checked() {
        assert_eq!(parse_day(""), Ok(None));
        assert_eq!(parse_day("1970-01-02"), Ok(Some(86_400)));
        assert_eq!(parse_day("2024-02-29"), Ok(Some(1_709_164_800)));
        for bad in [
            "2025-02-30",
            "2025-13-01",
            "25-01-01",
            "2025-1-01",
            "yesterday",
            "2025/01/01",
        ] {
            assert_eq!(parse_day(bad), Err(()), "{bad}");
        }
    }
}
