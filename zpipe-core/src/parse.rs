//! Parsing of the values every tool takes: sizes, rates and durations.
//!
//! Units follow pv and mbuffer: `K`, `M`, `G`, `T`, `P` (and `KiB`…`PiB`)
//! are powers of 1024; `KB`, `MB`, … are powers of 1000, as in dd. Rates are
//! sizes per second (an optional `/s`), or bits per second with `kbit`,
//! `Mbit`, `Gbit` (powers of 1000, as network links are sold). Durations take
//! `ms`, `s`, `m`, `h`, `d` and may be combined (`1h30m`); a bare number is
//! seconds. The functions return a plain message; used as clap value parsers,
//! clap adds the flag's name, so the error line names the flag.

use std::time::Duration;

/// Largest value accepted for a size: 2^60 bytes (an exbibyte).
pub const MAX_SIZE: u64 = 1 << 60;

fn split_number(s: &str) -> Result<(f64, &str), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let num: String = num.chars().filter(|&c| c != '_').collect();
    if num.is_empty() {
        return Err(format!("'{s}' does not start with a number"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a number with an optional unit"))?;
    if !value.is_finite() {
        return Err(format!("'{s}' is not a finite number"));
    }
    Ok((value, unit.trim()))
}

fn byte_multiplier(unit: &str) -> Option<f64> {
    let u = unit.to_ascii_lowercase();
    let m = match u.as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "p" | "pib" => 1024f64.powi(5),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "pb" => 1e15,
        _ => return None,
    };
    Some(m)
}

fn to_bytes(value: f64, mult: f64, original: &str) -> Result<u64, String> {
    let bytes = (value * mult).round();
    if bytes > MAX_SIZE as f64 {
        return Err(format!("'{original}' is larger than 2^60 bytes"));
    }
    Ok(bytes as u64)
}

/// Parses a size such as `4096`, `512K`, `4MiB`, `1.5G` or `10MB` into bytes.
pub fn size(s: &str) -> Result<u64, String> {
    let (value, unit) = split_number(s)?;
    let mult = byte_multiplier(unit).ok_or_else(|| {
        format!("unknown size unit '{unit}' in '{s}' (use K, M, G, T, KiB, MB, ...)")
    })?;
    to_bytes(value, mult, s)
}

/// Parses a size that must be at least one byte.
pub fn nonzero_size(s: &str) -> Result<u64, String> {
    match size(s)? {
        0 => Err(format!("'{s}' must be larger than zero")),
        n => Ok(n),
    }
}

/// Parses a rate in bytes per second: `10M`, `10MiB/s`, `1.5G/s`, `100Mbit`.
pub fn rate(s: &str) -> Result<u64, String> {
    let (value, unit) = split_number(s)?;
    let unit = unit.strip_suffix("/s").unwrap_or(unit);
    let unit = match unit.strip_suffix("bps") {
        Some(prefix) => format!("{prefix}bit"),
        None => unit.to_string(),
    };
    let lower = unit.to_ascii_lowercase();
    let bits = match lower.as_str() {
        "bit" => Some(1.0),
        "kbit" => Some(1e3),
        "mbit" => Some(1e6),
        "gbit" => Some(1e9),
        "tbit" => Some(1e12),
        _ => None,
    };
    let bytes = match bits {
        Some(b) => to_bytes(value, b / 8.0, s)?,
        None => {
            let mult = byte_multiplier(&unit).ok_or_else(|| {
                format!("unknown rate unit '{unit}' in '{s}' (use 10M, 10MiB/s, 100Mbit, ...)")
            })?;
            to_bytes(value, mult, s)?
        }
    };
    if bytes == 0 {
        return Err(format!("rate '{s}' must be at least 1 byte per second"));
    }
    Ok(bytes)
}

/// Parses a duration: `30` (seconds), `30s`, `5m`, `2h`, `1d`, `250ms`, `1h30m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let (value, tail) = split_number(rest)
            .map_err(|_| format!("'{s}' is not a duration (use 30s, 5m, 2h, 1d, 250ms)"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let secs = match unit.trim() {
            "" | "s" | "sec" | "secs" => 1.0,
            "ms" => 1e-3,
            "m" | "min" | "mins" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            other => {
                return Err(format!(
                    "unknown duration unit '{other}' in '{s}' (use ms, s, m, h, d)"
                ))
            }
        };
        total += value * secs;
        rest = next.trim_start();
    }
    if total > 1e10 {
        return Err(format!("duration '{s}' is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a percentage `0`..=`100` (an optional `%` suffix).
pub fn percent(s: &str) -> Result<u8, String> {
    let t = s.trim().trim_end_matches('%');
    match t.parse::<u8>() {
        Ok(v) if v <= 100 => Ok(v),
        _ => Err(format!("'{s}' is not a percentage from 0 to 100")),
    }
}

/// A byte count scaled to the largest binary unit that keeps it ≥ 1:
/// `(1.5, "GiB")`; plain bytes stay `(n, "B")`.
pub fn scale_bytes(n: u64) -> (f64, &'static str) {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    (v, UNITS[i])
}

/// Formats a byte count for humans with binary units (`1.50 GiB`).
pub fn human_bytes(n: u64) -> String {
    match scale_bytes(n) {
        (_, "B") => format!("{n} B"),
        (v, unit) => format!("{v:.2} {unit}"),
    }
}

/// Formats a duration for humans as `H:MM:SS`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("512K"), Ok(512 * 1024));
        assert_eq!(size("4MiB"), Ok(4 << 20));
        assert_eq!(size("1.5G"), Ok(3 << 29));
        assert_eq!(size("10MB"), Ok(10_000_000));
        assert_eq!(size("0"), Ok(0));
        assert!(size("abc").is_err());
        assert!(size("12Q").is_err());
        assert!(size("").is_err());
        assert!(size("2E").is_err());
        assert!(size("2048P").is_err());
        assert!(nonzero_size("0").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(rate("10M"), Ok(10 << 20));
        assert_eq!(rate("10MiB/s"), Ok(10 << 20));
        assert_eq!(rate("100Mbit"), Ok(12_500_000));
        assert_eq!(rate("100Mbps"), Ok(12_500_000));
        assert_eq!(rate("1Gbit/s"), Ok(125_000_000));
        assert!(rate("abc").is_err());
        assert!(rate("0").is_err());
        assert!(rate("5 furlongs").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(duration("soon").is_err());
        assert!(duration("5y").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn percents() {
        assert_eq!(percent("80"), Ok(80));
        assert_eq!(percent("80%"), Ok(80));
        assert!(percent("101").is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.50 GiB");
        assert_eq!(human_duration(Duration::from_secs(3723)), "1:02:03");
    }
}
