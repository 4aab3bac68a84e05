//! The meter's flags ([`MeterArgs`], long names only, for wrappers to
//! flatten), the pv-style short-flag layer of the `zpipe-meter` binary
//! ([`with_pv_short_flags`]) and the resolved [`MeterConfig`].
//!
//! Why two layers: the wrappers pass `-i -I -w -c -L -e -p -R -t -s -F -u
//! -d -o -x` through to `zfs`, so the shared flags cannot claim short
//! letters. `MeterArgs` therefore defines long names only; the
//! `zpipe-meter` binary adds `-s -L -q -n -N -B -i` (and `--name`) on top of
//! the same args with `Command::mut_arg`, so the ids, parsers and help text
//! stay one definition and `MeterArgs::from_arg_matches` works for both.

use std::path::{Path, PathBuf};
use std::time::Duration;
use zpipe_core::parse;

use crate::schedule::{self, Schedule};

/// Largest believable size estimate: beyond 2^60 bytes it is the known
/// OpenZFS `send -nvP` overflow, and means "unknown".
pub const ABSURD_SIZE: u64 = parse::MAX_SIZE;
/// Progress refresh on a terminal when `--interval` is not given.
pub const TTY_INTERVAL: Duration = Duration::from_millis(500);
/// Log-line interval when stderr is not a terminal and `--interval` is not given.
pub const LOG_INTERVAL: Duration = Duration::from_secs(30);
/// `--numeric` interval when `--interval` is not given (as pv).
pub const NUMERIC_INTERVAL: Duration = Duration::from_secs(1);
/// Smallest `--buffer`: two blocks, so reading and writing overlap.
pub const MIN_BUFFER_BLOCKS: usize = 2;

/// The shared meter flags, long names only (see the module comment).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MeterArgs {
    /// Expected total size (e.g. 12G), for percentage and ETA. 0, an empty
    /// value or a number above 2^60 (a broken estimate) mean unknown.
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub size: Option<u64>,

    /// Read the expected size from a file: a plain number, or `zfs send
    /// -nvP` output (its `size` line). A missing, zero or absurd (> 2^60)
    /// estimate means "unknown": no ETA is shown.
    #[arg(long, value_name = "FILE", conflicts_with = "size")]
    pub size_file: Option<PathBuf>,

    /// Limit the transfer rate (bytes/s: 10M, 50MiB/s, 100Mbit).
    #[arg(long, value_name = "RATE", value_parser = parse::rate)]
    pub limit: Option<u64>,

    /// Different limits by local time of day: "08:00-23:00=5M,23:00-08:00=50M".
    /// Windows may wrap midnight; the first match wins; outside all windows
    /// --limit applies (or no limit). RATE may be `unlimited`.
    #[arg(long, value_name = "WINDOWS", value_parser = schedule::parse_schedule)]
    pub limit_schedule: Option<Schedule>,

    /// Read limit windows (and optionally one bare default RATE) from FILE;
    /// re-read on SIGUSR2, so a running transfer can be re-throttled. Its
    /// windows replace --limit-schedule, its default replaces --limit.
    #[arg(long, value_name = "FILE")]
    pub limit_file: Option<PathBuf>,

    /// Hold up to SIZE bytes in memory between a reader and a writer thread
    /// (as mbuffer -m), so a bursty producer or consumer does not stall the other.
    #[arg(long, value_name = "SIZE", value_parser = parse::nonzero_size)]
    pub buffer: Option<u64>,

    /// With --buffer: start writing only once the buffer is PCT full (or input
    /// ended), and again each time it ran empty (as mbuffer -P).
    #[arg(long, value_name = "PCT", value_parser = parse::percent, requires = "buffer")]
    pub fill: Option<u8>,

    /// Fail (exit 3) when no byte moves for DUR (30s, 5m), naming the side
    /// that stalled: no input, or downstream not reading.
    #[arg(long, value_name = "DUR", value_parser = parse::duration)]
    pub stall_timeout: Option<Duration>,

    /// Name shown in progress and log lines (pv -N).
    #[arg(long = "progress-name", value_name = "NAME")]
    pub progress_name: Option<String>,

    /// No progress and no summary (errors still print).
    #[arg(long)]
    pub quiet: bool,

    /// Print integer percentages, one per line (bytes when the size is
    /// unknown), for dialog --gauge (pv -n).
    #[arg(long, conflicts_with = "quiet")]
    pub numeric: bool,

    /// Time between progress updates [default: 0.5s on a terminal, 30s for
    /// log lines, 1s with --numeric].
    #[arg(long, value_name = "DUR", value_parser = parse::duration)]
    pub interval: Option<Duration>,

    /// Write final statistics as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Never use splice(2); copy through a buffer (for comparisons).
    #[arg(long, hide = true)]
    pub no_splice: bool,
}

/// Adds the pv/mbuffer short flags (-s -L -q -n -N -B -i) and `--name` to a
/// command that flattens [`MeterArgs`]. Only `zpipe-meter` itself uses this.
pub fn with_pv_short_flags(cmd: clap::Command) -> clap::Command {
    cmd.mut_arg("size", |a| a.short('s'))
        .mut_arg("limit", |a| a.short('L'))
        .mut_arg("quiet", |a| a.short('q'))
        .mut_arg("numeric", |a| a.short('n'))
        .mut_arg("progress_name", |a| {
            a.short('N').long("name").visible_alias("progress-name")
        })
        .mut_arg("buffer", |a| a.short('B'))
        .mut_arg("interval", |a| a.short('i'))
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live line on a terminal, periodic log lines otherwise.
    #[default]
    Auto,
    /// Nothing but errors (and SIGUSR1 status lines, which are asked for).
    Quiet,
    /// Integer percentages one per line (pv -n).
    Numeric,
}

/// The resolved meter settings.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// Tool name used in log lines and errors.
    pub tool: String,
    /// Name shown in progress lines.
    pub name: Option<String>,
    /// Expected total size; `None` is unknown.
    pub size: Option<u64>,
    /// Default limit in bytes/s outside schedule windows; `None` is unlimited.
    pub limit: Option<u64>,
    /// Time-of-day limit windows.
    pub schedule: Schedule,
    /// File re-read on SIGUSR2 for the schedule.
    pub limit_file: Option<PathBuf>,
    /// Memory buffer size in bytes (passthrough only); `None` is no buffer.
    pub buffer: Option<u64>,
    /// Fill level (percent) the buffer reaches before writing starts.
    pub fill: u8,
    /// Stall watchdog timeout.
    pub stall_timeout: Option<Duration>,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// Time between progress updates; `None` picks the mode's default.
    pub interval: Option<Duration>,
    /// Where to write the JSON statistics.
    pub json: Option<PathBuf>,
    /// Never splice.
    pub no_splice: bool,
    /// Size of one buffer block.
    pub block_size: usize,
    /// Pipe capacity to ask for on pipe ends.
    pub pipe_size: usize,
    /// Handle SIGUSR1 (status line) and SIGUSR2 (re-read --limit-file).
    pub signals: bool,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            tool: "zpipe-meter".to_string(),
            name: None,
            size: None,
            limit: None,
            schedule: Schedule::default(),
            limit_file: None,
            buffer: None,
            fill: 0,
            stall_timeout: None,
            progress: ProgressMode::Auto,
            interval: None,
            json: None,
            no_splice: false,
            block_size: zpipe_core::DEFAULT_BLOCK_SIZE,
            pipe_size: zpipe_core::fdio::DEFAULT_PIPE_SIZE,
            signals: true,
        }
    }
}

impl MeterConfig {
    /// Number of pooled blocks a `--buffer` of this size uses.
    pub fn buffer_blocks(&self) -> Option<usize> {
        self.buffer
            .map(|b| (b.div_ceil(self.block_size as u64) as usize).max(MIN_BUFFER_BLOCKS))
    }

    /// The schedule as it is now: the limit file if given, else `--limit-schedule`.
    pub fn load_schedule(&self) -> anyhow::Result<Schedule> {
        match &self.limit_file {
            Some(path) => read_limit_file(path),
            None => Ok(self.schedule.clone()),
        }
    }
}

/// Largest `--size-file` or `--limit-file` read (a number, `zfs send
/// -nvP` lines or a few windows): a bound on what a wrong path such as
/// /dev/zero or a huge file can make us allocate.
pub const MAX_TEXT_FILE: u64 = 16 << 20;

/// Reads the text file a flag names, at most [`MAX_TEXT_FILE`] bytes of
/// UTF-8; anything else is a usage error naming the flag and the path.
pub fn read_text_file(flag: &str, path: &Path) -> anyhow::Result<String> {
    let fail = |why: String| zpipe_core::exit::usage(format!("{flag} {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let bytes = zpipe_core::fdio::read_at_most(file, MAX_TEXT_FILE)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail(format!("larger than {} MiB", MAX_TEXT_FILE >> 20)))?;
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".to_string()))
}

/// Reads and parses a `--limit-file`.
pub fn read_limit_file(path: &Path) -> anyhow::Result<Schedule> {
    let text = read_text_file("--limit-file", path)?;
    schedule::parse_limit_file(&text)
        .map_err(|e| zpipe_core::exit::usage(format!("--limit-file {}: {e}", path.display())))
}

/// Parses `--size`: a size, where an empty value or a plain number above
/// 2^60 (an overflowed `zfs send -nvP` estimate passed on by a script) is
/// "unknown" (0) rather than an error.
pub fn size_arg(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(0);
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = t.parse::<u128>() {
            return Ok(u64::try_from(n).ok().and_then(sane_size).unwrap_or(0));
        }
    }
    parse::size(t)
}

/// A size estimate as the meter uses it: 0 and absurd values are unknown.
pub fn sane_size(n: u64) -> Option<u64> {
    (n != 0 && n <= ABSURD_SIZE).then_some(n)
}

/// Reads a size estimate: a plain number, or `zfs send -nvP` output whose
/// last `size<TAB>N` line counts. Anything unusable is `None` (unknown).
pub fn parse_size_estimate(text: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some("size"), Some(n), None) => found = Some(n),
            (Some(n), None, None) if n.bytes().all(|b| b.is_ascii_digit()) => found = Some(n),
            _ => {}
        }
    }
    // u128 so that an overflowed 2^64-ish estimate parses and is then refused.
    let n: u128 = found?.parse().ok()?;
    u64::try_from(n).ok().and_then(sane_size)
}

impl MeterArgs {
    /// Resolves the flags into a [`MeterConfig`] (reads --size-file and --limit-file).
    pub fn config(&self) -> anyhow::Result<MeterConfig> {
        let size = match (&self.size, &self.size_file) {
            (Some(n), _) => sane_size(*n),
            (None, Some(path)) => parse_size_estimate(&read_text_file("--size-file", path)?),
            (None, None) => None,
        };
        let progress = if self.quiet {
            ProgressMode::Quiet
        } else if self.numeric {
            ProgressMode::Numeric
        } else {
            ProgressMode::Auto
        };
        let cfg = MeterConfig {
            name: self.progress_name.clone(),
            size,
            limit: self.limit,
            schedule: self.limit_schedule.clone().unwrap_or_default(),
            limit_file: self.limit_file.clone(),
            buffer: self.buffer,
            fill: self.fill.unwrap_or(0),
            stall_timeout: self.stall_timeout.filter(|d| !d.is_zero()),
            progress,
            interval: self.interval.filter(|d| !d.is_zero()),
            json: self.json.clone(),
            no_splice: self.no_splice,
            ..MeterConfig::default()
        };
        if cfg.limit_file.is_some() {
            // Fail at start, with exit 1, when the file is unusable.
            cfg.load_schedule()?;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfs_send_nvp_output() {
        let text = "full\tpool/fs@snap\t123456\nsize\t123456\n";
        assert_eq!(parse_size_estimate(text), Some(123456));
        let incr = "incremental\ta\tpool/fs@b\t999\nsize\t999\n";
        assert_eq!(parse_size_estimate(incr), Some(999));
        assert_eq!(parse_size_estimate("4096\n"), Some(4096));
    }

    #[test]
    fn absurd_zero_and_missing_estimates_are_unknown() {
        assert_eq!(parse_size_estimate("size\t0\n"), None);
        assert_eq!(parse_size_estimate("size\t18446744073709551615\n"), None);
        assert_eq!(parse_size_estimate("size\t1152921504606846977\n"), None);
        assert_eq!(parse_size_estimate("size\t99999999999999999999999\n"), None);
        assert_eq!(parse_size_estimate("full\tp@s\t12\n"), None);
        assert_eq!(parse_size_estimate(""), None);
        assert_eq!(parse_size_estimate("size\tabc\n"), None);
        assert_eq!(sane_size(ABSURD_SIZE), Some(ABSURD_SIZE));
        assert_eq!(sane_size(ABSURD_SIZE + 1), None);
    }

    #[test]
    fn short_flags_only_in_the_binary_layer() {
        use clap::{Args, FromArgMatches};
        let wrapper = MeterArgs::augment_args(clap::Command::new("w"));
        assert!(wrapper
            .clone()
            .try_get_matches_from(["w", "-L", "1M"])
            .is_err());
        let m = wrapper
            .try_get_matches_from(["w", "--limit", "1M", "--progress-name", "x"])
            .unwrap();
        let a = MeterArgs::from_arg_matches(&m).unwrap();
        assert_eq!(a.limit, Some(1 << 20));
        assert_eq!(a.progress_name.as_deref(), Some("x"));
        let m = crate::command()
            .try_get_matches_from(["m", "-L", "1M", "-N", "y", "-qs", "5K", "-B", "4M"])
            .unwrap();
        let a = MeterArgs::from_arg_matches(&m).unwrap();
        assert_eq!(a.limit, Some(1 << 20));
        assert_eq!(a.progress_name.as_deref(), Some("y"));
        assert!(a.quiet);
        assert_eq!(a.size, Some(5 << 10));
        assert_eq!(a.buffer, Some(4 << 20));
    }

    #[test]
    fn size_flag_takes_broken_estimates_as_unknown() {
        assert_eq!(size_arg("18446744073709551615"), Ok(0));
        assert_eq!(size_arg("99999999999999999999999999"), Ok(0));
        assert_eq!(size_arg(""), Ok(0));
        assert_eq!(size_arg("12G"), Ok(12 << 30));
        assert!(size_arg("12Q").is_err());
        assert!(size_arg("-5").is_err());
    }

    #[test]
    fn size_zero_is_unknown() {
        let a = MeterArgs {
            size: Some(0),
            ..Default::default()
        };
        assert_eq!(a.config().unwrap().size, None);
    }
}
