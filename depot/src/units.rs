//! Human sizes (`4GiB`, `100MB`, `512`) and durations (`1d`, `90m`, `30s`, `3600`).

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer};

/// A byte count written the way operators write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration in whole seconds written the way operators write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub u64);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

fn split_number(s: &str) -> Result<(u64, &str), UnitError> {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return Err(UnitError(format!("{s:?} does not start with a number")));
    }
    let n = s[..end]
        .parse::<u64>()
        .map_err(|_| UnitError(format!("{s:?} is too large")))?;
    Ok((n, s[end..].trim()))
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<ByteSize, UnitError> {
        let (n, unit) = split_number(s)?;
        let mult: u64 = match unit {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => return Err(UnitError(format!("unknown size unit {other:?} in {s:?}"))),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| UnitError(format!("{s:?} is too large")))
    }
}

impl FromStr for Seconds {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Seconds, UnitError> {
        let (n, unit) = split_number(s)?;
        let mult: u64 = match unit {
            "" | "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            other => {
                return Err(UnitError(format!(
                    "unknown duration unit {other:?} in {s:?}"
                )))
            }
        };
        n.checked_mul(mult)
            .filter(|v| *v <= i64::MAX as u64)
            .map(Seconds)
            .ok_or_else(|| UnitError(format!("{s:?} is too large")))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Seconds {
    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

/// Accepts either a TOML string with a unit or a bare integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Seconds(n)),
            Raw::Text(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("4GiB".parse::<ByteSize>().unwrap(), ByteSize(4 << 30));
        assert_eq!("100MB".parse::<ByteSize>().unwrap(), ByteSize(100_000_000));
        assert_eq!("512".parse::<ByteSize>().unwrap(), ByteSize(512));
        assert_eq!("1 MiB".parse::<ByteSize>().unwrap(), ByteSize(1 << 20));
        assert!("4XB".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!("1d".parse::<Seconds>().unwrap(), Seconds(86_400));
        assert_eq!("90m".parse::<Seconds>().unwrap(), Seconds(5_400));
        assert_eq!("3600".parse::<Seconds>().unwrap(), Seconds(3_600));
        assert!("1y".parse::<Seconds>().is_err());
    }
}
