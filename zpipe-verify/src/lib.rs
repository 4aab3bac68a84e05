//! zpipe-verify: end-to-end framing with SHA-256 per frame, and a strict
//! ZFS send stream checker.
//!
//! - [`format`](mod@format): the wire format of docs/FORMAT.md ([`MAGIC`],
//!   [`looks_like_framed`], records, the stream [`Digest`]).
//! - [`Encoder`] / [`EncodeStage`]: framing, with hashing on worker threads
//!   and ABORT instead of END for a cut ZFS stream or on request
//!   ([`AbortHandle`]).
//! - [`Decoder`] / [`DecodeStage`]: verification that hands on a frame's
//!   bytes only after the frame verified.
//! - [`zfs`]: the ZFS send stream follower and checker.
//! - [`command`] / [`run`]: the `zpipe-verify` command line.

mod cli;
mod decode;
mod encode;
pub mod format;
mod parser;
pub mod sha2x;
pub mod zfs;

pub use cli::{command, run};
pub use decode::{DecodeHandle, DecodeStage, Decoder, RecordFraming};
pub use encode::{AbortHandle, EncodeOutcome, EncodeStage, Encoder};
pub use format::{looks_like_framed, Digest, MAGIC};

/// Payload bytes hashed or queued at once, across frames in flight, beyond
/// which the hashing window stops growing (it never drops below two frames).
pub const IN_FLIGHT_BUDGET: usize = 16 << 20;

/// Settings of the encoder and decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// Payload bytes per data frame when encoding, 1 byte to 16 MiB
    /// (decoders take the size from the stream's header).
    pub frame_size: usize,
    /// Hashing worker threads; 0 means one per core.
    pub workers: usize,
    /// Follow a carried ZFS send stream while encoding, and end with ABORT
    /// instead of END when it stops short of its final END record.
    pub follow_zfs: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            frame_size: format::DEFAULT_FRAME_LEN,
            workers: 0,
            follow_zfs: true,
        }
    }
}

impl VerifyConfig {
    /// Checks the frame size bound (a usage error names it).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.frame_size == 0 || self.frame_size > format::MAX_FRAME_LEN {
            return Err(zpipe_core::exit::usage(format!(
                "frame size {} is outside 1..={} bytes",
                self.frame_size,
                format::MAX_FRAME_LEN
            )));
        }
        Ok(())
    }

    /// The number of hashing threads to start.
    pub fn worker_count(&self) -> usize {
        zpipe_core::par::workers_for(self.workers)
    }

    /// How many frames of `frame_len` bytes may be in flight at once.
    pub fn window(&self, frame_len: usize) -> usize {
        let by_workers = 2 * self.worker_count();
        let by_memory = IN_FLIGHT_BUDGET / frame_len.max(1);
        by_workers.min(by_memory).max(2)
    }
}

#[cfg(test)]
mod tests;
