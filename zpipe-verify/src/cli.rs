//! The `zpipe-verify` command line: flags, and the encode, decode, test and
//! ZFS-check runs on standard input and output.

use crate::format::{Digest, MAX_FRAME_LEN};
use crate::zfs;
use crate::{Decoder, Encoder, VerifyConfig};
use anyhow::Context;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use rustix::fd::{AsFd, OwnedFd};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use zpipe_core::exit::{integrity, usage};
use zpipe_core::Cancel;
use zpipe_core::{fdio, Exit};

const ABOUT: &str =
    "End-to-end framing with SHA-256 per frame, and a strict ZFS send stream checker";

const LONG_ABOUT: &str = "\
End-to-end framing with SHA-256 per frame, and a strict ZFS send stream checker.

Without -d, zpipe-verify reads a byte stream on standard input and writes it \
framed: a header, then data frames each carrying a sequence number, its \
length and the SHA-256 of its payload, then an END trailer with the total \
bytes, the frame count and a digest over all frames. With -d it checks such \
a stream and writes the original bytes; a frame's bytes are written only \
after that frame verified, so a damaged, reordered, duplicated, dropped or \
truncated stream never reaches the receiver past the first bad frame. The \
wire format is specified in docs/FORMAT.md.

When the input is a ZFS send stream, the encoder follows its records; if the \
stream stops before its final END record (a `zfs send` that died), the \
trailer is ABORT instead of END, the receiver fails, and the encoder exits 2.

Put it innermost, around the raw stream, so that it covers every stage \
between sender and receiver:

  zfs send pool/fs@snap | zpipe-verify | zstd | ssh host 'zstd -d | zpipe-verify -d | zfs recv -s pool/fs'";

const AFTER_HELP: &str = "\
Exit status:
  0  the stream was framed, or verified completely (END trailer matched)
  1  bad flags or values
  2  integrity failure: bad checksum, frame out of sequence, truncated \
stream or missing END, trailing data, ABORT from the sender (its message is \
shown), or an incomplete ZFS stream while encoding
  3  I/O error reading input or writing output (a closed pipe included)

Errors are one line naming the frame number, the byte offset in the framed \
stream and what was wrong.";

/// The flags of `zpipe-verify`.
#[derive(Debug, Parser)]
#[command(
    name = "zpipe-verify",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
struct Args {
    /// Decode: verify the framed stream on stdin and write the original bytes.
    #[arg(short = 'd', long = "decode", action = ArgAction::SetTrue)]
    decode: bool,

    /// Test: verify the framed stream on stdin and write nothing (implies -d).
    #[arg(short = 't', long = "test", action = ArgAction::SetTrue)]
    test: bool,

    /// Check a ZFS send stream strictly, record by record (types, order,
    /// lengths, checksums, the final END). Alone: check a raw (unframed)
    /// stream on stdin and print what it holds. With -d or -t: also check
    /// the stream carried inside the framing, failing before a bad record
    /// is written (with -t the summary is printed).
    #[arg(long = "zfs", action = ArgAction::SetTrue)]
    zfs: bool,

    /// Write the whole-stream digest line to FILE once the stream ended with
    /// END (encode) or verified completely (decode); both ends write the
    /// same line for the same stream.
    #[arg(long = "digest-file", value_name = "FILE")]
    digest_file: Option<PathBuf>,

    /// Payload bytes per frame when encoding (1 byte to 16M).
    #[arg(short = 'B', long = "frame-size", value_name = "SIZE", default_value = "1M",
          value_parser = zpipe_core::parse::nonzero_size)]
    frame_size: u64,

    /// Hashing threads; 0 means one per core.
    #[arg(short = 'T', long = "threads", value_name = "N", default_value_t = 0)]
    threads: usize,

    /// Frame plain bytes even when they look like a ZFS send stream (no
    /// ABORT for an incomplete ZFS stream).
    #[arg(long = "no-follow-zfs", action = ArgAction::SetTrue)]
    no_follow_zfs: bool,
}

/// The command-line interface of `zpipe-verify`.
pub fn command() -> clap::Command {
    Args::command()
}

/// Runs `zpipe-verify` with parsed arguments.
pub fn run(matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    let args = Args::from_arg_matches(&matches).map_err(|e| usage(e.to_string()))?;
    if args.frame_size > MAX_FRAME_LEN as u64 {
        return Err(usage(format!(
            "--frame-size {} is larger than the format's limit of {MAX_FRAME_LEN} bytes (16M)",
            args.frame_size
        )));
    }
    let cfg = VerifyConfig {
        frame_size: args.frame_size as usize,
        workers: args.threads,
        follow_zfs: !args.no_follow_zfs,
    };
    let input = Stdio::new(rustix::io::dup(fdio::stdin_fd()).context("duplicating stdin")?);
    fdio::grow_pipe(fdio::stdin_fd(), fdio::DEFAULT_PIPE_SIZE);
    if args.zfs && !(args.decode || args.test) {
        if args.digest_file.is_some() {
            return Err(usage(
                "--digest-file needs framing: use it without --zfs, or with -d/-t",
            ));
        }
        let summary = zfs::check_stream(input)?;
        print_summary(&summary)?;
        return Ok(Exit::Success);
    }
    let digest = if args.decode || args.test {
        let decoder = Decoder::new(input, &cfg);
        let sink: Box<dyn Write> = if args.test {
            Box::new(std::io::sink())
        } else {
            Box::new(stdout()?)
        };
        let mut tap = ZfsTap {
            out: sink,
            checker: args
                .zfs
                .then(|| zfs::Checker::new(zfs::CheckOptions::default())),
            failed: None,
        };
        let result = decoder.decode_to(&mut tap);
        if let Some(e) = tap.failed.take() {
            return Err(integrity(format!("carried ZFS stream: {e}")));
        }
        let digest = result?;
        if let Some(checker) = tap.checker.take() {
            let summary = checker
                .finish()
                .map_err(|e| integrity(format!("carried ZFS stream: {e}")))?;
            if args.test {
                print_summary(&summary)?;
            }
        }
        digest
    } else {
        let mut input = input;
        let mut enc = Encoder::new(stdout()?, &cfg)?;
        enc.copy_from(&mut input)?;
        enc.finish()?
    };
    if let Some(path) = &args.digest_file {
        write_digest(path, &digest)?;
    }
    Ok(Exit::Success)
}

/// Passes verified payload on, checking it as a ZFS stream first when asked:
/// a bad record stops the output before it is written.
struct ZfsTap {
    out: Box<dyn Write>,
    checker: Option<zfs::Checker>,
    failed: Option<zfs::ZfsError>,
}

impl Write for ZfsTap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(c) = self.checker.as_mut() {
            if let Err(e) = c.feed(buf) {
                self.failed = Some(e);
                return Err(std::io::Error::other(
                    "the carried ZFS stream failed its check",
                ));
            }
        }
        self.out.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn print_summary(s: &zfs::Summary) -> anyhow::Result<()> {
    let mut text = s.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    stdout()?
        .write_all(text.as_bytes())
        .context("writing output")
}

fn stdout() -> anyhow::Result<Stdio> {
    fdio::grow_pipe(fdio::stdout_fd(), fdio::DEFAULT_PIPE_SIZE);
    Ok(Stdio::new(
        rustix::io::dup(fdio::stdout_fd()).context("duplicating stdout")?,
    ))
}

/// Standard input or output read and written through `fdio`'s polling
/// waits, which look at the process's SIGINT/SIGTERM every
/// [`POLL_INTERVAL`](zpipe_core::cancel::POLL_INTERVAL): a signal ends the
/// tool at once even while it waits on a slow peer, instead of after the
/// signal watcher's grace.
struct Stdio {
    fd: OwnedFd,
    cancel: Cancel,
}

impl Stdio {
    fn new(fd: OwnedFd) -> Stdio {
        Stdio {
            fd,
            cancel: Cancel::new(),
        }
    }
}

/// An `fdio` error as an `io::Error`, keeping the I/O cause (a broken
/// pipe stays a broken pipe).
fn to_io(e: anyhow::Error) -> std::io::Error {
    match e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
        Some(io) => std::io::Error::new(io.kind(), zpipe_core::exit::one_line(&e)),
        None => std::io::Error::other(zpipe_core::exit::one_line(&e)),
    }
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        fdio::read_some(self.fd.as_fd(), buf, &self.cancel, &mut fdio::NoIdle).map_err(to_io)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        fdio::Writer::new(self.fd.as_fd())
            .write_all(buf, &self.cancel, &mut fdio::NoIdle)
            .map_err(to_io)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_digest(path: &PathBuf, d: &Digest) -> anyhow::Result<()> {
    let mut f = File::create(path)
        .with_context(|| format!("--digest-file: creating {}", path.display()))?;
    f.write_all(d.line().as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("--digest-file: writing {}", path.display()))
}
