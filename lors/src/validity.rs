//! `HH:MM` durations (as `grid-proxy-init -valid`) and time formatting.

/// Largest number of hours accepted in `HH:MM`.
pub const MAX_HOURS: u64 = 9999;

/// Parses `HH:MM` (hours 0-9999, minutes 00-59) into seconds. `00:00` is
/// accepted (meaning "any time left"); callers that need a positive
/// lifetime check for it.
pub fn parse_hhmm(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: expected HH:MM (e.g. 12:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let digits = |t: &str, max_len: usize| {
        !t.is_empty() && t.len() <= max_len && t.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 4) || m.len() != 2 || !digits(m, 2) {
        return Err(bad());
    }
    let hours: u64 = h.parse().map_err(|_| bad())?;
    let minutes: u64 = m.parse().map_err(|_| bad())?;
    if minutes > 59 {
        return Err(format!("invalid duration {s:?}: minutes must be 00-59"));
    }
    if hours > MAX_HOURS {
        return Err(format!("invalid duration {s:?}: at most {MAX_HOURS} hours"));
    }
    Ok(hours * 3600 + minutes * 60)
}

/// Seconds as `H:MM:SS` (negative values print as `0:00:00`).
pub fn format_duration(secs: i64) -> String {
    let s = secs.max(0);
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (the stack's one civil-date
/// formatting, in `ibp_service::units`): for logs and messages that other
/// hosts read.
pub use ibp_service::units::format_utc;

/// Unix seconds as the user's local time with its offset, `YYYY-MM-DD
/// HH:MM:SS +HH:MM` (`TZ`, else /etc/localtime): what `lors` shows people.
/// A time chrono cannot represent prints as `@<seconds>`.
pub fn format_local(t: i64) -> String {
    format_in(t, &chrono::Local)
}

/// [`format_local`] in a given zone (tests).
pub fn format_in<Tz: chrono::TimeZone>(t: i64, zone: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match chrono::DateTime::from_timestamp(t, 0) {
        Some(utc) => utc
            .with_timezone(zone)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        None => format!("@{t}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_times_carry_their_offset() {
        let cet = chrono::FixedOffset::east_opt(3600).unwrap();
        assert_eq!(super::format_in(0, &cet), "1970-01-01 01:00:00 +01:00");
        let utc = chrono::FixedOffset::east_opt(0).unwrap();
        assert_eq!(
            super::format_in(1_700_000_000, &utc),
            "2023-11-14 22:13:20 +00:00"
        );
        assert_eq!(super::format_in(i64::MAX, &utc), format!("@{}", i64::MAX));
    }
}
