//! The `zsend-wrap` command: flags, the `zfs send` argv, stage composition.

use crate::remote::{RemoteSpec, Ssh};
use crate::zfs::{Caps, Zfs};
use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use rustix::fd::OwnedFd;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use zpipe_core::child::{Child, ChildSource, Io};
use zpipe_core::pipeline::{self, FdSink, PipelineConfig, Sink, Stage};
use zpipe_core::{exit, Cancel, Exit};

/// `--compress auto`: the level it starts at, and the range it adapts in.
/// Level 1, not storing: behind a slow link the climb from storing cost the
/// 100 Mbit bench 13% (1.128x the best fixed level, against 1.019x from
/// level 1), while on a fast link level 1 costs only the first windows
/// before the controller goes down.
pub const AUTO_START_LEVEL: i32 = 1;
/// Lowest level `--compress auto` goes down to: storing blocks
/// uncompressed, for links where compressing only slows the transfer (a
/// CPU-bound ssh on a fast link).
pub const AUTO_MIN_LEVEL: i32 = zpipe_compress::compress::STORE_LEVEL;
/// Highest level `--compress auto` goes up to while the link is the bottleneck.
pub const AUTO_MAX_LEVEL: i32 = 9;

/// Compression choice for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressChoice {
    /// Adaptive for plain sends, off for `-w`/`-c` sends.
    Auto,
    /// No compression.
    Off,
    /// A fixed zstd level.
    Level(i32),
}

fn parse_compress(s: &str) -> Result<CompressChoice, String> {
    match s {
        "auto" => Ok(CompressChoice::Auto),
        "off" | "none" | "0" => Ok(CompressChoice::Off),
        n => match n.parse::<i32>() {
            Ok(l) if (1..=19).contains(&l) => Ok(CompressChoice::Level(l)),
            _ => Err(format!("'{s}' is not auto, off or a level from 1 to 19")),
        },
    }
}

/// Command-line flags of `zsend-wrap`.
#[derive(Debug, Parser)]
#[command(
    name = "zsend-wrap",
    version,
    about = "Run zfs send and write a verified, compressed, metered stream",
    long_about = "Runs `zfs send` with the given flags and writes its stream to stdout \
        (or, with --to, to zrecv-wrap on another host over ssh), framed with SHA-256 per \
        frame (zpipe-verify), compressed with parallel zstd when it helps (zpipe-compress) \
        and metered (zpipe-meter), all inside this one process.\n\n\
        If `zfs send` fails, the stream ends with an ABORT trailer carrying zfs's error text, \
        so the receiver fails loudly instead of taking a cut stream for a whole one, and \
        zsend-wrap exits 4. If the downstream breaks, zsend-wrap stops zfs and exits 3.",
    after_help = "Examples:\n  zsend-wrap tank/home@today | ssh backup zrecv-wrap pool/home\n  \
        zsend-wrap -I tank/home@monday tank/home@friday --to backup:pool/home\n  \
        zsend-wrap -w tank/secret@now --to backup:pool/secret --limit 20M\n  \
        zsend-wrap -t \"$(ssh backup zfs get -H -o value receive_resume_token pool/home)\" --to backup:pool/home\n\n\
        Environment: ZPIPE_ZFS (the zfs command, as --zfs), ZPIPE_ADAPT_TRACE (print each \
        decision of --compress auto), ZPIPE_NO_VMSPLICE (with --to, copy into ssh's pipe \
        instead of lending it our pages).\n\n\
        Exit codes: 0 ok, 1 usage, 2 integrity, 3 I/O, 4 zfs or ssh failed, 130/143 signals."
)]
pub struct Args {
    /// Incremental send from SNAPSHOT (zfs send -i).
    #[arg(
        short = 'i',
        value_name = "SNAPSHOT",
        conflicts_with = "incremental_all"
    )]
    pub incremental: Option<String>,
    /// Incremental send of every snapshot since SNAPSHOT (zfs send -I).
    #[arg(short = 'I', value_name = "SNAPSHOT")]
    pub incremental_all: Option<String>,
    /// Raw send of encrypted datasets (zfs send -w); compression defaults to off.
    #[arg(short = 'w', long = "raw")]
    pub raw: bool,
    /// Send compressed records as they are on disk (zfs send -c); compression defaults to off.
    #[arg(short = 'c', long = "compressed")]
    pub compressed: bool,
    /// Allow records larger than 128 KiB (zfs send -L).
    #[arg(short = 'L', long = "large-block")]
    pub large_block: bool,
    /// Embedded data blocks (zfs send -e).
    #[arg(short = 'e', long = "embed")]
    pub embed: bool,
    /// Include dataset properties (zfs send -p).
    #[arg(short = 'p', long = "props")]
    pub props: bool,
    /// Replication stream of the dataset and its descendants (zfs send -R).
    #[arg(short = 'R', long = "replicate")]
    pub replicate: bool,
    /// Deduplicated stream (zfs send -D; removed in OpenZFS 2.2).
    #[arg(short = 'D', long = "dedup")]
    pub dedup: bool,
    /// Resume an interrupted send from the receiver's resume token (zfs send -t).
    #[arg(short = 't', value_name = "TOKEN", conflicts_with_all = ["incremental", "incremental_all", "replicate", "snapshot"])]
    pub token: Option<String>,
    /// Compression: auto (adaptive for plain sends, off for -w/-c), off, or a zstd level 1-19.
    #[arg(long, value_name = "auto|off|LEVEL", default_value = "auto", value_parser = parse_compress)]
    pub compress: CompressChoice,
    /// Send to zrecv-wrap on HOST over ssh instead of stdout.
    #[arg(long, value_name = "[USER@]HOST:DATASET")]
    pub to: Option<String>,
    /// The ssh command (split into words, no shell), e.g. "ssh -p 2222 -i key".
    #[arg(long, value_name = "COMMAND")]
    pub ssh: Option<String>,
    /// ssh cipher to use (default: AES-GCM when the CPU has AES instructions, unless --ssh sets one).
    #[arg(long, value_name = "CIPHER")]
    pub ssh_cipher: Option<String>,
    /// Extra argument for the remote zrecv-wrap (repeatable), e.g. --recv-arg=-F.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub recv_arg: Vec<String>,
    /// The zrecv-wrap command on the remote host.
    #[arg(long, value_name = "COMMAND", default_value = "zrecv-wrap")]
    pub remote_zrecv: String,
    /// The zfs command (split into words), e.g. "sudo zfs"; default $ZPIPE_ZFS or zfs.
    #[arg(long, value_name = "COMMAND")]
    pub zfs: Option<String>,
    /// Verification frame size.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = zpipe_core::parse::nonzero_size)]
    pub frame_size: u64,
    /// Meter: progress, rate limit, buffer, stall watchdog.
    #[command(flatten)]
    pub meter: zpipe_meter::MeterArgs,
    /// Serve mode: run as an ssh forced command that allows only what pull replication needs
    /// (reads SSH_ORIGINAL_COMMAND; see docs/PULL.md).
    #[arg(long, requires = "allow", conflicts_with_all = ["to", "snapshot", "token"], help_heading = "Serve mode")]
    pub serve: bool,
    /// Serve mode: a dataset the client may list and send, with its children (repeatable).
    #[arg(
        long,
        value_name = "DATASET",
        requires = "serve",
        help_heading = "Serve mode"
    )]
    pub allow: Vec<String>,
    /// Serve mode: also allow taking snapshots (zfs snapshot DATASET@NAME).
    #[arg(long, requires = "serve", help_heading = "Serve mode")]
    pub allow_snapshot: bool,
    /// Serve mode: also allow destroying single snapshots (zfs destroy DATASET@SNAP).
    #[arg(long, requires = "serve", help_heading = "Serve mode")]
    pub allow_prune: bool,
    /// The snapshot to send.
    #[arg(value_name = "SNAPSHOT", required_unless_present_any = ["token", "serve"])]
    pub snapshot: Option<String>,
}

/// The command-line interface of `zsend-wrap`.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `zsend-wrap` with parsed arguments.
pub fn run(matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    let args = Args::from_arg_matches(&matches)?;
    if args.serve {
        return crate::serve::serve(&args);
    }
    send(&args)
}

impl Args {
    /// The flags passed to `zfs send`, without the verb.
    pub fn send_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        for (on, flag) in [
            (self.raw, "-w"),
            (self.compressed, "-c"),
            (self.large_block, "-L"),
            (self.embed, "-e"),
            (self.props, "-p"),
            (self.replicate, "-R"),
            (self.dedup, "-D"),
        ] {
            if on {
                v.push(flag.into());
            }
        }
        if let Some(t) = &self.token {
            v.push("-t".into());
            v.push(t.into());
            return v;
        }
        if let Some(s) = &self.incremental {
            v.push("-i".into());
            v.push(s.into());
        }
        if let Some(s) = &self.incremental_all {
            v.push("-I".into());
            v.push(s.into());
        }
        if let Some(s) = &self.snapshot {
            v.push(s.into());
        }
        v
    }

    /// Checks every requested flag against what this zfs supports.
    pub fn check_caps(&self, caps: &Caps, zfs: &Zfs) -> anyhow::Result<()> {
        let wanted = [
            (self.raw, 'w', "-w (raw send of encrypted datasets)"),
            (self.compressed, 'c', "-c (compressed records)"),
            (self.large_block, 'L', "-L (large blocks)"),
            (self.embed, 'e', "-e (embedded blocks)"),
            (self.props, 'p', "-p (properties)"),
            (self.replicate, 'R', "-R (replication streams)"),
            (self.dedup, 'D', "-D (deduplicated streams)"),
            (self.incremental.is_some(), 'i', "-i (incremental)"),
            (
                self.incremental_all.is_some(),
                'I',
                "-I (incremental with intermediates)",
            ),
        ];
        for (on, flag, what) in wanted {
            if on && !caps.send(flag) {
                return Err(exit::usage(format!(
                    "{} does not support zfs send {what}; this needs OpenZFS 2.x",
                    zfs.display()
                )));
            }
        }
        if self.token.is_some() && !caps.send_resume {
            return Err(exit::usage(format!(
                "{} cannot resume sends (zfs send -t); this needs OpenZFS 0.7 or later",
                zfs.display()
            )));
        }
        Ok(())
    }

    /// Whether the stream gets compressed, and how.
    pub fn compression(&self) -> CompressChoice {
        match self.compress {
            CompressChoice::Auto if self.raw || self.compressed => CompressChoice::Off,
            c => c,
        }
    }
}

fn send(args: &Args) -> anyhow::Result<Exit> {
    let zfs = Zfs::from_option(args.zfs.as_deref())?;
    let remote = args.to.as_deref().map(RemoteSpec::parse).transpose()?;
    let ssh = Ssh::new(args.ssh.as_deref(), args.ssh_cipher.as_deref())?;
    let mut meter_cfg = args.meter.config()?;
    meter_cfg.tool = "zsend-wrap".into();
    if meter_cfg.name.is_none() {
        meter_cfg.name = args.snapshot.clone();
    }
    let caps = zfs.capabilities()?;
    args.check_caps(&caps, &zfs)?;
    if let Some(t) = &args.token {
        check_token(&zfs, t)?;
    }
    let send_args = args.send_args();

    let size = if caps.estimate() && meter_cfg.size.is_none() {
        zfs.estimate(&send_args).unwrap_or(None)
    } else {
        None
    };

    let mut zfs_argv = zfs.argv(["send"]);
    zfs_argv.extend(send_args.iter().cloned());
    let mut zfs_child = Child::spawn(&zfs_argv, Io::Null, Io::Pipe, false)?;
    let stdout = zfs_child.take_stdout().context("zfs send stdout")?;
    let zfs_child = Arc::new(Mutex::new(zfs_child));

    let cancel = Cancel::new();
    let buffered = meter_cfg.buffer_blocks().is_some();
    let SendStages {
        stages,
        abort,
        meter,
        compress,
    } = build_stages(args, meter_cfg, size, &cancel)?;

    let mut ssh_child = None;
    let out_fd: OwnedFd = match &remote {
        Some(r) => {
            let mut words = vec![args.remote_zrecv.clone()];
            words.extend(args.recv_arg.iter().cloned());
            words.push(r.dataset.clone());
            let argv = ssh.argv(&r.host, &words);
            let mut c = Child::spawn(&argv, Io::Pipe, Io::Inherit, true)?;
            let stdin = c.take_stdin().context("ssh stdin")?;
            ssh_child = Some(c);
            OwnedFd::from(stdin)
        }
        None => rustix::io::dup(zpipe_core::fdio::stdout_fd()).context("duplicating stdout")?,
    };
    // Our own ssh copies its input out with read(2): its pipe can borrow
    // our blocks' pages instead of a copy of them (zpipe_core::lend).
    let sink = output_sink(&meter, out_fd, buffered, remote.is_some())?;
    let source = ChildSource::new(
        stdout,
        Arc::clone(&zfs_child),
        Box::new(move |text| abort.abort(text)),
    );
    let cfg = PipelineConfig {
        block_size: args.frame_size as usize,
        // Whole frames with room for their header: framed in place.
        headroom: zpipe_verify::format::RECORD_LEN,
        ..PipelineConfig::default()
    };
    let result = pipeline::run(&cfg, Box::new(source), stages, sink, &cancel);

    // Stop or reap zfs first: on a broken downstream it must not keep running.
    let zfs_result = {
        let mut z = zfs_child.lock().unwrap_or_else(|e| e.into_inner());
        if result.is_err() {
            z.stop();
        }
        z.check()
    };
    let ssh_result = match ssh_child.as_mut() {
        Some(c) => {
            // Our own failure (a stall, a signal) that is not the echo of
            // the remote side's: ssh may wait on a hung peer forever.
            if result.as_ref().is_err_and(|e| !exit::is_broken_pipe(e)) {
                c.stop();
            }
            c.check().map_err(|e| remote_error(e, c))
        }
        None => Ok(()),
    };
    let _ = meter.finish(result.as_ref().map(|_| ()));
    if let (Some(stats), false, true) = (&compress, args.meter.quiet, result.is_ok()) {
        eprintln!("zsend-wrap: {}", stats.summary());
    }
    let result = send_outcome(result, zfs_result, ssh_result);
    if let (Err(e), Some(r)) = (&result, &remote) {
        // The receiver keeps a partial receive (zfs recv -s), but when the
        // link died its own resume hint never reached us: say how to resume.
        if exit::classify(e) != Exit::Usage {
            eprintln!("zsend-wrap: {}", resume_hint(args, r));
        }
    }
    result
}

/// How to resume a `--to` transfer from the receiver's partial state.
pub fn resume_hint(args: &Args, r: &RemoteSpec) -> String {
    use zpipe_core::child::quote_word;
    let ssh = args.ssh.as_deref().unwrap_or("ssh");
    let get = format!(
        "zfs get -H -o value receive_resume_token {}",
        quote_word(&r.dataset)
    );
    let ssh_flag = match &args.ssh {
        Some(s) => format!(" --ssh {}", quote_word(s)),
        None => String::new(),
    };
    format!(
        "if the receiver kept a partial receive, resume with: zsend-wrap -t \"$({ssh} {} {})\"{ssh_flag} --to {}",
        quote_word(&r.host),
        quote_word(&get),
        quote_word(&format!("{}:{}", r.host, r.dataset))
    )
}

/// The first real error of a send (see the comments inside).
fn send_outcome(
    result: anyhow::Result<()>,
    zfs_result: anyhow::Result<()>,
    ssh_result: anyhow::Result<()>,
) -> anyhow::Result<Exit> {
    // The first real error. A broken pipe towards ssh is the echo of the
    // remote side's failure; a failed zfs send after our own failure is the
    // echo of it (we stopped reading). A zfs send that failed on its own
    // ended the stream with ABORT: it is the cause, and a remote receiver
    // failing on that ABORT is its echo, so it is reported (exit 4) as
    // without --to.
    match (result, zfs_result, ssh_result) {
        (Err(e), _, Err(s)) if exit::is_broken_pipe(&e) => Err(s),
        (Err(e), _, _) => Err(e),
        (Ok(()), Err(z), _) => Err(z),
        (Ok(()), Ok(()), Err(s)) => Err(s),
        (Ok(()), Ok(()), Ok(())) => Ok(Exit::Success),
    }
}

/// Before `zfs send -t`: the token is valid and its snapshots still exist
/// on this side with the guids it names; otherwise say what to do.
pub fn check_token(zfs: &Zfs, text: &str) -> anyhow::Result<crate::token::ResumeToken> {
    let token = crate::token::decode(text)?;
    let advice = "discard the partial receive on the destination (zrecv-wrap --abort-partial \
                  DATASET, i.e. zfs recv -A) and send again";
    match zfs.guid(&token.toname) {
        Ok(g) if g == token.toguid => {}
        Ok(g) => {
            return Err(exit::usage(format!(
                "cannot resume: {} now has guid {g}, the token was made for guid {}; {advice}",
                token.toname, token.toguid
            )))
        }
        Err(_) => {
            return Err(exit::usage(format!(
                "cannot resume: the token's snapshot {} no longer exists here; {advice}",
                token.toname
            )))
        }
    }
    if let Some(from) = token.fromguid.filter(|&g| g != 0) {
        let fs = token
            .toname
            .split_once('@')
            .map_or(token.toname.as_str(), |(f, _)| f);
        let snaps = zfs.snapshots(fs)?;
        if !snaps.iter().any(|s| s.guid == from) {
            return Err(exit::usage(format!(
                "cannot resume: the incremental source (guid {from}) of {} no longer exists here; {advice}",
                token.toname
            )));
        }
    }
    Ok(token)
}

/// The pipeline's sink: the meter's `--buffer` when asked for, else a
/// descriptor sink, lending its pages (`lend`) to a pipe whose reader is
/// known to copy them out.
pub fn output_sink(
    meter: &zpipe_meter::MeterHandle,
    fd: OwnedFd,
    buffered: bool,
    lend: bool,
) -> anyhow::Result<Box<dyn Sink>> {
    if buffered {
        if let Some(b) = meter.buffer_sink(fd)? {
            return Ok(Box::new(b));
        }
        return Err(exit::usage(
            "--buffer was given but the meter has no buffer",
        ));
    }
    if lend {
        return Ok(Box::new(zpipe_core::lend::LendSink::new(fd)));
    }
    Ok(Box::new(FdSink::new(fd)))
}

/// Maps the exit status of `ssh … zrecv-wrap` to our policy: the remote
/// tool's own code (1–4) carries over, ssh's 255 is a child failure.
fn remote_error(e: anyhow::Error, c: &mut Child) -> anyhow::Error {
    let code = c.wait().ok().and_then(|s| s.code());
    let exit_code = match code {
        Some(1) => Exit::Usage,
        Some(2) => Exit::Integrity,
        Some(3) => Exit::Io,
        _ => Exit::Child,
    };
    zpipe_core::Failure::new(exit_code, format!("remote side: {}", exit::one_line(&e))).into()
}

/// The stages of a send, and the handles that steer them.
struct SendStages {
    stages: Vec<Box<dyn Stage>>,
    abort: zpipe_verify::AbortHandle,
    meter: zpipe_meter::MeterHandle,
    compress: Option<Arc<zpipe_compress::CompressStats>>,
}

/// Builds meter → verify-encode → (compress).
fn build_stages(
    args: &Args,
    meter_cfg: zpipe_meter::MeterConfig,
    size: Option<u64>,
    cancel: &Cancel,
) -> anyhow::Result<SendStages> {
    let vcfg = zpipe_verify::VerifyConfig {
        frame_size: args.frame_size as usize,
        ..zpipe_verify::VerifyConfig::default()
    };
    // The meter sees the zfs stream itself, so its count, the `zfs send
    // -nvP` size and the ETA are in the same units; `--buffer` is the sink.
    let (meter, handle) =
        zpipe_meter::MeterStage::new(meter_cfg, zpipe_meter::ProgressTarget::Stderr, cancel)?;
    if let Some(s) = size {
        handle.set_size(s);
    }
    let (encode, abort) = zpipe_verify::EncodeStage::new(vcfg);
    let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(meter), Box::new(encode)];
    // One compressed frame per verify frame: the compressor takes the
    // framed blocks as they are (no copy), and the receiver's decompressor
    // hands its decoder one whole verify frame per block, checked in place.
    let framed_block = (args.frame_size as usize + zpipe_verify::format::RECORD_LEN)
        .max(zpipe_compress::compress::MIN_BLOCK_SIZE);
    // No zstd content checksum: the verify frames inside carry a SHA-256
    // of every byte, checked by the receiver after decompression.
    let compress = match args.compression() {
        CompressChoice::Off => None,
        CompressChoice::Level(level) => Some(zpipe_compress::CompressConfig {
            level,
            block_size: framed_block,
            checksum: false,
            ..zpipe_compress::CompressConfig::default()
        }),
        CompressChoice::Auto => Some(zpipe_compress::CompressConfig {
            level: AUTO_START_LEVEL,
            adapt: Some(zpipe_compress::AdaptRange {
                min: AUTO_MIN_LEVEL,
                max: AUTO_MAX_LEVEL,
            }),
            block_size: framed_block,
            checksum: false,
            ..zpipe_compress::CompressConfig::default()
        }),
    };
    let compress = match compress {
        Some(cfg) => {
            let stage = zpipe_compress::CompressStage::new(cfg)?;
            let stats = stage.stats();
            stages.push(Box::new(stage));
            Some(stats)
        }
        None => None,
    };
    Ok(SendStages {
        stages,
        abort,
        meter: handle,
        compress,
    })
}
