//! What the meter prints: the parseable log line, the terminal line
//! (indicatif), `--numeric` percentages, the final summary, and the JSON
//! statistics.
//!
//! Log line (stderr not a terminal), one per `--interval`, key=value after
//! the prefix, integers in bytes and bytes per second:
//!
//! ```text
//! 2026-11-26T01:02:03Z zpipe-meter[name]: bytes=N rate=R avg=A elapsed=S.S [size=N pct=P [eta=S]|size=N pct=100 over=N] [limit=R] [fill=P]
//! 2026-11-26T01:02:09Z zpipe-meter[name]: status=done bytes=N elapsed=S.S avg=A peak=R stalls=N exit=success
//! ```
//!
//! `[name]` is left out when no name was given. `rate` is the rate over the
//! last few seconds, `avg` the rate since start, `eta` seconds left at the
//! average rate (absent while the average is 0). `pct` never exceeds 100:
//! past the expected size the line says `over=N` (bytes beyond it) instead
//! of an ETA. `fill` is the `--buffer` fill level in percent.

use serde::Serialize;
use std::time::Duration;
use zpipe_core::parse::{human_bytes, human_duration};

/// A snapshot of the meter, the input of every rendering.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bytes passed on so far.
    pub bytes: u64,
    /// Time since start.
    pub elapsed: Duration,
    /// Recent rate in bytes/s.
    pub rate: f64,
    /// Expected size, if known.
    pub size: Option<u64>,
    /// Current limit in bytes/s, if any.
    pub limit: Option<u64>,
    /// Buffer fill in bytes and capacity, with --buffer.
    pub fill: Option<(u64, u64)>,
}

impl Snapshot {
    /// Average rate since start, bytes/s.
    pub fn avg(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s
        } else {
            0.0
        }
    }

    /// Percentage done, capped at 100; `None` when the size is unknown.
    pub fn pct(&self) -> Option<u64> {
        let size = self.size?;
        Some(((self.bytes as u128 * 100 / size as u128) as u64).min(100))
    }

    /// Seconds left at the average rate; `None` when unknown, past the size
    /// or while nothing moved yet.
    pub fn eta(&self) -> Option<u64> {
        let size = self.size?;
        let avg = self.avg();
        if self.bytes > size || avg <= 0.0 {
            return None;
        }
        Some(((size - self.bytes) as f64 / avg).ceil() as u64)
    }

    /// Bytes beyond the expected size, when there are any.
    pub fn over(&self) -> Option<u64> {
        self.size
            .and_then(|s| self.bytes.checked_sub(s))
            .filter(|&o| o > 0)
    }

    /// Buffer fill in percent.
    pub fn fill_pct(&self) -> Option<u64> {
        self.fill
            .map(|(f, cap)| (f as u128 * 100 / cap.max(1) as u128).min(100) as u64)
    }
}

/// `tool[name]` or `tool`; whitespace in the name becomes `_` so the log
/// line still splits on spaces.
pub fn prefix(tool: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => {
            let n: String = n
                .chars()
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect();
            format!("{tool}[{n}]")
        }
        None => tool.to_string(),
    }
}

/// UTC timestamp for log lines.
pub fn timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The key=value part of a progress log line.
pub fn log_fields(s: &Snapshot) -> String {
    let mut line = format!(
        "bytes={} rate={} avg={} elapsed={:.1}",
        s.bytes,
        s.rate.round() as u64,
        s.avg().round() as u64,
        s.elapsed.as_secs_f64()
    );
    if let (Some(size), Some(pct)) = (s.size, s.pct()) {
        line.push_str(&format!(" size={size} pct={pct}"));
        if let Some(over) = s.over() {
            line.push_str(&format!(" over={over}"));
        } else if let Some(eta) = s.eta() {
            line.push_str(&format!(" eta={eta}"));
        }
    }
    if let Some(limit) = s.limit {
        line.push_str(&format!(" limit={limit}"));
    }
    if let Some(fill) = s.fill_pct() {
        line.push_str(&format!(" fill={fill}"));
    }
    line
}

/// A full progress log line.
pub fn log_line(prefix: &str, s: &Snapshot) -> String {
    format!("{} {prefix}: {}", timestamp(), log_fields(s))
}

/// The `--numeric` line: percentage, or bytes when the size is unknown.
pub fn numeric_line(s: &Snapshot) -> String {
    match s.pct() {
        Some(p) => p.to_string(),
        None => s.bytes.to_string(),
    }
}

/// Compact human size for the terminal line (`1.5GiB`).
pub fn short_bytes(n: u64) -> String {
    match zpipe_core::parse::scale_bytes(n) {
        (_, "B") => format!("{n}B"),
        (v, unit) => format!("{v:.1}{unit}"),
    }
}

/// Left part of the terminal line: name, bytes, rates, elapsed.
pub fn tty_left(name: Option<&str>, s: &Snapshot) -> String {
    let mut out = String::new();
    if let Some(n) = name {
        out.push_str(n);
        out.push_str(": ");
    }
    out.push_str(&format!(
        "{} {}/s avg {}/s {}",
        short_bytes(s.bytes),
        short_bytes(s.rate as u64),
        short_bytes(s.avg() as u64),
        human_duration(s.elapsed)
    ));
    if let Some(fill) = s.fill_pct() {
        out.push_str(&format!(" buf {fill}%"));
    }
    if let Some(over) = s.over() {
        out.push_str(&format!(" past size +{}", short_bytes(over)));
    }
    out
}

/// Narrowest bar worth drawing, inside the brackets.
pub const MIN_BAR: usize = 6;
/// Widest bar drawn.
pub const MAX_BAR: usize = 40;

/// The terminal line for a terminal `width` columns wide: [`tty_left`],
/// then with a known size (and not past it) the percentage and ETA, with a
/// bar between them when it fits.
pub fn tty_line(name: Option<&str>, s: &Snapshot, width: usize) -> String {
    let mut line = tty_left(name, s);
    if let (Some(pct), None) = (s.pct(), s.over()) {
        let mut right = format!("{pct:>3}%");
        if let Some(eta) = s.eta() {
            right.push_str(&format!(
                " ETA {}",
                human_duration(Duration::from_secs(eta))
            ));
        }
        // One column spare: writing the last column makes some terminals wrap.
        let room = width.saturating_sub(line.len() + right.len() + 5);
        let bar_width = room.min(MAX_BAR);
        if bar_width >= MIN_BAR {
            let size = s.size.unwrap_or(1).max(1);
            let filled = ((s.bytes.min(size) as u128 * bar_width as u128) / size as u128) as usize;
            let mut bar = "=".repeat(filled);
            if filled < bar_width {
                bar.push('>');
                bar.push_str(&" ".repeat(bar_width - filled - 1));
            }
            line.push_str(&format!(" [{bar}]"));
        }
        line.push(' ');
        line.push_str(&right);
    }
    line
}

/// Final statistics of one run (also the `--json` document).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    /// The progress name, if any.
    pub name: Option<String>,
    /// Bytes passed on.
    pub bytes: u64,
    /// Of those, bytes moved by splice(2) (zero-copy).
    pub spliced_bytes: u64,
    /// Seconds from start to end.
    pub seconds: f64,
    /// Average rate in bytes/s.
    pub average_rate: f64,
    /// Highest rate over any one-second sample, bytes/s.
    pub peak_rate: f64,
    /// Waits on input or output that lasted a second or more.
    pub stalls: u64,
    /// The limit in force at the end (bytes/s), if any.
    pub limit: Option<u64>,
    /// The expected size, if known.
    pub size: Option<u64>,
    /// The --buffer size, if any.
    pub buffer: Option<u64>,
    /// Highest buffer fill seen, bytes.
    pub peak_fill: u64,
    /// Exit kind name: success, io, usage, interrupted, terminated...
    pub exit: String,
    /// Numeric exit code.
    pub exit_code: u8,
    /// Why the run ended, in words (the error line on failure).
    pub reason: String,
}

/// The summary log line.
pub fn summary_log_line(prefix: &str, st: &Stats) -> String {
    format!(
        "{} {prefix}: status={} bytes={} elapsed={:.1} avg={} peak={} stalls={} exit={}",
        timestamp(),
        if st.exit_code == 0 { "done" } else { "stopped" },
        st.bytes,
        st.seconds,
        st.average_rate.round() as u64,
        st.peak_rate.round() as u64,
        st.stalls,
        st.exit
    )
}

/// The summary line for a terminal.
pub fn summary_human(prefix: &str, st: &Stats) -> String {
    format!(
        "{prefix}: {} bytes ({}) in {:.1}s, avg {}/s, peak {}/s{}",
        st.bytes,
        human_bytes(st.bytes),
        st.seconds,
        human_bytes(st.average_rate as u64),
        human_bytes(st.peak_rate as u64),
        if st.exit_code == 0 {
            String::new()
        } else {
            format!(" ({})", st.exit)
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(bytes: u64, size: Option<u64>) -> Snapshot {
        Snapshot {
            bytes,
            elapsed: Duration::from_secs(10),
            rate: 100.0,
            size,
            limit: None,
            fill: None,
        }
    }

    #[test]
    fn log_fields_with_size() {
        let s = snap(1000, Some(4000));
        assert_eq!(
            log_fields(&s),
            "bytes=1000 rate=100 avg=100 elapsed=10.0 size=4000 pct=25 eta=30"
        );
    }

    #[test]
    fn past_the_size_is_capped_and_said() {
        let s = snap(5000, Some(4000));
        assert_eq!(s.pct(), Some(100));
        assert_eq!(s.eta(), None);
        assert!(log_fields(&s).ends_with("size=4000 pct=100 over=1000"));
        assert!(tty_left(None, &s).contains("past size +1000B"));
        assert!(!tty_line(None, &s, 80).contains('%'));
    }

    #[test]
    fn terminal_line_has_bar_percent_and_eta() {
        let line = tty_line(Some("fs"), &snap(1000, Some(4000)), 80);
        assert!(line.starts_with("fs: "), "{line}");
        assert!(line.contains("[======>"), "{line}");
        assert!(line.contains("]  25% ETA 0:00:30"), "{line}");
        assert!(line.len() < 80, "{line}");
        let narrow = tty_line(Some("fs"), &snap(1000, Some(4000)), 40);
        assert!(
            !narrow.contains('[') && narrow.ends_with(" 25% ETA 0:00:30"),
            "{narrow}"
        );
        let none = tty_line(None, &snap(1000, None), 80);
        assert!(!none.contains('[') && !none.contains("ETA"), "{none}");
    }

    #[test]
    fn unknown_size_has_no_eta() {
        let s = snap(5000, None);
        assert_eq!(log_fields(&s), "bytes=5000 rate=100 avg=500 elapsed=10.0");
        assert_eq!(numeric_line(&s), "5000");
    }

    #[test]
    fn names_with_spaces_keep_the_line_splittable() {
        assert_eq!(
            prefix("zpipe-meter", Some("tank/my fs")),
            "zpipe-meter[tank/my_fs]"
        );
        assert_eq!(prefix("zpipe-meter", None), "zpipe-meter");
    }

    #[test]
    fn fill_and_limit_fields() {
        let mut s = snap(0, None);
        s.fill = Some((50, 200));
        s.limit = Some(7);
        assert!(log_fields(&s).ends_with("limit=7 fill=25"));
    }
}
