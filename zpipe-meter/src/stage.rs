//! [`MeterStage`]: the meter as a `zpipe_core::pipeline::Stage`, for the
//! wrappers that run zfs, compression and ssh in one process, and the
//! [`MeterHandle`] they keep to set the size and read the final stats.
//!
//! The stage counts each block, paces it through the token bucket, and
//! passes it on unchanged. It cannot see descriptors, so its stall watchdog
//! runs on the meter's control thread: when no block moved for
//! `--stall-timeout` it fails the pipeline's token with a stall error naming
//! the side (blocked handing a block downstream → "downstream not reading",
//! otherwise "no input"). `--buffer` is not applied here: a stage cannot
//! decouple its input from its output; size the pipeline's pool instead
//! (`MeterConfig::buffer_blocks`).

use crate::config::MeterConfig;
use crate::limiter::TokenBucket;
use crate::meter::{Meter, ProgressTarget, Shared};
use crate::report::Stats;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use zpipe_core::cancel::Cancel;
use zpipe_core::pipeline::{Emitter, Stage};
use zpipe_core::pool::Block;

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
