//! zpipe-compress: parallel zstd compression and decompression whose output
//! is standard zstd (byte-compatible with pzstd's framing).
//!
//! Code map:
//! - [`compress`]: [`CompressConfig`], [`CompressStage`] (blocks → independent
//!   frames on worker threads, raw frames for incompressible blocks).
//! - [`decompress`]: [`DecompressConfig`], [`DecompressStage`] (any zstd
//!   stream; frames with size frames decode in parallel).
//! - [`format`](mod@format): magics, size frames, header parsing, raw frames.
//! - [`adapt`]: the `--adapt` level controller.
//! - [`xxh64`]: the content checksum of zstd frames.
//! - [`mem`]: in-memory runs of the stages (tests, fuzzing).
//! - [`source`]: the binary's input (no zero-fill, blocks cut at size frames).
//! - this file: the command line ([`command`], [`run`], [`CompressArgs`]).
#![warn(missing_docs)]

pub mod adapt;
pub mod compress;
pub mod decompress;
pub mod format;
pub mod mem;
pub mod source;
pub mod xxh64;

pub use adapt::AdaptRange;
pub use compress::{CompressConfig, CompressStage, CompressStats};
pub use decompress::{DecompressConfig, DecompressStage};
pub use format::{looks_like_zstd, SIZE_FRAME_MAGIC, SKIPPABLE_MAGIC_MIN, ZSTD_MAGIC};
pub use source::SizeFrames;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::io::Write;
use zpipe_core::cancel::Cancel;
use zpipe_core::pipeline::{self, FdSink, FdSource, PipelineConfig, Sink};
use zpipe_core::pool::Block;
use zpipe_core::{fdio, Exit};

/// Input block size for decompression: one of our frames (4 MiB of input
/// compresses to at most this) fits, so blocks cut at size frames are reused.
const DECOMPRESS_READ_BLOCK: usize = compress::DEFAULT_BLOCK_SIZE + (64 << 10);
/// Input blocks for decompression beyond the frames in flight.
const DECOMPRESS_SPARE_BLOCKS: usize = 4;
/// Channel depth between parts for decompression.
const DECOMPRESS_DEPTH: usize = 2;
/// Channel depth between parts for compression (blocks are large).
const COMPRESS_DEPTH: usize = 1;

const LONG_ABOUT: &str = "\
  zpipe-compress [-1 ... -19] [-T N] [--block-size SIZE] [--adapt] [FILE] > out.zst
  zpipe-compress -d [-T N] [--memory SIZE] [FILE] > out
  zpipe-compress -t [FILE]

Compresses standard input (or FILE) to standard output with zstd, on all \
cores, or decompresses with -d. The output is standard zstd: `zstd -d` and \
`pzstd -d` decode it, and it is meant to replace `zstd -3 | ssh host zstd -d` \
in zfs send/recv pipelines.

The input is cut into blocks (--block-size, default 4 MiB) compressed \
independently on worker threads and written in order, each as a zstd frame \
with a content checksum, preceded by the 12-byte skippable frame pzstd uses \
to record the frame's compressed size. That size lets `zpipe-compress -d` \
(and `pzstd -d`) decode the frames in parallel too.

Blocks that will not shrink (encrypted `zfs send -w` streams, records \
already compressed and sent with -c) are detected by a trial compression of \
a few samples and stored as zstd Raw_Blocks without running the compressor \
over them, so such streams pass at memory speed and grow by about 0.01%.

Levels: -1 ... -19 as in zstd (each is the same as --level N: -19 means \
--level 19), default 3. -T 0 (the default) uses every core.";

const AFTER_HELP: &str = "\
Decompression (-d, -t) accepts any standard zstd input: one big frame \
(`zstd -19`, `zstd -T2`), frames with --long windows up to --memory (default \
128 MiB; --long=N sets it to 2^N as zstd does), concatenated frames and \
skippable frames anywhere. Frames preceded by a size frame (ours, pzstd's) \
are decoded on worker threads, and each is decoded completely and its \
checksum verified before any of its bytes are written. Other frames are \
decoded as they stream in, on one thread and in bounded memory (the whole \
input is never buffered): their bytes are written as they are decoded, so \
output may already hold part of a frame whose checksum then fails; the exit \
status is still 2.

--adapt changes the level while running, within --adapt-min..--adapt-max. \
Behind a link that keeps the output blocked nearly all the time it climbs \
(doubling its step) until the CPU becomes the bottleneck. Otherwise it \
measures what each level delivers (uncompressed bytes handed on per \
second): while the output side blocks it tries a level up, while the CPU \
is the bottleneck a level down, and keeps a tried level only if it was \
faster. --adapt-min 0 lets it store blocks without compressing them, when \
even level 1 slows the transfer down (a CPU-bound consumer such as ssh on \
a fast link). With ZPIPE_ADAPT_TRACE set, each decision is printed on \
stderr.

Exit status: 0 success; 1 bad usage, or input that is not zstd at all \
(\"not zstd data\"); 2 corrupt or truncated input (the message gives the \
byte offset of the bad frame); 3 I/O error (a closed output pipe included); \
130/143 on SIGINT/SIGTERM.

Examples:
  zfs send -w pool/ds@snap | zpipe-compress | ssh host 'zpipe-compress -d | zfs recv -s pool/ds'
  zpipe-compress -19 -T2 < stream > stream.zst
  zpipe-compress -t stream.zst";

/// Command-line arguments of `zpipe-compress`.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "zpipe-compress",
    version,
    about = "Parallel zstd compression and decompression that stays standard zstd",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    override_usage = "zpipe-compress [-1 ... -19] [-T N] [--block-size SIZE] [OPTIONS] [FILE]\n       zpipe-compress -d|-t [-T N] [--memory SIZE] [FILE]"
)]
pub struct Args {
    /// Decompress (any standard zstd input).
    #[arg(short = 'd', long = "decompress", conflicts_with = "test")]
    pub decompress: bool,
    /// Decompress and check the input without writing output.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Write to standard output (always the case; accepted for zstd compatibility).
    #[arg(short = 'c', long = "stdout")]
    pub stdout: bool,
    /// Compression level 1..=19; the same as -1 ... -19.
    #[arg(
        long = "level",
        value_name = "N",
        default_value_t = compress::DEFAULT_LEVEL,
        value_parser = clap::value_parser!(i32).range(1..=19)
    )]
    pub level: i32,
    /// Worker threads; 0 = one per core.
    #[arg(short = 'T', long = "threads", value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Size of the independently compressed blocks (e.g. 4M).
    #[arg(long = "block-size", value_name = "SIZE", value_parser = zpipe_core::parse::nonzero_size)]
    pub block_size: Option<u64>,
    /// Change the level with the bottleneck (see below).
    #[arg(long = "adapt")]
    pub adapt: bool,
    /// Lowest level --adapt may choose (0: store uncompressed).
    #[arg(long = "adapt-min", value_name = "N", default_value_t = compress::MIN_LEVEL,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub adapt_min: i32,
    /// Highest level --adapt may choose.
    #[arg(long = "adapt-max", value_name = "N", default_value_t = compress::MAX_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub adapt_max: i32,
    /// Compress every block, even those that look incompressible.
    #[arg(long = "no-raw")]
    pub no_raw: bool,
    /// Decompression: largest window accepted and memory for frames in flight (default 128M).
    #[arg(long = "memory", value_name = "SIZE", value_parser = zpipe_core::parse::nonzero_size)]
    pub memory: Option<u64>,
    /// Decompression: accept windows up to 2^N bytes (as zstd -d --long=N; default 27).
    #[arg(long = "long", value_name = "N", num_args = 0..=1, require_equals = true,
          default_missing_value = "27", value_parser = clap::value_parser!(u32).range(10..=31))]
    pub long: Option<u32>,
    /// Print a summary (sizes, frames, levels) to stderr at the end.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Accepted for zstd compatibility; zpipe-compress prints nothing but errors anyway.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Write compressed data even to a terminal.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Input file ("-" or none: standard input). Output is always standard output.
    #[arg(value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
}

/// Compression options for the wrappers to flatten into their own command
/// line: long flags only, all prefixed `--compress-`, so they collide with
/// neither zfs's short flags nor other stages' options.
#[derive(clap::Args, Debug, Clone)]
pub struct CompressArgs {
    /// zstd level of the stream, 1..=19.
    #[arg(long = "compress-level", value_name = "N", default_value_t = compress::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Compression worker threads; 0 = one per core.
    #[arg(long = "compress-threads", value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Size of the independently compressed blocks.
    #[arg(long = "compress-block-size", value_name = "SIZE", value_parser = zpipe_core::parse::nonzero_size)]
    pub block_size: Option<u64>,
    /// Change the level with the bottleneck (up while the link is slow).
    #[arg(long = "compress-adapt")]
    pub adapt: bool,
    /// Lowest level --compress-adapt may choose (0: store uncompressed).
    #[arg(long = "compress-adapt-min", value_name = "N", default_value_t = compress::MIN_LEVEL,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub adapt_min: i32,
    /// Highest level --compress-adapt may choose.
    #[arg(long = "compress-adapt-max", value_name = "N", default_value_t = compress::MAX_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub adapt_max: i32,
}

impl CompressArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> CompressConfig {
        make_config(
            self.level,
            self.threads,
            self.block_size,
            self.adapt.then_some(AdaptRange {
                min: self.adapt_min,
                max: self.adapt_max,
            }),
            true,
        )
    }
}

fn make_config(
    level: i32,
    workers: usize,
    block_size: Option<u64>,
    adapt: Option<AdaptRange>,
    detect: bool,
) -> CompressConfig {
    CompressConfig {
        level,
        workers,
        block_size: block_size.map_or(compress::DEFAULT_BLOCK_SIZE, |b| {
            usize::try_from(b).unwrap_or(usize::MAX)
        }),
        adapt,
        detect_incompressible: detect,
        checksum: true,
    }
}

impl Args {
    /// The compression configuration these arguments describe.
    pub fn compress_config(&self) -> CompressConfig {
        make_config(
            self.level,
            self.threads,
            self.block_size,
            self.adapt.then_some(AdaptRange {
                min: self.adapt_min,
                max: self.adapt_max,
            }),
            !self.no_raw,
        )
    }

    /// The decompression configuration these arguments describe.
    pub fn decompress_config(&self) -> DecompressConfig {
        let memory = match (self.memory, self.long) {
            (Some(m), _) => m,
            (None, Some(log)) => 1u64 << log,
            (None, None) => decompress::DEFAULT_MEMORY_LIMIT,
        };
        DecompressConfig {
            workers: self.threads,
            memory_limit: memory,
        }
    }
}

/// The command-line interface of `zpipe-compress`.
pub fn command() -> clap::Command {
    Args::command()
}

/// Rewrites zstd-style level flags (`-3`, `-19`) as `--level=N`, up to a `--`.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut literal = false;
    for a in args.into_iter().map(Into::into) {
        if !literal {
            if a == "--" {
                literal = true;
            } else if let Some(digits) = a.to_str().and_then(|s| s.strip_prefix('-')) {
                if !digits.is_empty()
                    && digits.len() <= 3
                    && digits.bytes().all(|b| b.is_ascii_digit())
                {
                    out.push(OsString::from(format!("--level={digits}")));
                    continue;
                }
            }
        }
        out.push(a);
    }
    out
}

/// Runs `zpipe-compress` with parsed arguments.
pub fn run(matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    let args =
        Args::from_arg_matches(&matches).map_err(|e| zpipe_core::exit::usage(e.to_string()))?;
    let cancel = Cancel::new();
    if args.decompress || args.test {
        if args.adapt || args.block_size.is_some() {
            return Err(zpipe_core::exit::usage(
                "--adapt and --block-size apply to compression, not to -d/-t",
            ));
        }
        let dcfg = args.decompress_config();
        let source = Box::new(
            FdSource::new(open_input(args.file.as_deref())?)
                .with_framing(Box::new(SizeFrames::for_config(&dcfg))),
        );
        let blocks = dcfg.window() + DECOMPRESS_SPARE_BLOCKS;
        let stage = DecompressStage::new(dcfg)?;
        let sink: Box<dyn Sink> = if args.test {
            Box::new(NullSink)
        } else {
            Box::new(FdSink::stdout()?)
        };
        let cfg = PipelineConfig {
            block_size: DECOMPRESS_READ_BLOCK,
            blocks,
            depth: DECOMPRESS_DEPTH,
            headroom: 0,
        };
        pipeline::run(&cfg, source, vec![Box::new(stage)], sink, &cancel)?;
        return Ok(Exit::Success);
    }
    if args.long.is_some() || args.memory.is_some() {
        return Err(zpipe_core::exit::usage(
            "--long and --memory apply to -d/-t (compressed blocks are independent)",
        ));
    }
    if !args.force && rustix::termios::isatty(fdio::stdout_fd()) {
        return Err(zpipe_core::exit::usage(
            "refusing to write compressed data to a terminal (redirect it, or use -f)",
        ));
    }
    let ccfg = args.compress_config();
    let source = Box::new(FdSource::new(open_input(args.file.as_deref())?));
    let stage = CompressStage::new(ccfg.clone())?;
    let stats = stage.stats();
    let cfg = PipelineConfig {
        block_size: ccfg.block_size,
        blocks: ccfg.window() + 3,
        depth: COMPRESS_DEPTH,
        headroom: 0,
    };
    let start = std::time::Instant::now();
    pipeline::run(
        &cfg,
        source,
        vec![Box::new(stage)],
        Box::new(FdSink::stdout()?),
        &cancel,
    )?;
    if args.verbose {
        let _ = writeln!(
            std::io::stderr(),
            "zpipe-compress: {}",
            summary(&stats, start.elapsed())
        );
    }
    Ok(Exit::Success)
}

/// One line describing a finished compression.
pub fn summary(s: &CompressStats, elapsed: std::time::Duration) -> String {
    let pct = if s.bytes_in() == 0 {
        100.0
    } else {
        s.bytes_out() as f64 * 100.0 / s.bytes_in() as f64
    };
    format!(
        "{} -> {} bytes ({pct:.2}%) in {:.2}s, {} frames ({} stored raw), level {} (min {}, max {})",
        s.bytes_in(),
        s.bytes_out(),
        elapsed.as_secs_f64(),
        s.frames(),
        s.raw_frames(),
        s.level(),
        s.min_level(),
        s.max_level()
    )
}

fn open_input(path: Option<&std::path::Path>) -> anyhow::Result<rustix::fd::OwnedFd> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            let f = std::fs::File::open(p)
                .with_context(|| format!("cannot open {}", p.display()))
                .map_err(|e| zpipe_core::exit::usage(format!("{e:#}")))?;
            Ok(f.into())
        }
        _ => Ok(rustix::io::dup(fdio::stdin_fd()).context("duplicating stdin")?),
    }
}

/// A sink that discards everything (for `-t`).
pub struct NullSink;

impl Sink for NullSink {
    fn write_block(&mut self, _block: Block, _cancel: &Cancel) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_flags_become_level_options() {
        let a = normalize_args(["zpipe-compress", "-19", "-T2", "-d", "--", "-3"]);
        let want: Vec<OsString> = ["zpipe-compress", "--level=19", "-T2", "-d", "--", "-3"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(a, want);
    }

    #[test]
    fn command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn compress_args_have_no_short_flags() {
        let cmd = <CompressArgs as clap::Args>::augment_args(clap::Command::new("w"));
        for a in cmd.get_arguments() {
            assert!(a.get_short().is_none(), "{:?}", a.get_id());
        }
    }
}
