//! Pass-through copy from one descriptor to another, zero-copy where the
//! kernel allows it.
//!
//! [`copy`] uses splice(2) when either end is a pipe and the other is a
//! pipe, file or socket, with `SPLICE_F_NONBLOCK` so that waits go through
//! poll and stay cancellable; anything the kernel refuses on the first call
//! (EINVAL, ENOSYS…) falls back to read/write through one buffer. Pipes on
//! either end are grown with F_SETPIPE_SZ first. Bytes are counted on both
//! paths, and [`CopyStats`] says which path moved them.

use crate::cancel::Cancel;
use crate::fdio::{self, FdKind, Idle, Side};
use anyhow::Context;
use rustix::fd::BorrowedFd;
use rustix::io::Errno;
use rustix::pipe::SpliceFlags;
use std::io;
use std::time::{Duration, Instant};

/// Settings for [`copy`].
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Pipe capacity to ask for on pipe ends (F_SETPIPE_SZ).
    pub pipe_size: usize,
    /// Buffer size for the read/write fallback, and the most one splice call moves.
    pub chunk: usize,
    /// Never splice (for tests and for comparison runs).
    pub no_splice: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            pipe_size: fdio::DEFAULT_PIPE_SIZE,
            chunk: crate::DEFAULT_BLOCK_SIZE,
            no_splice: false,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes moved in all.
    pub bytes: u64,
    /// Bytes moved by splice(2).
    pub spliced: u64,
}

/// Hooks a copy calls: to ask how much it may move now (a rate limiter
/// sleeps here), to report bytes moved, and while it waits.
pub trait CopyHooks: Idle {
    /// May block; returns how many of `want` bytes may move now (≥ 1).
    fn grant(&mut self, want: usize) -> anyhow::Result<usize> {
        Ok(want)
    }
    /// Called after `n` bytes moved.
    fn moved(&mut self, _n: usize) {}
}

/// Hooks that count nothing and never wait.
pub struct NoHooks;

impl Idle for NoHooks {
    fn idle(&mut self, _: Side, _: Duration) -> anyhow::Result<()> {
        Ok(())
    }
}

impl CopyHooks for NoHooks {}

/// True when splice(2) can be tried between these two kinds of descriptor.
pub fn splice_possible(input: FdKind, output: FdKind) -> bool {
    use FdKind::*;
    matches!(
        (input, output),
        (Pipe, Pipe | File | Socket) | (File | Socket, Pipe)
    )
}

/// Copies `input` to `output` until end of input.
pub fn copy(
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    opts: &CopyOptions,
    hooks: &mut dyn CopyHooks,
    cancel: &Cancel,
) -> anyhow::Result<CopyStats> {
    let kin = fdio::fd_kind(input);
    let kout = fdio::fd_kind(output);
    fdio::grow_pipe(input, opts.pipe_size);
    fdio::grow_pipe(output, opts.pipe_size);
    let mut stats = CopyStats::default();
    if !opts.no_splice && splice_possible(kin, kout) {
        match splice_loop(input, output, kin, kout, opts, hooks, cancel, &mut stats)? {
            SpliceEnd::Done => return Ok(stats),
            SpliceEnd::Unsupported => {}
        }
    }
    rw_loop(input, output, opts, hooks, cancel, &mut stats)?;
    Ok(stats)
}

enum SpliceEnd {
    Done,
    Unsupported,
}

#[allow(clippy::too_many_arguments)]
fn splice_loop(
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    kin: FdKind,
    kout: FdKind,
    opts: &CopyOptions,
    hooks: &mut dyn CopyHooks,
    cancel: &Cancel,
    stats: &mut CopyStats,
) -> anyhow::Result<SpliceEnd> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK | SpliceFlags::MORE;
    let mut waiting_since: Option<(Side, Instant)> = None;
    loop {
        cancel.check()?;
        let want = hooks.grant(opts.chunk)?.max(1);
        match rustix::pipe::splice(input, None, output, None, want, flags) {
            Ok(0) => return Ok(SpliceEnd::Done),
            Ok(n) => {
                waiting_since = None;
                stats.bytes += n as u64;
                stats.spliced += n as u64;
                hooks.moved(n);
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                // Find out which side is not ready, and wait on it.
                let side = if kin != FdKind::File
                    && !fdio::wait_ready(input, rustix::event::PollFlags::IN, Duration::ZERO)?
                {
                    Side::Input
                } else if kout != FdKind::File {
                    Side::Output
                } else {
                    Side::Input
                };
                let fd = if side == Side::Input { input } else { output };
                let flag = if side == Side::Input {
                    rustix::event::PollFlags::IN
                } else {
                    rustix::event::PollFlags::OUT
                };
                let since = match waiting_since {
                    Some((s, t)) if s == side => t,
                    _ => {
                        let now = Instant::now();
                        waiting_since = Some((side, now));
                        now
                    }
                };
                if !fdio::wait_ready(fd, flag, crate::cancel::POLL_INTERVAL)? {
                    hooks.idle(side, since.elapsed())?;
                }
            }
            Err(Errno::INVAL | Errno::NOSYS | Errno::BADF | Errno::SPIPE | Errno::OPNOTSUPP)
                if stats.spliced == 0 =>
            {
                return Ok(SpliceEnd::Unsupported);
            }
            Err(e) => {
                let side = if e == Errno::PIPE {
                    "writing output"
                } else {
                    "copying"
                };
                return Err(io::Error::from(e)).context(side);
            }
        }
    }
}

fn rw_loop(
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    opts: &CopyOptions,
    hooks: &mut dyn CopyHooks,
    cancel: &Cancel,
    stats: &mut CopyStats,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; opts.chunk.max(4096)];
    let mut writer = fdio::Writer::new(output);
    loop {
        let want = hooks.grant(buf.len())?.clamp(1, buf.len());
        let n = fdio::read_some(input, &mut buf[..want], cancel, hooks)?;
        if n == 0 {
            return Ok(());
        }
        writer.write_all(&buf[..n], cancel, hooks)?;
        stats.bytes += n as u64;
        hooks.moved(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use std::io::{Read, Write};

    fn pump(data: Vec<u8>, opts: CopyOptions) -> (Vec<u8>, CopyStats) {
        let (in_r, in_w) = rustix::pipe::pipe().unwrap();
        let (out_r, out_w) = rustix::pipe::pipe().unwrap();
        let feeder = std::thread::spawn(move || {
            let mut f = std::fs::File::from(in_w);
            f.write_all(&data).unwrap();
        });
        let drain = std::thread::spawn(move || {
            let mut f = std::fs::File::from(out_r);
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        });
        let stats = copy(
            in_r.as_fd(),
            out_w.as_fd(),
            &opts,
            &mut NoHooks,
            &Cancel::new(),
        )
        .unwrap();
        drop(out_w);
        feeder.join().unwrap();
        (drain.join().unwrap(), stats)
    }

    #[test]
    fn pipe_to_pipe_uses_splice() {
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7) as u8).collect();
        let (out, stats) = pump(data.clone(), CopyOptions::default());
        assert_eq!(out, data);
        assert_eq!(stats.bytes, data.len() as u64);
        assert_eq!(stats.spliced, stats.bytes);
    }

    #[test]
    fn read_write_path_counts_the_same() {
        let data: Vec<u8> = (0..1_048_577u32).map(|i| (i * 13) as u8).collect();
        let opts = CopyOptions {
            no_splice: true,
            ..CopyOptions::default()
        };
        let (out, stats) = pump(data.clone(), opts);
        assert_eq!(out, data);
        assert_eq!(stats.bytes, data.len() as u64);
        assert_eq!(stats.spliced, 0);
    }

    #[test]
    fn empty_input_copies_nothing() {
        let (out, stats) = pump(Vec::new(), CopyOptions::default());
        assert!(out.is_empty());
        assert_eq!(stats.bytes, 0);
    }
}
