//! zpipe-meter: progress, rate, ETA, bandwidth limit, big buffer and stall
//! watchdog for pipes (a pv + mbuffer replacement).
//!
//! Code map:
//! - [`config`]: [`MeterArgs`] (long flags, flattened by the wrappers), the
//!   pv short-flag layer of the binary, [`MeterConfig`], size estimates.
//! - [`schedule`]: `--limit-schedule` / `--limit-file` time windows.
//! - [`limiter`]: the token bucket.
//! - `meter`: shared counters, control thread (progress, signals, schedule).
//! - [`report`]: log line, terminal line, summary and [`Stats`] (JSON).
//! - [`passthrough`]: [`run_passthrough`], splice path and `--buffer` threads.
//! - [`stage`]: [`MeterStage`] + [`MeterHandle`] for in-process pipelines.

pub mod config;
pub mod limiter;
mod meter;
pub mod passthrough;
pub mod report;
pub mod schedule;
pub mod stage;

pub use config::{with_pv_short_flags, MeterArgs, MeterConfig, ProgressMode};
pub use meter::ProgressTarget;
pub use passthrough::{run_passthrough, run_passthrough_to};
pub use report::Stats;
pub use stage::{BufferSink, MeterHandle, MeterStage};

use clap::{CommandFactory, FromArgMatches};
use zpipe_core::Exit;

const LONG_ABOUT: &str = "\
Copies standard input to standard output and meters it: bytes, current and \
average rate, elapsed time and, with a known size, a bar, percentage and ETA. \
It replaces pv and mbuffer in zfs send | zfs recv pipelines: the options \
-s, -L, -q, -n, -N, -i mean what they mean in pv, and -B is mbuffer's -m.

Without -B the data never enters user space: it moves with splice(2) between \
pipes (pipes are grown to 1 MiB), and counting, the rate limit and the stall \
watchdog work on that zero-copy path. With -B a reader and a writer thread \
share a memory buffer of that size, as mbuffer does.

Progress goes to stderr only. On a terminal it is one live line. Otherwise \
(cron logs) it is one parseable line every --interval (default 30s):

  2026-11-26T01:02:03Z zpipe-meter[NAME]: bytes=N rate=R avg=A elapsed=S.S \
[size=N pct=P eta=S] [limit=R] [fill=P]

with integers in bytes and bytes per second, elapsed in seconds, eta in \
seconds at the average rate, pct capped at 100 (past the size: over=N bytes \
instead of eta), fill the buffer level in percent; [NAME] only with -N. The \
last line is a summary: status=done bytes=N elapsed=S avg=R peak=R stalls=N \
exit=success. On a terminal the summary is one human-readable line.

Sizes take K, M, G, T (powers of 1024, also KiB...) and KB, MB, GB (powers of \
1000); rates are sizes per second or 100Mbit-style bit rates; durations take \
ms, s, m, h, d (1h30m).";

const AFTER_HELP: &str = "\
Size and ETA: -s/--size, or --size-file with a number or `zfs send -nvP` \
output (its `size` line). A size of 0, a file without a size line, or an \
estimate above 2^60 bytes (a known OpenZFS overflow) means the size is \
unknown and no ETA is shown. Past the expected size the transfer goes on and \
the line says so; the percentage never exceeds 100.

Rate limit: -L is a token bucket refilled at least every 100 ms whose burst \
is at most 100 ms worth of data. --limit-schedule 'HH:MM-HH:MM=RATE,...' \
applies other limits in local-time windows (windows may wrap midnight, the \
first match wins, RATE may be `unlimited`; outside all windows -L applies). \
--limit-file holds the same windows (comma, space or newline separated, # \
comments) plus optionally one bare RATE that replaces -L; it is read at start \
and again on SIGUSR2.

Signals: SIGUSR1 prints the current status line at once (as dd does, even \
with -q). SIGUSR2 re-reads --limit-file. SIGINT and SIGTERM stop the transfer \
(exit 130 and 143) after a summary line.

Exit status: 0 all input was copied; 1 bad flag or value (the line names \
the flag); 3 input or output failed, including a closed stdout (EPIPE) and \
a stall detected by --stall-timeout (the line says whether there was no \
input or the downstream was not reading); 130/143 SIGINT/SIGTERM. Errors are \
one line on stderr starting with `zpipe-meter:`.

--json FILE writes: name, bytes, spliced_bytes (bytes moved by splice), \
seconds, average_rate, peak_rate (best one-second sample), stalls (waits of a \
second or more), limit, size, buffer, peak_fill, exit, exit_code, reason.

Examples:
  zfs send -nvP pool/fs@snap > est; zfs send pool/fs@snap | zpipe-meter --size-file est -N fs | ...
  zfs send ... | zpipe-meter -q -L 50M --limit-schedule 23:00-07:00=unlimited --stall-timeout 10m | ssh ...
  ssh host zfs send ... | zpipe-meter -B 1G --fill 80 | zfs recv -s pool/fs";

/// The top-level arguments of `zpipe-meter`: the shared meter flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "zpipe-meter",
    version,
    about = "Progress, rate, ETA, bandwidth limit, big buffer and stall watchdog for pipes",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The meter flags.
    #[command(flatten)]
    pub meter: MeterArgs,
}

/// The command-line interface of `zpipe-meter`, with the pv short flags.
pub fn command() -> clap::Command {
    with_pv_short_flags(Cli::command())
}

/// Runs `zpipe-meter` with parsed arguments.
pub fn run(matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    let cli = Cli::from_arg_matches(&matches)?;
    let cfg = cli.meter.config()?;
    let cancel = zpipe_core::cancel::Cancel::new();
    run_passthrough(
        &cfg,
        zpipe_core::fdio::stdin_fd(),
        zpipe_core::fdio::stdout_fd(),
        &cancel,
    )?;
    Ok(Exit::Success)
}
