//! Time-of-day bandwidth limits: `--limit-schedule "08:00-23:00=5M,23:00-08:00=50M"`
//! and the `--limit-file` that holds the same syntax and is re-read on SIGUSR2.
//!
//! A window is `HH:MM-HH:MM=RATE` in local time, start inclusive, end
//! exclusive; a window whose end is before its start wraps midnight
//! (`22:00-06:00`), and equal ends mean the whole day. The first window
//! that matches wins; outside every window the default limit applies
//! (`--limit`, or unlimited). RATE is anything `zpipe_core::parse::rate`
//! takes, or `unlimited`/`none`/`off`.
//!
//! A limit file holds windows and optionally one bare RATE (or
//! `unlimited`), the default outside the windows, which replaces `--limit`.
//! Items are separated by commas, whitespace or newlines; `#` starts a
//! comment that runs to the end of the line.

use std::fmt;

/// Minutes in a day; window bounds are minutes since local midnight.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// One time window with its limit (`None` = unlimited inside the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, minutes after local midnight (inclusive).
    pub start: u16,
    /// End, minutes after local midnight (exclusive); may be ≤ start (wraps).
    pub end: u16,
    /// Bytes per second inside the window; `None` means unlimited.
    pub limit: Option<u64>,
}

impl Window {
    /// True when `minute` (since local midnight) falls inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => minute >= self.start && minute < self.end,
            std::cmp::Ordering::Greater => minute >= self.start || minute < self.end,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let rate = match self.limit {
            Some(r) => r.to_string(),
            None => "unlimited".to_string(),
        };
        write!(f, "{}-{}={}", hm(self.start), hm(self.end), rate)
    }
}

/// A list of windows, plus the default a limit file may set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Windows, first match wins.
    pub windows: Vec<Window>,
    /// Default outside the windows set by a limit file: `Some(None)` is
    /// unlimited, `None` keeps `--limit`.
    pub default: Option<Option<u64>>,
}

impl Schedule {
    /// The limit that applies at `minute` after local midnight, given the
    /// `--limit` default; `None` is unlimited.
    pub fn limit_at(&self, minute: u16, fallback: Option<u64>) -> Option<u64> {
        for w in &self.windows {
            if w.contains(minute) {
                return w.limit;
            }
        }
        match self.default {
            Some(d) => d,
            None => fallback,
        }
    }

    /// True when no window and no default are set.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.default.is_none()
    }
}

fn parse_clock(s: &str) -> Result<u16, String> {
    let (h, m) = match s.split_once(':') {
        Some((h, m)) => (h, m),
        None => (s, "0"),
    };
    let h: u16 = h
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a time of day (use HH:MM)"))?;
    let m: u16 = m
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a time of day (use HH:MM)"))?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(format!("'{s}' is not a time of day from 00:00 to 24:00"));
    }
    Ok((h * 60 + m) % MINUTES_PER_DAY)
}

fn parse_limit(s: &str) -> Result<Option<u64>, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "unlimited" | "none" | "off" => Ok(None),
        _ => zpipe_core::parse::rate(s).map(Some),
    }
}

/// Parses one `HH:MM-HH:MM=RATE` window.
pub fn parse_window(item: &str) -> Result<Window, String> {
    let (span, rate) = item
        .split_once('=')
        .ok_or_else(|| format!("'{item}' is not a window (use HH:MM-HH:MM=RATE)"))?;
    let (start, end) = span
        .split_once('-')
        .ok_or_else(|| format!("'{item}' is not a window (use HH:MM-HH:MM=RATE)"))?;
    Ok(Window {
        start: parse_clock(start)?,
        end: parse_clock(end)?,
        limit: parse_limit(rate)?,
    })
}

/// Parses `--limit-schedule`: comma-separated windows.
pub fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let mut sched = Schedule::default();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        sched.windows.push(parse_window(item)?);
    }
    if sched.windows.is_empty() {
        return Err(format!("'{s}' has no window (use HH:MM-HH:MM=RATE,...)"));
    }
    Ok(sched)
}

/// Parses the text of a `--limit-file`: windows and at most one default.
pub fn parse_limit_file(text: &str) -> Result<Schedule, String> {
    let mut sched = Schedule::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for item in line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|i| !i.is_empty())
        {
            if item.contains('=') {
                sched.windows.push(parse_window(item)?);
            } else {
                if sched.default.is_some() {
                    return Err(format!("more than one default limit ('{item}')"));
                }
                sched.default = Some(parse_limit(item)?);
            }
        }
    }
    Ok(sched)
}

/// Minutes since local midnight now.
pub fn local_minute_now() -> u16 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    (now.hour() * 60 + now.minute()) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn daytime_window() {
        let s = parse_schedule("08:00-23:00=5M").unwrap();
        assert_eq!(s.limit_at(8 * 60, None), Some(5 * M));
        assert_eq!(s.limit_at(22 * 60 + 59, None), Some(5 * M));
        assert_eq!(s.limit_at(23 * 60, None), None);
        assert_eq!(s.limit_at(7 * 60 + 59, Some(M)), Some(M));
    }

    #[test]
    fn window_wraps_midnight() {
        let s = parse_schedule("22:00-06:00=1M, 06:00-22:00=unlimited").unwrap();
        assert_eq!(s.limit_at(23 * 60, None), Some(M));
        assert_eq!(s.limit_at(0, None), Some(M));
        assert_eq!(s.limit_at(5 * 60 + 59, None), Some(M));
        assert_eq!(s.limit_at(6 * 60, Some(7)), None);
        assert_eq!(s.limit_at(21 * 60, Some(7)), None);
    }

    #[test]
    fn end_at_24_and_whole_day() {
        let s = parse_schedule("18-24=2M").unwrap();
        assert_eq!(s.windows[0].end, 0);
        assert_eq!(s.limit_at(23 * 60 + 59, None), Some(2 * M));
        assert_eq!(s.limit_at(17 * 60, None), None);
        let all = parse_schedule("00:00-00:00=3M").unwrap();
        assert_eq!(all.limit_at(12 * 60, None), Some(3 * M));
    }

    #[test]
    fn first_window_wins() {
        let s = parse_schedule("00:00-12:00=1M,06:00-18:00=2M").unwrap();
        assert_eq!(s.limit_at(7 * 60, None), Some(M));
        assert_eq!(s.limit_at(13 * 60, None), Some(2 * M));
    }

    #[test]
    fn bad_schedules_are_rejected() {
        for bad in [
            "",
            "8-23",
            "08:00=5M",
            "25:00-01:00=1M",
            "08:61-09:00=1M",
            "08:00-09:00=abc",
            "08:00-09:00=0",
            "24:30-01:00=1M",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limit_file_with_default_and_comments() {
        let s = parse_limit_file("# night is free\n22:00-06:00=unlimited\n10M # day\n").unwrap();
        assert_eq!(s.windows.len(), 1);
        assert_eq!(s.default, Some(Some(10 * M)));
        assert_eq!(s.limit_at(23 * 60, Some(1)), None);
        assert_eq!(s.limit_at(12 * 60, Some(1)), Some(10 * M));
        let empty = parse_limit_file("# nothing\n").unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.limit_at(0, Some(5)), Some(5));
        assert!(parse_limit_file("1M 2M").is_err());
        assert_eq!(
            parse_limit_file("unlimited").unwrap().limit_at(0, Some(5)),
            None
        );
    }

    #[test]
    fn display_round_trips() {
        let s = parse_schedule("22:30-06:15=1M").unwrap();
        let text = s.windows[0].to_string();
        assert_eq!(parse_window(&text).unwrap(), s.windows[0]);
    }
}
