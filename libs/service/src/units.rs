//! The one grammar of sizes and durations in every configuration file and on
//! every command line of the stack (daemons and `lors`), their serde
//! deserializers, and their display. The grammar is documented for users
//! in docs/units.md; keep the two together.
//!
//! Sizes: a number (`512`, `1.5`), then optionally a unit, case ignored:
//! `B`; `K`, `M`, `G`, `T`, `P` and `KiB` ... `PiB` are powers of **1024**
//! (the single letters as in LoRS 0.82's `.xndrc` and `lors_upload -b 2M`,
//! which wrote 2,097,152-byte blocks); `KB`, `MB`, `GB`, `TB`, `PB` are
//! powers of 1000. A fraction must come to whole bytes (`1.5K` = 1536).
//!
//! Durations: a plain number is seconds (LoRS's default); otherwise one or
//! more numbers each with a unit, case ignored: `ms`, `s`, `m` or `min`,
//! `h`, `d`, `w` (`90m`, `1h30m`, `1d 12h`, `3M` = 3 minutes as in LoRS). A
//! fraction must come to whole milliseconds (`1.5h`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a size or duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub String);

/// A number as written: its integer part and its decimal fraction (digits
/// after the point, as a numerator over 10^len).
struct Number {
    int: u128,
    frac: u128,
    frac_scale: u128,
}

impl Number {
    /// `value * unit`, if that is a whole number.
    fn times(&self, unit: u128) -> Option<u128> {
        let whole = self.int.checked_mul(unit)?;
        let part = self.frac.checked_mul(unit)?;
        if part % self.frac_scale != 0 {
            return None;
        }
        whole.checked_add(part / self.frac_scale)
    }
}

/// Splits a leading number (`12`, `1.5`) off `s`, blanks after it skipped.
fn number<'a>(s: &'a str, what: &str, whole: &str) -> Result<(Number, &'a str), UnitError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(UnitError(format!(
            "bad {what} {whole:?}: expected a number{}",
            if what == "size" {
                ", e.g. 10GiB"
            } else {
                ", e.g. 3600, 90m or 1d"
            }
        )));
    }
    let too_large = || UnitError(format!("bad {what} {whole:?}: number too large"));
    let int: u128 = s[..digits].parse().map_err(|_| too_large())?;
    let mut rest = &s[digits..];
    let (mut frac, mut frac_scale) = (0u128, 1u128);
    if let Some(after) = rest.strip_prefix('.') {
        let n = after.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 18 {
            return Err(UnitError(format!(
                "bad {what} {whole:?}: expected digits after the point"
            )));
        }
        frac = after[..n].parse().map_err(|_| too_large())?;
        frac_scale = 10u128.pow(n as u32);
        rest = &after[n..];
    }
    if int > u128::from(u64::MAX) {
        return Err(too_large());
    }
    Ok((
        Number {
            int,
            frac,
            frac_scale,
        },
        rest.trim_start(),
    ))
}

/// Bytes per unit of a size, `None` for an unknown unit.
fn size_unit(unit: &str) -> Option<u128> {
    let pow = |base: u128, n: u32| base.pow(n);
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => pow(1024, 1),
        "m" | "mib" => pow(1024, 2),
        "g" | "gib" => pow(1024, 3),
        "t" | "tib" => pow(1024, 4),
        "p" | "pib" => pow(1024, 5),
        "kb" => pow(1000, 1),
        "mb" => pow(1000, 2),
        "gb" => pow(1000, 3),
        "tb" => pow(1000, 4),
        "pb" => pow(1000, 5),
        _ => return None,
    })
}

/// Milliseconds per unit of a duration, `None` for an unknown unit.
fn duration_unit(unit: &str) -> Option<u128> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    })
}

/// Parses a size in bytes (see the module documentation).
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_checked(s).map_err(|e| e.0)
}

fn parse_size_checked(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let (n, unit) = number(t, "size", s)?;
    let unit = unit.trim_end();
    let mult = size_unit(unit)
        .ok_or_else(|| UnitError(format!("bad size {s:?}: unknown unit {unit:?}")))?;
    let bytes = n.times(mult).ok_or_else(|| {
        UnitError(if n.frac == 0 {
            format!("size {s:?} is too large")
        } else {
            format!("bad size {s:?}: not a whole number of bytes")
        })
    })?;
    u64::try_from(bytes).map_err(|_| UnitError(format!("size {s:?} is too large")))
}

/// Parses a duration (see the module documentation): a plain number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_checked(s).map_err(|e| e.0)
}

fn parse_duration_checked(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError("empty duration".into()));
    }
    let mut total_ms: u128 = 0;
    let mut rest = t;
    let mut first = true;
    while !rest.is_empty() {
        let (n, after) = number(rest, "duration", s)?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &after[..unit_len];
        let unit_ms = match (unit, first && after.is_empty()) {
            // A plain number: seconds.
            ("", true) => 1_000,
            ("", false) => {
                return Err(UnitError(format!(
                    "bad duration {s:?}: a number without a unit"
                )))
            }
            (u, _) => duration_unit(u)
                .ok_or_else(|| UnitError(format!("bad duration {s:?}: unknown unit {u:?}")))?,
        };
        let ms = n.times(unit_ms).ok_or_else(|| {
            UnitError(format!(
                "bad duration {s:?}: too long or not a whole number of milliseconds"
            ))
        })?;
        total_ms = total_ms
            .checked_add(ms)
            .filter(|v| *v <= u128::from(u64::MAX))
            .ok_or_else(|| UnitError(format!("duration {s:?} is too long")))?;
        rest = after[unit_len..].trim_start();
        first = false;
    }
    let ms =
        u64::try_from(total_ms).map_err(|_| UnitError(format!("duration {s:?} is too long")))?;
    Ok(Duration::from_millis(ms))
}

/// Parses a duration in whole seconds (sub-second parts are refused), at
/// most `i64::MAX` (it is added to Unix times).
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    parse_seconds_checked(s).map_err(|e| e.0)
}

fn parse_seconds_checked(s: &str) -> Result<u64, UnitError> {
    let d = parse_duration_checked(s)?;
    if d.subsec_nanos() != 0 {
        return Err(UnitError(format!("{s:?}: give whole seconds")));
    }
    if d.as_secs() > i64::MAX as u64 {
        return Err(UnitError(format!("duration {s:?} is too long")));
    }
    Ok(d.as_secs())
}

/// A byte count of a configuration or command line: an integer or a
/// string for [`parse_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<ByteSize, UnitError> {
        parse_size_checked(s).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A length of time in whole seconds: an integer or a string for
/// [`parse_seconds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seconds(pub u64);

impl Seconds {
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// Seconds as an `i64` (saturating), to add to Unix times.
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl FromStr for Seconds {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Seconds, UnitError> {
        parse_seconds_checked(s).map(Seconds)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// A length of time of a configuration, to the millisecond: an integer
/// number of seconds or a string for [`parse_duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ConfigDuration, D::Error> {
        deserialize_duration(d).map(ConfigDuration)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        deserialize_size(d).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        deserialize_seconds(d).map(Seconds)
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
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Duration::from_secs(n)),
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

/// `deserialize_with` for whole seconds: an integer or a string for
/// [`parse_seconds`].
pub fn deserialize_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => parse_seconds(&s).map_err(serde::de::Error::custom),
    }
}

/// `deserialize_with` for a byte count: an integer or a string for
/// [`parse_size`].
pub fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// `deserialize_with` for a limit: an integer, a size string for
/// [`parse_size`], or `"unlimited"` (`None`).
pub fn deserialize_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Some(n)),
        Raw::Text(s) if s.trim().eq_ignore_ascii_case("unlimited") => Ok(None),
        Raw::Text(s) => parse_size(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e} (or \"unlimited\")"))),
    }
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

/// The civil date and time (UTC) of Unix seconds, by the `time` crate;
/// `None` outside the years -9999 to 9999.
fn civil(t: i64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t).ok()
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds (a time outside the years
/// -9999 to 9999 prints as `@<seconds> UTC`).
pub fn format_utc(t: i64) -> String {
    match civil(t) {
        Some(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        None => format!("@{t} UTC"),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339) of Unix seconds (a time outside the
/// years -9999 to 9999 prints as `@<seconds>`).
pub fn format_rfc3339(t: i64) -> String {
    match civil(t) {
        Some(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        None => format!("@{t}"),
    }
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
            ("90min", 5_400_000),
            // LoRS 0.82 (`strtotimeout`): one unit, either case, and
            // fractions.
            ("3M", 180_000),
            ("1D", 86_400_000),
            ("600S", 600_000),
            ("1.5h", 5_400_000),
            ("0.5s", 500),
            ("1d12h", 129_600_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for bad in [
            "",
            "s",
            "1x",
            "1y",
            "-1s",
            "1h30",
            "1.s",
            "0.0001s",
            "99999999999999999999d",
            "1h 2",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_seconds("10m"), Ok(600));
        assert_eq!(parse_seconds("1.5m"), Ok(90));
        assert!(parse_seconds("10ms").is_err());
        assert!(parse_seconds("1.5s").is_err());
        assert_eq!("1d".parse::<Seconds>(), Ok(Seconds(86_400)));
        assert_eq!("90m".parse::<Seconds>(), Ok(Seconds(5_400)));
        assert!("1y".parse::<Seconds>().is_err());
        assert!(format!("{}", "1x".parse::<Seconds>().unwrap_err()).contains("unknown unit"));
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
            ("1B", 1),
            ("16MiB", 16 << 20),
            ("100kB", 100_000),
            // What the depot accepted before sharing this.
            ("4GiB", 4 << 30),
            ("100MB", 100_000_000),
            ("512", 512),
            ("1 MiB", 1 << 20),
            // LoRS 0.82 (`strtobytes`, `.xndrc` DATA_BLOCKSIZE 5M): single
            // letters are powers of 1024, either case.
            ("1K", 1024),
            ("3k", 3072),
            ("5M", 5 << 20),
            ("2m", 2 << 20),
            ("1G", 1 << 30),
            ("1.5K", 1536),
            ("0.5MiB", 512 << 10),
            ("1.5GB", 1_500_000_000),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(n)), "{s}");
        }
        for bad in [
            "",
            "GiB",
            "1XB",
            "4XB",
            "-1",
            "99999999999PiB",
            "99999999999TiB",
            "1.1K",
            "1.",
            ".5K",
            "1 2",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
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

        #[derive(Deserialize)]
        struct Typed {
            size: ByteSize,
            secs: Seconds,
        }
        let t: Typed = toml::from_str("size = \"4G\"\nsecs = \"1h30m\"\n").unwrap();
        assert_eq!((t.size, t.secs), (ByteSize(4 << 30), Seconds(5_400)));
        let t: Typed = toml::from_str("size = 7\nsecs = 9\n").unwrap();
        assert_eq!((t.size, t.secs), (ByteSize(7), Seconds(9)));
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
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(format_utc(i64::MAX), format!("@{} UTC", i64::MAX));
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
