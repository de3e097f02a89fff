//! Durations (`--timeout 30s`) and points in time (`--since 15m`, `--since 2024-05-01T09:00:00Z`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest duration accepted.
const MAX: Duration = Duration::from_secs(366 * 86_400);

/// A `humantime` duration (`500ms`, `30s`, `2.5s`, `15m`, `2h`, `1d`, `1h 30m`), or a bare
/// number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let bare_seconds = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let parsed = if bare_seconds {
        humantime::parse_duration(&format!("{s}s"))
    } else {
        humantime::parse_duration(s)
    };
    let value = parsed
        .map_err(|e| format!("invalid duration `{raw}` ({e}; e.g. 500ms, 30s, 15m, 2h, 1d)"))?;
    if value.is_zero() || value > MAX {
        return Err(format!("duration `{raw}` out of range"));
    }
    Ok(value)
}

/// A lower time bound: an RFC 3339 time or a duration before now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(DateTime<Utc>),
}

impl Since {
    pub fn parse(raw: &str) -> Result<Since, String> {
        if let Ok(at) = DateTime::parse_from_rfc3339(raw.trim()) {
            return Ok(Since::At(at.with_timezone(&Utc)));
        }
        parse_duration(raw).map(Since::Ago).map_err(|_| {
            format!("invalid time `{raw}`: give a duration (15m, 2h, 1d) or an RFC 3339 time")
        })
    }

    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Since::At(at) => at,
            Since::Ago(d) => chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        for bad in ["", "s", "0", "-1s", "5y", "1e999", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn since() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Since::parse("15m").unwrap().resolve(now).to_rfc3339(),
            "2024-05-01T09:45:00+00:00"
        );
        assert_eq!(
            Since::parse("2024-04-30T08:00:00+01:00")
                .unwrap()
                .resolve(now)
                .to_rfc3339(),
            "2024-04-30T07:00:00+00:00"
        );
        assert!(Since::parse("yesterday").is_err());
    }
}
