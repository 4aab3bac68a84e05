//! `zpipe-meter`'s data path between two descriptors.
//!
//! Without `--buffer` the bytes never enter user space: the copy is
//! `zpipe_core::splice::copy` (splice(2) where the kernel allows it, a
//! read/write loop where not) with the meter's hooks, which count bytes
//! (`moved`), pace them through the token bucket (`grant`) and run the
//! stall watchdog (`idle`). With `--buffer` a reader thread fills pooled
//! blocks from the input and a writer thread drains them to the output, so
//! memory is `--buffer` (rounded up to whole blocks) and never more.
//! `--fill PCT` holds the writer back until the buffer is that full, input
//! ended, or every block is in use; each time the buffer runs empty the
//! writer waits for the fill level again (mbuffer's start watermark).

use crate::config::MeterConfig;
use crate::meter::{Hooks, InputHooks, Meter, ProgressTarget, Shared};
use crate::report::Stats;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use rustix::event::PollFlags;
use rustix::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use zpipe_core::cancel::{Cancel, Cancelled, POLL_INTERVAL};
use zpipe_core::fdio;
use zpipe_core::pool::{Block, BlockPool};
use zpipe_core::splice::{self, CopyHooks, CopyOptions};

/// How often a writer waiting for `--fill` looks at the fill level.
pub const FILL_POLL: Duration = Duration::from_millis(5);

/// Copies `input` to `output` with the meter, progress on stderr; returns
/// the final statistics (also written to `--json`).
pub fn run_passthrough(
    cfg: &MeterConfig,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    cancel: &Cancel,
) -> anyhow::Result<Stats> {
    run_passthrough_to(cfg, input, output, cancel, ProgressTarget::Stderr)
}

/// Like [`run_passthrough`] with progress sent to `target`.
pub fn run_passthrough_to(
    cfg: &MeterConfig,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    cancel: &Cancel,
    target: ProgressTarget,
) -> anyhow::Result<Stats> {
    let mut meter = Meter::start(cfg.clone(), target, None)?;
    let shared = meter.shared.clone();
    let result = if cfg.buffer.is_some() {
        buffered(&shared, input, output, cancel)
    } else {
        direct(&shared, input, output, cancel)
    };
    match result {
        Ok(()) => meter.finish(Ok(())),
        Err(e) => {
            let e = e.context(format!("stopped after {} bytes", shared.bytes()));
            // The transfer error is the one to report, even if --json fails too.
            let _ = meter.finish(Err(&e));
            Err(e)
        }
    }
}

fn direct(
    shared: &Shared,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    let opts = CopyOptions {
        pipe_size: shared.cfg.pipe_size,
        chunk: shared.cfg.block_size,
        no_splice: shared.cfg.no_splice,
    };
    let mut hooks = Hooks::new(shared, cancel);
    let splice_used =
        !opts.no_splice && splice::splice_possible(fdio::fd_kind(input), fdio::fd_kind(output));
    match splice::copy(input, output, &opts, &mut hooks, cancel) {
        Ok(st) => {
            shared.spliced.store(st.spliced, Relaxed);
            Ok(())
        }
        Err(e) => {
            // The copy's own count is lost with the error; splice moves
            // everything once it has started, so all bytes are spliced ones.
            if splice_used {
                shared.spliced.store(shared.bytes(), Relaxed);
            }
            Err(e)
        }
    }
}

fn buffered(
    shared: &Shared,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    let blocks = shared.cfg.buffer_blocks().unwrap_or(1);
    let pool = BlockPool::new(shared.cfg.block_size, blocks);
    let (tx, rx) = bounded::<Block>(blocks);
    fdio::grow_pipe(input, shared.cfg.pipe_size);
    fdio::grow_pipe(output, shared.cfg.pipe_size);
    let eof = AtomicBool::new(false);
    // A private token, so one side's failure stops the other without
    // touching the caller's token; the caller's cancellation still counts.
    let local = Cancel::new();
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let res = read_side(shared, input, &pool, tx, cancel, &local);
            eof.store(true, Relaxed);
            if let Err(e) = res {
                local.fail(e);
            }
        });
        if let Err(e) = write_side(shared, output, rx, blocks, &eof, cancel, &local, true) {
            local.fail(e);
        }
        let _ = reader.join();
    });
    match local.take_error() {
        Some(e) => Err(e),
        None => {
            cancel.check()?;
            Ok(())
        }
    }
}

/// A token that is cancelled when either the caller's or the local one is.
fn either(outer: &Cancel, local: &Cancel) -> Result<(), Cancelled> {
    outer.check()?;
    local.check()
}

fn read_side(
    shared: &Shared,
    input: BorrowedFd<'_>,
    pool: &BlockPool,
    tx: Sender<Block>,
    outer: &Cancel,
    local: &Cancel,
) -> anyhow::Result<()> {
    let mut hooks = InputHooks::new(shared);
    let bs = pool.block_size();
    // fdio waits check one token: mirror the caller's into the local one.
    let watch = WatchBoth { outer, local };
    loop {
        let mut block = pool.get(local)?;
        watch.check()?;
        // The first read waits for input; later ones take only what is
        // already there, so a slow trickle is sent on, not held back.
        let mut ended = false;
        loop {
            let first = block.is_empty();
            if !first
                && (block.len() >= bs || !fdio::wait_ready(input, PollFlags::IN, Duration::ZERO)?)
            {
                break;
            }
            let n = block.read_some(input, local, &mut WatchIdle(&mut hooks, &watch))?;
            if n == 0 {
                ended = true;
                break;
            }
        }
        let n = block.len();
        if n > 0 {
            hooks.got(n);
            send(&tx, block, &watch)?;
        }
        if ended {
            return Ok(());
        }
    }
}

pub(crate) struct WatchBoth<'a> {
    pub(crate) outer: &'a Cancel,
    pub(crate) local: &'a Cancel,
}

impl WatchBoth<'_> {
    pub(crate) fn check(&self) -> Result<(), Cancelled> {
        either(self.outer, self.local)
    }
}

/// Idle hook that also ends the wait when the caller's token is cancelled.
struct WatchIdle<'a, 'b>(&'a mut dyn fdio::Idle, &'a WatchBoth<'b>);

impl fdio::Idle for WatchIdle<'_, '_> {
    fn idle(&mut self, side: fdio::Side, waited: Duration) -> anyhow::Result<()> {
        self.1.check()?;
        self.0.idle(side, waited)
    }
}

pub(crate) fn send(tx: &Sender<Block>, block: Block, watch: &WatchBoth<'_>) -> anyhow::Result<()> {
    let mut b = block;
    loop {
        match tx.send_timeout(b, POLL_INTERVAL) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(back)) => {
                watch.check()?;
                b = back;
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(Cancelled.into()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn write_side(
    shared: &Shared,
    output: BorrowedFd<'_>,
    rx: Receiver<Block>,
    blocks: usize,
    eof: &AtomicBool,
    outer: &Cancel,
    local: &Cancel,
    counting: bool,
) -> anyhow::Result<()> {
    let watch = WatchBoth { outer, local };
    let capacity = shared.cfg.buffer.unwrap_or(0);
    let threshold = capacity * u64::from(shared.cfg.fill) / 100;
    let mut waiting = threshold > 0;
    let mut hooks = if counting {
        Hooks::new(shared, local)
    } else {
        Hooks::watch_only(shared, local)
    };
    let mut writer = fdio::Writer::new(output);
    loop {
        if waiting {
            while shared.fill() < threshold && !eof.load(Relaxed) && rx.len() < blocks {
                watch.check()?;
                std::thread::sleep(FILL_POLL);
            }
            waiting = false;
        }
        let block = match rx.recv_timeout(POLL_INTERVAL) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => {
                watch.check()?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let data = block.data();
        let mut off = 0;
        while off < data.len() {
            let g = hooks.grant(data.len() - off)?;
            writer.write_all(
                &data[off..off + g],
                local,
                &mut WatchIdle(&mut hooks, &watch),
            )?;
            hooks.moved(g);
            off += g;
        }
        shared.fill_sub(data.len() as u64);
        drop(block);
        if threshold > 0 && rx.is_empty() && !eof.load(Relaxed) {
            waiting = true;
        }
    }
}
