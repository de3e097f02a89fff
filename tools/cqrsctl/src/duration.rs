//! Durations (`--timeout 30s`) and points in time (`--since 15m`, `--since 2024-05-01T09:00:00Z`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `500ms`, `30s`, `15m`, `2h`, `1d`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{raw}` (e.g. 500ms, 30s, 15m, 2h, 1d)"))?;
    let factor = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in `{raw}` (ms, s, m, h or d)"
            ));
        }
    };
    let secs = value * factor;
    if !secs.is_finite() || secs <= 0.0 || secs > 366.0 * 86_400.0 {
        return Err(format!("duration `{raw}` out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
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
