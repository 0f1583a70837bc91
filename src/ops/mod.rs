//! Ops tools that read and tend the database: the `facepair logins` and `facepair events`
//! reports, replays and retention.

pub mod events;
pub mod report;
pub mod retention;

/// A duration on the command line: `90d`, `12h`, `30m`, `45s`, `1h 30m` (humantime's units).
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 30d, 12h, 15m or 45s: {e}"))?;
    chrono::Duration::from_std(d).map_err(|_| format!("{s:?} is too long"))
}

/// A point in time on the command line: RFC 3339, or a duration meaning "that long ago".
pub fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    parse_duration(s)
        .map(|d| chrono::Utc::now() - d)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 24h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(parse_duration("12h").unwrap(), chrono::Duration::hours(12));
        assert_eq!(
            parse_duration("45s").unwrap(),
            chrono::Duration::seconds(45)
        );
        assert_eq!(
            parse_duration("1h 30m").unwrap(),
            chrono::Duration::minutes(90)
        );
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
        assert!(parse_since("2026-01-01T00:00:00Z").is_ok());
        assert!(parse_since("yesterday").is_err());
    }
}
