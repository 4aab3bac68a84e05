//! Fixed-capacity byte blocks handed out by a bounded, reusable pool.
//!
//! A [`BlockPool`] owns at most `count` buffers of `block_size` bytes,
//! allocated lazily; a [`Block`] returns its buffer to the pool when dropped.
//! Waiting for a free block is how a fast producer is held back, so memory
//! is bounded by `count × block_size`, never by the input's size.

use crate::cancel::{Cancel, Cancelled, POLL_INTERVAL};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A bounded pool of reusable byte buffers.
#[derive(Clone, Debug)]
pub struct BlockPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    block_size: usize,
    count: usize,
    allocated: AtomicUsize,
}

/// One pooled buffer; its bytes are `data()`, its capacity the pool's block size.
#[derive(Debug)]
pub struct Block {
    buf: Vec<u8>,
    home: Sender<Vec<u8>>,
    block_size: usize,
}

impl BlockPool {
    /// A pool of at most `count` blocks of `block_size` bytes each.
    pub fn new(block_size: usize, count: usize) -> Self {
        let count = count.max(1);
        let (free_tx, free_rx) = bounded(count);
        BlockPool {
            inner: Arc::new(PoolInner {
                free_tx,
                free_rx,
                block_size,
                count,
                allocated: AtomicUsize::new(0),
            }),
        }
    }

    /// Capacity of each block in bytes.
    pub fn block_size(&self) -> usize {
        self.inner.block_size
    }

    /// The most blocks this pool will ever hold.
    pub fn count(&self) -> usize {
        self.inner.count
    }

    /// How many blocks have been allocated so far (for memory tests).
    pub fn allocated(&self) -> usize {
        self.inner.allocated.load(Ordering::Relaxed)
    }

    /// An empty block, waiting while all blocks are in use; `Err` when the
    /// token is cancelled first.
    pub fn get(&self, cancel: &Cancel) -> Result<Block, Cancelled> {
        loop {
            if let Some(b) = self.try_get() {
                return Ok(b);
            }
            cancel.check()?;
            if let Ok(buf) = self.inner.free_rx.recv_timeout(POLL_INTERVAL) {
                return Ok(self.wrap(buf));
            }
        }
    }

    /// An empty block if one is free or may still be allocated.
    pub fn try_get(&self) -> Option<Block> {
        if let Ok(buf) = self.inner.free_rx.try_recv() {
            return Some(self.wrap(buf));
        }
        let inner = &self.inner;
        let mut n = inner.allocated.load(Ordering::Relaxed);
        while n < inner.count {
            match inner
                .allocated
                .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.wrap(Vec::with_capacity(inner.block_size))),
                Err(actual) => n = actual,
            }
        }
        None
    }

    fn wrap(&self, mut buf: Vec<u8>) -> Block {
        buf.clear();
        Block {
            buf,
            home: self.inner.free_tx.clone(),
            block_size: self.inner.block_size,
        }
    }
}

impl Block {
    /// The bytes held.
    pub fn data(&self) -> &[u8] {
        &self.buf
    }

    /// Number of bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when the block holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The pool's block size: how much this block is meant to hold.
    pub fn capacity(&self) -> usize {
        self.block_size
    }

    /// The buffer itself, for stages that fill or rewrite it. Growing it past
    /// the block size works but costs memory the pool does not account for.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Makes the block hold exactly `len` bytes, zero-filling new space, and
    /// returns them for writing (e.g. as a read buffer).
    pub fn resize(&mut self, len: usize) -> &mut [u8] {
        self.buf.resize(len, 0);
        &mut self.buf
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // Buffers that grew far beyond the block size are not kept.
        if self.buf.capacity() <= self.block_size.saturating_mul(2) {
            let _ = self.home.try_send(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_and_bounded() {
        let pool = BlockPool::new(16, 2);
        let c = Cancel::new();
        let a = pool.get(&c).unwrap();
        let b = pool.get(&c).unwrap();
        assert!(pool.try_get().is_none());
        drop(a);
        let mut a2 = pool.try_get().unwrap();
        assert!(a2.is_empty());
        a2.vec_mut().extend_from_slice(b"hello");
        assert_eq!(a2.data(), b"hello");
        drop(b);
        drop(a2);
        assert_eq!(pool.allocated(), 2);
    }

    #[test]
    fn waiting_for_a_block_stops_on_cancel() {
        let pool = BlockPool::new(16, 1);
        let c = Cancel::new();
        let _held = pool.get(&c).unwrap();
        c.cancel();
        assert!(pool.get(&c).is_err());
    }
}
