//! The `zrecv-wrap` command: flags, stream sniffing, stage composition, and
//! the checks around `zfs recv` (exit status, received guid, resume token).

use crate::sniff::{self, Kind};
use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use rustix::fd::OwnedFd;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use zpipe_core::child::{Child, Io};
use zpipe_core::pipeline::{self, Emitter, FdSource, PipelineConfig, Stage};
use zpipe_core::pool::Block;
use zpipe_core::{exit, fdio, Cancel, Exit};
use zpipe_verify::zfs::Follower;
use zsend_wrap::zfs::{Caps, Zfs};

/// Command-line flags of `zrecv-wrap`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "zrecv-wrap",
    version,
    about = "Verify and decode a zsend-wrap stream and feed it to zfs recv",
    long_about = "Reads a stream from stdin, recognises by its first bytes whether it is \
        framed by zpipe-verify, zstd-compressed, or a bare ZFS send stream, decodes it in this \
        process and feeds `zfs recv` (with -s, resumable, where the zfs supports it).\n\n\
        No byte reaches zfs recv before the frame holding it has been verified. After a \
        successful receive, the received snapshot must exist with the guid the stream announced. \
        When a receive is interrupted, zrecv-wrap prints the resume token and the command that \
        resumes the transfer, and exits 4.",
    after_help = "Examples:\n  zsend-wrap tank/home@today | ssh backup zrecv-wrap pool/home\n  \
        zrecv-wrap --resume-token pool/home        # show the partial receive's token, decoded\n  \
        zrecv-wrap --abort-partial pool/home       # discard it (zfs recv -A)\n  \
        zrecv-wrap --from backup@nas:tank/home --snapshot 'zpipe-%Y%m%d-%H%M' --prune-older-than 30d pool/home\n  \
        zrecv-wrap --from backup@nas:tank/home --check pool/home   # exit 2 when behind\n\n\
        Pull mode (--from): one replication run. Takes a snapshot on the source when --snapshot \
        is given; lists both sides' snapshots with guids and finds the newest common snapshot by \
        guid (never by name); resumes a partial receive whose token still matches the source, or \
        discards it (zfs recv -A); refuses (exit 1) when the destination has diverged (snapshots \
        after the common one that the source lacks, or changes since it where zfs reports \
        `written`) unless --force, which rolls back to the common snapshot and says what it \
        discards; then sends full, -I (default) or -i through `ssh HOST zsend-wrap …` (plain `zfs \
        send` when the source has no zsend-wrap: exit 127), and prunes snapshots whose names \
        (in the --snapshot format) are older than --prune-older-than here and \
        --prune-source-older-than on the source, never the newest common snapshot and never a \
        held one (userrefs > 0). In pull mode --json FILE writes the run summary (steps, bytes, \
        seconds, pruned snapshots, result) instead of the meter's statistics. The source side \
        can be locked down with `zsend-wrap --serve` as a forced command: see docs/PULL.md.\n\n\
        Exit codes: 0 ok, 1 usage or refused (diverged destination), 2 integrity (also: --check \
        found the newest source snapshot missing here), 3 I/O, 4 zfs or ssh failed, 130/143 signals."
)]
pub struct Args {
    /// Roll back the destination to its newest snapshot first, destroying what differs (zfs recv -F).
    #[arg(short = 'F', long = "force")]
    pub force: bool,
    /// Do not mount the received file system (zfs recv -u).
    #[arg(short = 'u')]
    pub no_mount: bool,
    /// Name the received dataset after the sent one minus its pool (zfs recv -d).
    #[arg(short = 'd', conflicts_with = "last_element")]
    pub discard_pool: bool,
    /// Name the received dataset after the last element of the sent one (zfs recv -e).
    #[arg(short = 'e')]
    pub last_element: bool,
    /// Set a property on the received dataset (zfs recv -o), repeatable.
    #[arg(short = 'o', value_name = "PROPERTY=VALUE")]
    pub set: Vec<String>,
    /// Exclude a property from the stream (zfs recv -x), repeatable.
    #[arg(short = 'x', value_name = "PROPERTY")]
    pub exclude: Vec<String>,
    /// Verbose zfs recv (zfs recv -v).
    #[arg(short = 'v')]
    pub verbose: bool,
    /// Do not ask zfs recv to keep partial state for resuming (no -s).
    #[arg(long)]
    pub no_resumable: bool,
    /// Print DATASET's receive resume token, decoded, and exit.
    #[arg(long, conflicts_with = "abort_partial")]
    pub resume_token: bool,
    /// Discard DATASET's partially received state (zfs recv -A) and exit.
    #[arg(long)]
    pub abort_partial: bool,
    /// Accept a bare ZFS stream that is not framed by zpipe-verify (it cannot be verified end to end).
    #[arg(long)]
    pub allow_unverified: bool,
    /// The zfs command (split into words), e.g. "sudo zfs"; default $ZPIPE_ZFS or zfs.
    #[arg(long, value_name = "COMMAND")]
    pub zfs: Option<String>,
    /// Meter: progress, rate limit, buffer, stall watchdog.
    #[command(flatten)]
    pub meter: zpipe_meter::MeterArgs,
    /// Pull mode: replicate DATASET of HOST (over ssh) into DATASET here; see below.
    #[arg(long, value_name = "[USER@]HOST:DATASET", conflicts_with_all = ["resume_token", "abort_partial"], help_heading = "Pull mode")]
    pub from: Option<String>,
    /// Pull mode: take a snapshot on the source first, named by this strftime FORMAT (e.g. zpipe-%Y%m%d-%H%M); also the name format pruning reads.
    #[arg(
        long,
        value_name = "FORMAT",
        requires = "from",
        help_heading = "Pull mode"
    )]
    pub snapshot: Option<String>,
    /// Pull mode: the time taken as "now" for snapshot names and pruning (RFC 3339 or @EPOCH), e.g. for tests.
    #[arg(
        long,
        value_name = "TIME",
        requires = "from",
        help_heading = "Pull mode"
    )]
    pub snapshot_time: Option<String>,
    /// Pull mode: incremental sends with every intermediate snapshot (I) or only the newest (i).
    #[arg(long, value_name = "i|I", default_value = "I", value_parser = ["i", "I"], help_heading = "Pull mode")]
    pub incremental_mode: String,
    /// Pull mode: the zsend-wrap command on the source; plain zfs send is used when it is not found there.
    #[arg(
        long,
        value_name = "COMMAND",
        default_value = "zsend-wrap",
        help_heading = "Pull mode"
    )]
    pub remote_zsend: String,
    /// Pull mode: the zfs command on the source (split into words), e.g. "sudo zfs".
    #[arg(
        long,
        value_name = "COMMAND",
        default_value = "zfs",
        help_heading = "Pull mode"
    )]
    pub remote_zfs: String,
    /// Pull mode: the ssh command (split into words, no shell), e.g. "ssh -p 2222 -i key".
    #[arg(
        long,
        value_name = "COMMAND",
        requires = "from",
        help_heading = "Pull mode"
    )]
    pub ssh: Option<String>,
    /// Pull mode: ssh cipher (default: AES-GCM when the CPU has AES instructions, unless --ssh sets one).
    #[arg(
        long,
        value_name = "CIPHER",
        requires = "from",
        help_heading = "Pull mode"
    )]
    pub ssh_cipher: Option<String>,
    /// Pull mode: print the plan (snapshot, sends, resume, pruning) and change nothing.
    #[arg(long, requires = "from", help_heading = "Pull mode")]
    pub dry_run: bool,
    /// Pull mode: only compare the snapshot lists by guid; exit 2 when the newest source snapshot is missing here.
    #[arg(long, requires = "from", help_heading = "Pull mode")]
    pub check: bool,
    /// Pull mode: the strftime format of snapshot names that pruning reads (default: the --snapshot format).
    #[arg(
        long,
        value_name = "FORMAT",
        requires = "from",
        help_heading = "Pull mode"
    )]
    pub prune_format: Option<String>,
    /// Pull mode: destroy snapshots here whose name (in the --snapshot or --prune-format format) is older than DUR, e.g. 30d.
    #[arg(long, value_name = "DUR", value_parser = zpipe_core::parse::duration, requires = "from", help_heading = "Pull mode")]
    pub prune_older_than: Option<std::time::Duration>,
    /// Pull mode: the same on the source (zfs destroy through ssh; serve mode needs --allow-prune).
    #[arg(long, value_name = "DUR", value_parser = zpipe_core::parse::duration, requires = "from", help_heading = "Pull mode")]
    pub prune_source_older_than: Option<std::time::Duration>,
    /// The dataset (or snapshot) to receive into.
    #[arg(value_name = "DATASET")]
    pub dataset: String,
}

/// The command-line interface of `zrecv-wrap`.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `zrecv-wrap` with parsed arguments.
pub fn run(matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    let args = Args::from_arg_matches(&matches)?;
    if args.from.is_some() {
        return crate::pull::pull(&args);
    }
    let zfs = Zfs::from_option(args.zfs.as_deref())?;
    if args.resume_token {
        return show_token(&zfs, &args.dataset);
    }
    let caps = zfs.capabilities()?;
    if args.abort_partial {
        if !caps.recv_abort {
            return Err(exit::usage(format!(
                "{} cannot discard partial receives (zfs recv -A needs OpenZFS 0.7 or later)",
                zfs.display()
            )));
        }
        zfs.run(["receive", "-A", args.dataset.as_str()])?;
        eprintln!(
            "zrecv-wrap: discarded the partial receive state of {}",
            args.dataset
        );
        return Ok(Exit::Success);
    }
    let stdin = rustix::io::dup(fdio::stdin_fd()).context("duplicating stdin")?;
    receive_from(&args, &zfs, &caps, stdin)
}

fn show_token(zfs: &Zfs, dataset: &str) -> anyhow::Result<Exit> {
    if !zfs.exists(dataset) {
        return Err(exit::usage(format!(
            "{dataset} does not exist, so it holds no partial receive"
        )));
    }
    match zfs.resume_token(dataset)? {
        None => Err(exit::usage(format!(
            "{dataset} holds no partial receive (no resume token)"
        ))),
        Some(t) => {
            let token = crate::token::decode(&t)?;
            println!("token = {t}");
            println!("{token}");
            Ok(Exit::Success)
        }
    }
}

impl Args {
    /// The `zfs receive` flags, without the verb and the dataset.
    pub fn recv_args(&self, caps: &Caps) -> anyhow::Result<Vec<OsString>> {
        let mut v: Vec<OsString> = Vec::new();
        let resumable = !self.no_resumable && caps.resumable();
        let wanted = [
            (resumable, 's', "-s"),
            (self.force, 'F', "-F"),
            (self.no_mount, 'u', "-u"),
            (self.discard_pool, 'd', "-d"),
            (self.last_element, 'e', "-e"),
            (self.verbose, 'v', "-v"),
        ];
        for (on, letter, flag) in wanted {
            if !on {
                continue;
            }
            if !caps.recv(letter) {
                return Err(exit::usage(format!(
                    "this zfs does not support zfs receive {flag}"
                )));
            }
            v.push(flag.into());
        }
        for (flag, letter, values) in [("-o", 'o', &self.set), ("-x", 'x', &self.exclude)] {
            if !values.is_empty() && !caps.recv(letter) {
                return Err(exit::usage(format!(
                    "this zfs does not support zfs receive {flag}"
                )));
            }
            for val in values {
                v.push(flag.into());
                v.push(val.into());
            }
        }
        Ok(v)
    }
}

/// Passes blocks through while following the ZFS records they carry.
struct Watch {
    follower: Arc<Mutex<Follower>>,
}

impl Stage for Watch {
    fn process(&mut self, block: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        self.follower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .feed(block.data());
        out.emit(block)
    }
}

/// Input block size: a default verify frame with its record, and room for
/// the compression framing around it, so such a frame fits one block.
pub const READ_BLOCK_SIZE: usize = zpipe_verify::format::DEFAULT_FRAME_LEN + (64 << 10);

/// Reads up to `n` bytes of `input` (less only at end of input).
fn read_prefix(input: &OwnedFd, n: usize, cancel: &Cancel) -> anyhow::Result<Vec<u8>> {
    use rustix::fd::AsFd;
    let mut buf = vec![0u8; n];
    let got = fdio::read_full(input.as_fd(), &mut buf, cancel, &mut fdio::NoIdle)?;
    buf.truncate(got);
    Ok(buf)
}

/// The kind of what a zstd stream holds, from its first decoded bytes.
fn inner_kind(prefix: &[u8]) -> Option<Kind> {
    use std::io::Read;
    let mut dec = zstd::stream::read::Decoder::new(prefix).ok()?;
    let mut head = vec![0u8; sniff::SNIFF_LEN];
    let mut got = 0;
    while got < head.len() {
        match dec.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    sniff::kind(&head[..got])
}

/// Receives the stream read from `input` into `args.dataset`: sniffs it,
/// decodes and verifies it in-process, feeds `zfs recv`, checks the result.
pub fn receive_from(args: &Args, zfs: &Zfs, caps: &Caps, input: OwnedFd) -> anyhow::Result<Exit> {
    let mut meter_cfg = args.meter.config()?;
    meter_cfg.tool = "zrecv-wrap".into();
    if meter_cfg.name.is_none() {
        meter_cfg.name = Some(args.dataset.clone());
    }
    let buffered = meter_cfg.buffer_blocks().is_some();
    let recv_flags = args.recv_args(caps)?;
    let cancel = Cancel::new();
    let prefix = read_prefix(&input, zpipe_core::DEFAULT_BLOCK_SIZE, &cancel)?;
    if prefix.is_empty() {
        return Err(exit::integrity(
            "no input: the stream is empty (did the sender fail?)",
        ));
    }
    let outer = sniff::kind(&prefix).ok_or_else(|| {
        exit::usage("input is not a zsend-wrap stream, zstd, or a ZFS send stream")
    })?;
    let inner = match outer {
        Kind::Zstd => inner_kind(&prefix).ok_or_else(|| {
            exit::usage("the zstd stream holds neither a zsend-wrap stream nor a ZFS send stream")
        })?,
        k => k,
    };
    if inner == Kind::Zstd {
        return Err(exit::usage("the stream is compressed twice"));
    }
    if inner == Kind::Zfs && !args.allow_unverified {
        return Err(exit::usage(
            "input is a bare ZFS stream without zpipe-verify framing: it cannot be verified end \
             to end (send it with zsend-wrap, or pass --allow-unverified)",
        ));
    }

    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    let decompress = zpipe_compress::DecompressConfig::default();
    if outer == Kind::Zstd {
        stages.push(Box::new(zpipe_compress::DecompressStage::new(
            decompress.clone(),
        )?));
    }
    if inner == Kind::Framed {
        let (stage, _digest) =
            zpipe_verify::DecodeStage::new(zpipe_verify::VerifyConfig::default());
        stages.push(Box::new(stage));
    }
    let follower = Arc::new(Mutex::new(Follower::new()));
    stages.push(Box::new(Watch {
        follower: Arc::clone(&follower),
    }));
    let (meter, meter_handle) =
        zpipe_meter::MeterStage::new(meter_cfg, zpipe_meter::ProgressTarget::Stderr, &cancel)?;
    stages.push(Box::new(meter));

    let mut argv = zfs.argv(["receive"]);
    argv.extend(recv_flags);
    argv.push(args.dataset.clone().into());
    let mut child = Child::spawn(&argv, Io::Pipe, Io::Inherit, false)?;
    let stdin = child.take_stdin().context("zfs receive stdin")?;
    // Read one frame per block where the stream has frames, so the
    // decompressor and the decoder use blocks in place.
    let mut source = FdSource::new(input).with_prefix(prefix);
    match outer {
        Kind::Zstd => {
            let framing = zpipe_compress::SizeFrames::for_config(&decompress);
            source = source.with_framing(Box::new(framing));
        }
        Kind::Framed => {
            source = source.with_framing(Box::new(zpipe_verify::RecordFraming::default()))
        }
        Kind::Zfs => {}
    }
    let sink = zsend_wrap::send::output_sink(&meter_handle, OwnedFd::from(stdin), buffered, false)?;
    let result = pipeline::run(
        &PipelineConfig {
            block_size: READ_BLOCK_SIZE,
            ..PipelineConfig::default()
        },
        Box::new(source),
        stages,
        sink,
        &cancel,
    );
    let _ = meter_handle.finish(result.as_ref().map(|_| ()));
    // zfs recv sees end of input either way: after the whole verified stream,
    // or after the verified prefix of a broken one (then it fails, and with
    // -s keeps what it has for a resume).
    let recv_result = child.check();
    let resumable = caps.resumable() && !args.no_resumable;
    let token_hint = || -> Option<String> {
        if !resumable {
            return None;
        }
        let token = zfs.resume_token(&args.dataset).ok().flatten()?;
        Some(token)
    };
    // The first real error: a broken pipe into zfs recv is only the echo of
    // zfs recv's own failure, so that one is reported instead.
    let failure = match (result, recv_result) {
        (Err(e), Err(r)) if exit::is_broken_pipe(&e) => Some(r),
        (Err(e), _) => Some(e),
        (Ok(()), Err(r)) => Some(r),
        (Ok(()), Ok(())) => None,
    };
    if let Some(e) = failure {
        if let Some(t) = token_hint() {
            print_resume_hint(&args.dataset, &t);
        }
        return Err(e);
    }
    let follower = follower.lock().unwrap_or_else(|e| e.into_inner()).clone();
    check_received(args, zfs, &follower)?;
    Ok(Exit::Success)
}

fn print_resume_hint(dataset: &str, token: &str) {
    eprintln!("zrecv-wrap: the receive into {dataset} was interrupted and can be resumed");
    eprintln!("zrecv-wrap: resume token: {token}");
    eprintln!(
        "zrecv-wrap: resume with: zsend-wrap -t {} | zrecv-wrap {}",
        zpipe_core::child::quote_word(token),
        zpipe_core::child::quote_word(dataset)
    );
}

/// After a successful receive: the stream was a complete ZFS stream, and
/// the snapshot it announced exists with the announced guid.
fn check_received(args: &Args, zfs: &Zfs, follower: &Follower) -> anyhow::Result<()> {
    if !follower.is_complete() {
        return Err(exit::integrity(format!(
            "zfs recv succeeded but the stream was not a complete ZFS stream: {}",
            follower.describe_incomplete()
        )));
    }
    let Some((toguid, toname)) = sniff::proof_snapshot(follower.substreams()) else {
        return Err(exit::integrity("the received stream names no snapshot"));
    };
    let Some(name) =
        sniff::received_name(&args.dataset, toname, args.discard_pool, args.last_element)
    else {
        return Err(exit::integrity(format!(
            "the stream names '{toname}', not a snapshot"
        )));
    };
    let guid = zfs.guid(&name).map_err(|e| {
        exit::integrity(format!(
            "zfs recv succeeded but {name} does not exist: {}",
            exit::one_line(&e)
        ))
    })?;
    if guid != toguid {
        return Err(exit::integrity(format!(
            "received {name} has guid {guid}, but the stream announced {toguid}"
        )));
    }
    Ok(())
}
