//! The decompressor's input framing: cut at pzstd size frames, so each
//! block holds exactly one announced frame — the
//! [`DecompressStage`](crate::DecompressStage) then hands that block to a
//! worker as is instead of copying the frame out of 1 MiB blocks. Input
//! without size frames is read in plain blocks of the pool's size.

use crate::format::{self, SIZE_FRAME_LEN};
use crate::DecompressConfig;
use zpipe_core::pipeline::Framing;

/// [`Framing`] by pzstd size frames: a unit is a size frame and the frame
/// it announces, for frames up to `max_frame` bytes.
pub struct SizeFrames {
    /// Largest announced frame read into one block.
    pub max_frame: usize,
}

impl SizeFrames {
    /// Units of the frames `cfg`'s decompressor decodes whole (up to its
    /// region limit).
    pub fn for_config(cfg: &DecompressConfig) -> Self {
        SizeFrames {
            max_frame: usize::try_from(cfg.region_limit()).unwrap_or(usize::MAX),
        }
    }
}

impl Framing for SizeFrames {
    fn head_len(&self) -> usize {
        SIZE_FRAME_LEN
    }

    fn unit_len(&mut self, head: &[u8]) -> Option<usize> {
        format::read_size_frame(head)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0 && n <= self.max_frame)
            .map(|n| SIZE_FRAME_LEN + n)
    }
}
