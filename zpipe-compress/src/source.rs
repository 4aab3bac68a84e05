//! The decompressor's input: a [`Source`] that cuts the input at pzstd size
//! frames, so each block holds exactly one announced frame — the
//! [`DecompressStage`](crate::DecompressStage) then hands that block to a
//! worker as is instead of copying the frame out of 1 MiB blocks. Input
//! without size frames is read in plain blocks of the pool's size.
//!
//! Reads go into the blocks' spare capacity through the core's cancellable
//! [`Block::fill_to`], so blocks are not zero-filled and keep the pool's
//! page alignment.

use crate::format::{self, SIZE_FRAME_LEN};
use rustix::fd::{AsFd, OwnedFd};
use zpipe_core::cancel::Cancel;
use zpipe_core::fdio::{self, NoIdle};
use zpipe_core::pipeline::Source;
use zpipe_core::pool::{Block, BlockPool};

/// Reads a descriptor into blocks of one announced frame each (frames up
/// to `max_frame` bytes), or of the pool's block size.
pub struct FrameSource {
    fd: OwnedFd,
    max_frame: usize,
    eof: bool,
}

impl FrameSource {
    /// Blocks cut at pzstd size frames for frames up to `max_frame` bytes.
    pub fn new(fd: OwnedFd, max_frame: usize) -> Self {
        fdio::grow_pipe(fd.as_fd(), fdio::DEFAULT_PIPE_SIZE);
        FrameSource {
            fd,
            max_frame,
            eof: false,
        }
    }

    /// Fills `b` to `len` bytes; notes the end of input when it comes first.
    fn fill(&mut self, b: &mut Block, len: usize, cancel: &Cancel) -> anyhow::Result<()> {
        b.fill_to(self.fd.as_fd(), len, cancel, &mut NoIdle)?;
        if b.len() < len {
            self.eof = true;
        }
        Ok(())
    }
}

impl Source for FrameSource {
    fn next_block(&mut self, pool: &BlockPool, cancel: &Cancel) -> anyhow::Result<Option<Block>> {
        if self.eof {
            return Ok(None);
        }
        let mut b = pool.get(cancel)?;
        let size = pool.block_size();
        self.fill(&mut b, SIZE_FRAME_LEN.min(size), cancel)?;
        if !self.eof {
            let frame = format::read_size_frame(b.data())
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0 && n <= self.max_frame);
            let len = match frame {
                Some(n) => SIZE_FRAME_LEN + n,
                None => size,
            };
            self.fill(&mut b, len, cancel)?;
        }
        Ok(if b.is_empty() { None } else { Some(b) })
    }
}
