//! The binary's input: a [`Source`] that reads straight into the blocks'
//! spare capacity (no zero-filling), and that, for decompression, cuts the
//! input at pzstd size frames so each block holds exactly one announced
//! frame — the [`DecompressStage`](crate::DecompressStage) then hands that
//! block to a worker as is instead of copying the frame out of 1 MiB blocks.
//!
//! Reads go through `std::io::Read::take(..).read_to_end`, which fills
//! uninitialised capacity safely. Before each block the source waits for
//! input with the core's cancellable poll; within a block a read may block
//! until the writer upstream sends more or closes (as `zstd`'s reads do).

use crate::format::{self, SIZE_FRAME_LEN};
use anyhow::Context;
use rustix::fd::{AsFd, OwnedFd};
use std::io::Read;
use zpipe_core::cancel::Cancel;
use zpipe_core::fdio::{self, NoIdle, Side};
use zpipe_core::pipeline::Source;
use zpipe_core::pool::{Block, BlockPool};

/// Reads a descriptor into blocks of the pool's size, or one frame each.
pub struct DirectSource {
    file: std::fs::File,
    /// Largest announced frame read into one block (0 = not frame-aware).
    max_frame: usize,
    eof: bool,
}

impl DirectSource {
    /// Plain blocks of the pool's block size.
    pub fn new(fd: OwnedFd) -> Self {
        DirectSource {
            file: std::fs::File::from(fd),
            max_frame: 0,
            eof: false,
        }
    }

    /// Blocks cut at pzstd size frames for frames up to `max_frame` bytes.
    pub fn frame_aware(fd: OwnedFd, max_frame: usize) -> Self {
        DirectSource {
            max_frame,
            ..DirectSource::new(fd)
        }
    }

    /// Appends up to `want` bytes to `v`; false at end of input.
    fn fill(&mut self, v: &mut Vec<u8>, want: usize) -> anyhow::Result<bool> {
        let goal = v.len() + want;
        while v.len() < goal {
            let n = (&self.file)
                .take((goal - v.len()) as u64)
                .read_to_end(v)
                .context("reading input")?;
            if n == 0 {
                self.eof = true;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Source for DirectSource {
    fn next_block(&mut self, pool: &BlockPool, cancel: &Cancel) -> anyhow::Result<Option<Block>> {
        if self.eof {
            return Ok(None);
        }
        fdio::wait_cancellable(self.file.as_fd(), Side::Input, cancel, &mut NoIdle)?;
        let mut b = pool.get(cancel)?;
        let size = pool.block_size();
        let v = b.vec_mut();
        if self.max_frame > 0 && self.fill(v, SIZE_FRAME_LEN)? {
            match format::read_size_frame(v) {
                Some(n) if n > 0 && (n as usize) <= self.max_frame => {
                    v.reserve(n as usize);
                    self.fill(v, n as usize)?;
                }
                _ => {
                    self.fill(v, size.saturating_sub(SIZE_FRAME_LEN))?;
                }
            }
        } else if !self.eof {
            self.fill(v, size)?;
        }
        Ok(if b.is_empty() { None } else { Some(b) })
    }
}
