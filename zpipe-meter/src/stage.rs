//! [`MeterStage`]: the meter as a `zpipe_core::pipeline::Stage`, for the
//! wrappers that run zfs, compression and ssh in one process, and the
//! [`MeterHandle`] they keep to set the size and read the final stats.
//!
//! The stage counts each block, paces it through the token bucket, and
//! passes it on unchanged. It cannot see descriptors, so its stall watchdog
//! runs on the meter's control thread: when no block moved for
//! `--stall-timeout` it fails the pipeline's token with a stall error naming
//! the side (blocked handing a block downstream → "downstream not reading",
//! otherwise "no input"). `--buffer` is not applied by the stage (a stage
//! thread cannot decouple its input from its output): end the pipeline with
//! [`MeterHandle::buffer_sink`], a `Sink` with its own writer thread.

use crate::config::MeterConfig;
use crate::limiter::TokenBucket;
use crate::meter::{Meter, ProgressTarget, Shared};
use crate::passthrough::{send, write_side, WatchBoth, FILL_POLL};
use crate::report::Stats;
use crossbeam_channel::{bounded, Sender};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use zpipe_core::cancel::Cancel;
use zpipe_core::pipeline::{Emitter, Sink, Stage};
use zpipe_core::pool::{Block, BlockPool};

/// The meter as a pipeline stage.
pub struct MeterStage {
    shared: Arc<Shared>,
    bucket: TokenBucket,
}

/// The wrapper's side of a [`MeterStage`]: size, live stats, final stats.
pub struct MeterHandle {
    meter: Mutex<Meter>,
}

impl std::fmt::Debug for MeterStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterStage").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MeterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterHandle").finish_non_exhaustive()
    }
}

impl MeterStage {
    /// Starts a meter that reports to `progress`; `cancel` is the pipeline's
    /// token, which the stall watchdog fails. Fails if `--limit-file`
    /// cannot be read.
    pub fn new(
        cfg: MeterConfig,
        progress: ProgressTarget,
        cancel: &Cancel,
    ) -> anyhow::Result<(MeterStage, MeterHandle)> {
        let meter = Meter::start(cfg, progress, Some(cancel.clone()))?;
        let stage = MeterStage {
            shared: meter.shared.clone(),
            bucket: TokenBucket::new(),
        };
        Ok((
            stage,
            MeterHandle {
                meter: Mutex::new(meter),
            },
        ))
    }
}

impl Stage for MeterStage {
    fn process(&mut self, block: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        let sh = &self.shared;
        sh.touch();
        let len = block.len();
        let cancel = out.cancel().clone();
        self.bucket.pace(
            len,
            || sh.limit(),
            &cancel,
            |_, _| {
                sh.touch();
                Ok(())
            },
        )?;
        sh.emitting.store(true, Relaxed);
        let res = out.emit(block);
        sh.emitting.store(false, Relaxed);
        res?;
        sh.moved(len);
        Ok(())
    }
}

impl MeterHandle {
    /// Sets the expected size (e.g. from `zfs send -nvP`); 0 or an absurd
    /// value (> 2^60) means unknown.
    pub fn set_size(&self, size: u64) {
        self.lock().shared.set_size(size);
    }

    /// The statistics so far (`exit` reads "success", `reason` "running").
    pub fn stats(&self) -> Stats {
        self.lock().stats_now()
    }

    /// Ends the meter after the pipeline returned `outcome`: prints the
    /// summary (unless quiet or failed), writes `--json`, returns the stats.
    pub fn finish(&self, outcome: Result<(), &anyhow::Error>) -> anyhow::Result<Stats> {
        self.lock().finish(outcome)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pipeline `Sink` that writes to a descriptor through the meter's
/// `--buffer`: blocks are copied into the meter's own pool (bounded by
/// `--buffer`) and a writer thread drains them with the `--fill`
/// watermark, so a bursty consumer (ssh, `zfs recv`) does not stall the
/// pipeline. Use it after a [`MeterStage`] of the same handle: the stage
/// counts and limits, this sink shows the fill level and watches the
/// output for stalls.
pub struct BufferSink {
    shared: Arc<Shared>,
    pool: BlockPool,
    tx: Option<Sender<Block>>,
    eof: Arc<AtomicBool>,
    local: Cancel,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for BufferSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferSink").finish_non_exhaustive()
    }
}

impl MeterHandle {
    /// A [`BufferSink`] writing to `output`, when `--buffer` was given.
    pub fn buffer_sink(&self, output: OwnedFd) -> anyhow::Result<Option<BufferSink>> {
        let shared = self.lock().shared.clone();
        let Some(blocks) = shared.cfg.buffer_blocks() else {
            return Ok(None);
        };
        zpipe_core::fdio::grow_pipe(output.as_fd(), shared.cfg.pipe_size);
        let pool = BlockPool::new(shared.cfg.block_size, blocks);
        let (tx, rx) = bounded::<Block>(blocks);
        let eof = Arc::new(AtomicBool::new(false));
        let local = Cancel::new();
        let writer = {
            let (shared, eof, local) = (shared.clone(), eof.clone(), local.clone());
            std::thread::Builder::new()
                .name("meter-buffer".into())
                .spawn(move || {
                    let res = write_side(
                        &shared,
                        output.as_fd(),
                        rx,
                        blocks,
                        &eof,
                        &local,
                        &local,
                        false,
                    );
                    if let Err(e) = res {
                        local.fail(e);
                    }
                })?
        };
        Ok(Some(BufferSink {
            shared,
            pool,
            tx: Some(tx),
            eof,
            local,
            writer: Some(writer),
        }))
    }
}

impl BufferSink {
    /// The writer thread's error: it has failed (or is failing) when its
    /// token is cancelled or its channel closed, so wait for it to record
    /// the error first.
    fn writer_error(&mut self) -> anyhow::Error {
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
        self.local
            .take_error()
            .unwrap_or_else(|| zpipe_core::cancel::Cancelled.into())
    }

    fn close(&mut self) {
        self.eof.store(true, Relaxed);
        self.tx = None;
    }

    fn queue(&mut self, block: Block, cancel: &Cancel) -> Result<(), ()> {
        let watch = WatchBoth {
            outer: cancel,
            local: &self.local,
        };
        let mut copy = loop {
            if let Some(b) = self.pool.try_get() {
                break b;
            }
            watch.check().map_err(|_| ())?;
            std::thread::sleep(FILL_POLL);
        };
        copy.vec_mut().extend_from_slice(block.data());
        drop(block);
        self.shared.fill_add(copy.len() as u64);
        let tx = self.tx.as_ref().ok_or(())?;
        send(tx, copy, &watch).map_err(|_| ())
    }
}

impl Sink for BufferSink {
    fn write_block(&mut self, block: Block, cancel: &Cancel) -> anyhow::Result<()> {
        if self.local.is_cancelled() {
            return Err(self.writer_error());
        }
        match self.queue(block, cancel) {
            Ok(()) => Ok(()),
            // The pipeline is being stopped from elsewhere.
            Err(()) if cancel.is_cancelled() && !self.local.is_cancelled() && self.tx.is_some() => {
                Err(zpipe_core::cancel::Cancelled.into())
            }
            Err(()) => Err(self.writer_error()),
        }
    }

    fn finish(&mut self, _cancel: &Cancel) -> anyhow::Result<()> {
        self.close();
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
        match self.local.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for BufferSink {
    fn drop(&mut self) {
        // Not finished: the pipeline failed; stop the writer, do not drain.
        if self.writer.is_some() {
            self.local.cancel();
            self.close();
            if let Some(t) = self.writer.take() {
                let _ = t.join();
            }
        }
    }
}
