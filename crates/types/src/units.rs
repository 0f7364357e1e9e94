//! Quantities as users write them: `10s`, `5m`, `256M`, `50G`, `512MiB`,
//! `500m` cpu. Stored as plain integers (milliseconds, bytes, millicores) so
//! the scheduler does integer arithmetic only.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A duration in milliseconds. Parsed from `250ms`, `10s`, `5m`, `1h`, `1h30m`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// The longest duration anything accepts: 100 years. Every deadline
    /// is `now + duration` in milliseconds since 1970; beyond this a user
    /// means "never" (or mistyped), and sums near `u64::MAX` wrap to the
    /// past in release builds.
    pub const MAX: Millis = Millis(100 * 365 * 86_400_000);

    pub const fn from_secs(s: u64) -> Self {
        Millis(s * 1000)
    }
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
    /// `t + self`, for deadlines: saturates instead of wrapping around to
    /// a time in the past.
    pub fn after(self, t: crate::UnixMillis) -> crate::UnixMillis {
        t.saturating_add(self.0)
    }
    /// A `std` duration in milliseconds, saturating (for deadlines computed
    /// from durations that did not come through [`parse_duration`]).
    pub fn from_std(d: std::time::Duration) -> Millis {
        Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return write!(f, "0s");
        }
        if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Parse a duration such as `10s`, `5m`, `1h30m`, `250ms`. A bare number is
/// refused: `10` could mean seconds or milliseconds, and guessing is worse
/// than asking.
pub fn parse_duration(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. 10s, 5m or 1h".into());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}; write e.g. 10s, 5m or 1h"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_large(s))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "duration {s:?} has no unit; write e.g. {n}s or {n}ms"
                ));
            }
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?}; use ms, s, m, h or d"
                ));
            }
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| too_large(s))?;
    }
    if total > Millis::MAX.0 {
        return Err(too_large(s));
    }
    Ok(Millis(total))
}

fn too_large(s: &str) -> String {
    format!("duration {s:?} is too large: at most 100 years (36500d)")
}

/// A size in bytes, parsed from `256M`, `50G`, `512MiB`, `1024` (bytes).
/// `M`/`G` follow Kubernetes and are decimal; `Mi`/`MiB` are binary.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Bytes {
    /// Exact binary or decimal units when they fit (`512MiB`, `256M`),
    /// else one decimal in the largest binary unit (`23.5GiB`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const BINARY: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        const DECIMAL: [(&str, u64); 4] = [
            ("T", 1_000_000_000_000),
            ("G", 1_000_000_000),
            ("M", 1_000_000),
            ("K", 1000),
        ];
        for ((bn, bs), (dn, ds)) in BINARY.iter().zip(DECIMAL.iter()) {
            // Exact, but not as a long run of digits in a small unit.
            if self.0 >= *bs && self.0.is_multiple_of(*bs) && self.0 / bs < 10_000 {
                return write!(f, "{}{}", self.0 / bs, bn);
            }
            if self.0 >= *ds && self.0.is_multiple_of(*ds) && self.0 / ds < 10_000 {
                return write!(f, "{}{}", self.0 / ds, dn);
            }
        }
        for (name, size) in BINARY {
            if self.0 >= size {
                return write!(f, "{:.1}{}", self.0 as f64 / size as f64, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

pub fn parse_size(s: &str) -> Result<Bytes, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size {s:?}; write e.g. 256M, 1G or 512MiB"));
    }
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" | "kB" => 1000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}; use K, M, G, T or Ki, Mi, Gi, Ti"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write e.g. 256M, 1G or 512MiB"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(Bytes(bytes.round() as u64))
}

/// CPU in millicores: `500m` is half a core, `2` or `2.5` are cores.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MilliCpu(pub u64);

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

pub fn parse_cpu(s: &str) -> Result<MilliCpu, String> {
    let t = s.trim();
    if let Some(m) = t.strip_suffix('m') {
        return m
            .parse::<u64>()
            .map(MilliCpu)
            .map_err(|_| format!("invalid cpu {s:?}; write millicores like 500m or cores like 2"));
    }
    let cores: f64 = t
        .parse()
        .map_err(|_| format!("invalid cpu {s:?}; write millicores like 500m or cores like 2"))?;
    if !cores.is_finite() || !(0.0..=1_000_000.0).contains(&cores) {
        return Err(format!("cpu {s:?} is out of range"));
    }
    Ok(MilliCpu((cores * 1000.0).round() as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Millis(10_000)));
        assert_eq!(parse_duration("5m"), Ok(Millis(300_000)));
        assert_eq!(parse_duration("1h30m"), Ok(Millis(5_400_000)));
        assert_eq!(parse_duration("250ms"), Ok(Millis(250)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("10x")
                .unwrap_err()
                .contains("unknown duration unit")
        );
        assert!(parse_duration("").is_err());
        // Up to 100 years; beyond, `now + d` could wrap: refused.
        assert_eq!(parse_duration("36500d"), Ok(Millis::MAX));
        for huge in ["36501d", "213503982334d", "99999999999999999999s"] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("too large: at most 100 years"), "{huge}: {e}");
        }
        assert_eq!(Millis(u64::MAX).after(5), u64::MAX);
        assert_eq!(Millis(10).after(5), 15);
        assert_eq!(Millis(300_000).to_string(), "5m");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(Bytes(256_000_000)));
        assert_eq!(parse_size("50G"), Ok(Bytes(50_000_000_000)));
        assert_eq!(parse_size("512MiB"), Ok(Bytes(512 << 20)));
        assert_eq!(parse_size("1024"), Ok(Bytes(1024)));
        assert_eq!(parse_size("1.5Gi"), Ok(Bytes(3 << 29)));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(Bytes(512 << 20).to_string(), "512MiB");
        assert_eq!(Bytes(256_000_000).to_string(), "256M");
        assert_eq!(Bytes(24_683_656 * 1024).to_string(), "23.5GiB");
        assert_eq!(Bytes(0).to_string(), "0B");
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpu("500m"), Ok(MilliCpu(500)));
        assert_eq!(parse_cpu("2"), Ok(MilliCpu(2000)));
        assert_eq!(parse_cpu("0.25"), Ok(MilliCpu(250)));
        assert!(parse_cpu("lots").is_err());
        assert!(parse_cpu("-1").is_err());
    }
}
