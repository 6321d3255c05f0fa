//! Durations (`"60s"`, `"1h30m"`, `"500ms"`, plain seconds) and sizes
//! (`"10GiB"`, `"500MB"`, plain bytes) as written in the configuration and
//! on the command line, serde deserializers that take either an integer
//! (seconds, bytes) or such a string, and their display.

use std::time::Duration;

use serde::Deserialize;

/// A length of time in the configuration: an integer number of seconds or a
/// string with units (`"60s"`, `"10m"`, `"500ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConfigDuration, D::Error> {
        deserialize_duration(d).map(ConfigDuration)
    }
}

/// An integer or a string, as a configuration field holds a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Text(String),
}

/// `deserialize_with` for a [`Duration`]: an integer number of seconds or a
/// string for [`parse_duration`].
pub fn deserialize_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Duration::from_secs(n)),
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

/// `deserialize_with` for whole seconds: an integer or a string for
/// [`parse_seconds`].
pub fn deserialize_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => parse_seconds(&s).map_err(serde::de::Error::custom),
    }
}

/// `deserialize_with` for a byte count: an integer or a string for
/// [`parse_size`].
pub fn deserialize_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// `deserialize_with` for a limit: an integer, a size string for
/// [`parse_size`], or `"unlimited"` (`None`).
pub fn deserialize_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Some(n)),
        Raw::Text(s) if s.trim().eq_ignore_ascii_case("unlimited") => Ok(None),
        Raw::Text(s) => parse_size(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e} (or \"unlimited\")"))),
    }
}

/// Parses a duration: an integer number of seconds, or numbers with the
/// units `ms`, `s`, `m`, `h`, `d`, `w` (e.g. `"90s"`, `"1h30m"`, `"250ms"`,
/// `"10 m"`: blanks may stand around each number and unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("bad duration {s:?}: a unit without a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {s:?}: number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "" => return Err(format!("bad duration {s:?}: a number without a unit")),
            u => return Err(format!("bad duration {s:?}: unknown unit {u:?}")),
        };
        rest = rest[unit_len..].trim_start();
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a duration in whole seconds (sub-second parts are refused).
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: give whole seconds"));
    }
    Ok(d.as_secs())
}

/// Parses a size: bytes, or a number with `K`/`M`/`G`/`T`/`P` (powers of
/// 1000, optionally followed by `B`) or `KiB`/`MiB`/`GiB`/`TiB`/`PiB`
/// (powers of 1024). Case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("bad size {s:?}: expected a number, e.g. 10GiB"));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("bad size {s:?}: number too large"))?;
    let unit = t[digits..].trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "pib" => 1 << 50,
        u => return Err(format!("bad size {s:?}: unknown unit {u:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// `1.5 GiB`-style display of a byte count.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `1d 2h`-style display of seconds (at most two units).
pub fn format_secs(secs: i64) -> String {
    if secs < 0 {
        return "unlimited".into();
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n != 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if shown.is_empty() {
        "0s".into()
    } else {
        shown.join(" ")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds.
pub fn format_utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("60", 60_000),
            ("60s", 60_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("1s500ms", 1_500),
            ("2d", 172_800_000),
            ("1w", 604_800_000),
            ("10 m", 600_000),
            (" 1h 30m ", 5_400_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for bad in [
            "",
            "s",
            "1x",
            "1.5s",
            "-1s",
            "1h30",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_seconds("10m"), Ok(600));
        assert!(parse_seconds("10ms").is_err());
    }

    #[test]
    fn sizes() {
        for (s, n) in [
            ("0", 0),
            ("1024", 1024),
            ("1KiB", 1024),
            ("10GiB", 10 << 30),
            ("500MB", 500_000_000),
            ("2 gib", 2 << 30),
            ("3k", 3000),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for bad in ["", "GiB", "1.5GiB", "1XB", "-1", "99999999999PiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        // Every spelling the metadata manager accepted before sharing this.
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1B"), Ok(1));
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn config_fields() {
        #[derive(Deserialize)]
        struct Cfg {
            a: ConfigDuration,
            #[serde(deserialize_with = "deserialize_duration")]
            b: Duration,
            #[serde(deserialize_with = "deserialize_seconds")]
            c: u64,
            #[serde(deserialize_with = "deserialize_size")]
            d: u64,
            #[serde(default, deserialize_with = "deserialize_limit")]
            e: Option<u64>,
        }
        let cfg: Cfg = toml::from_str("a = 5\nb = \"250ms\"\nc = \"1h\"\nd = \"1KiB\"\n").unwrap();
        assert_eq!(cfg.e, None);
        for (text, want) in [
            ("7", Some(7)),
            ("\"2MiB\"", Some(2 << 20)),
            ("\"Unlimited\"", None),
        ] {
            let cfg: Cfg =
                toml::from_str(&format!("a = 5\nb = 1\nc = 1\nd = 1\ne = {text}\n")).unwrap();
            assert_eq!(cfg.e, want, "{text}");
        }
        let e = toml::from_str::<Cfg>("a = 5\nb = 1\nc = 1\nd = 1\ne = \"none\"\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("or \"unlimited\""), "{e}");
        assert_eq!(cfg.a, ConfigDuration(Duration::from_secs(5)));
        assert_eq!(cfg.b, Duration::from_millis(250));
        assert_eq!(cfg.c, 3600);
        assert_eq!(cfg.d, 1024);
        let e = toml::from_str::<Cfg>("a = \"5x\"\nb = 1\nc = 1\nd = 1\n")
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown unit \"x\""), "{e}");
    }

    #[test]
    fn display() {
        assert_eq!(format_secs(86_400 + 7_200 + 5), "1d 2h");
        assert_eq!(format_secs(59), "59s");
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(-1), "unlimited");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
