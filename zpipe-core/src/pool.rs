//! Fixed-capacity byte blocks handed out by a bounded, reusable pool.
//!
//! A [`BlockPool`] owns at most `count` buffers of `block_size` bytes,
//! allocated lazily; a [`Block`] returns its buffer to the pool when dropped.
//! Waiting for a free block is how a fast producer is held back, so memory
//! is bounded by `count × block_size`, never by the input's size.
//!
//! A pool may give its blocks headroom: bytes kept free before the data, so
//! a later stage can put a header in front in place (the verify framing
//! does) instead of copying the data behind it. Reads go into a block's
//! spare capacity ([`Block::read_from`]), so blocks are not zero-filled
//! before every use.
//!
//! A large block's data starts on a page boundary ([`ALIGN`]), as pipe
//! buffers do: the kernel's copies between a pipe and user memory run at a
//! fraction of their speed on some CPUs (AMD Zen's `rep movsb`) when the two
//! sides are not aligned alike. Measured here: reading a pipe into blocks
//! at page+16 (malloc's alignment) cost 3.5x the kernel time of reading
//! into page-aligned ones. The alignment is a free pad in front of the
//! headroom, so the buffers stay plain `Vec<u8>`s (no `unsafe`).

use crate::cancel::{Cancel, Cancelled, POLL_INTERVAL};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Where a large block's data starts: a multiple of this (a page).
pub const ALIGN: usize = 4096;

/// Blocks smaller than this are not aligned (the pad would cost more than
/// the copies it speeds up).
pub const ALIGN_MIN_BLOCK: usize = 64 * 1024;

/// A bounded pool of reusable byte buffers.
#[derive(Clone, Debug)]
pub struct BlockPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    /// Free buffers, most recently freed last: reused first, while still
    /// in the CPU's caches (a FIFO would cycle through every block).
    free: Mutex<Vec<Vec<u8>>>,
    /// Signalled when a buffer is freed or may be allocated again.
    freed: Condvar,
    block_size: usize,
    headroom: usize,
    count: usize,
    allocated: AtomicUsize,
}

/// One pooled buffer; its bytes are `data()`, its capacity the pool's block size.
#[derive(Debug)]
pub struct Block {
    /// Headroom (`..start`) then data (`start..`).
    buf: Vec<u8>,
    start: usize,
    home: Arc<PoolInner>,
}

impl PoolInner {
    /// The free list (a panic elsewhere cannot leave it inconsistent).
    fn lock_free(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pad that puts data at `ptr + pad + headroom` on an [`ALIGN`] boundary.
    fn pad_for(&self, ptr: *const u8) -> usize {
        if self.block_size < ALIGN_MIN_BLOCK {
            return 0;
        }
        let at = (ptr as usize).wrapping_add(self.headroom);
        at.wrapping_neg() % ALIGN
    }

    /// A new buffer with room for its alignment pad, headroom and a block.
    /// The pad depends on where the allocator puts the buffer, known only
    /// after allocating: allocate room for any pad, then give back what
    /// this one does not need (allocators shrink in place), so a block
    /// costs pad + headroom + block and no more. Should the allocator move it, [`PoolInner::data_start`] still finds
    /// the pad or, without room for it, uses the buffer unaligned: slower
    /// copies, same bytes.
    fn allocate(&self) -> Vec<u8> {
        let want = self.headroom + self.block_size;
        if self.block_size < ALIGN_MIN_BLOCK {
            return Vec::with_capacity(want);
        }
        let mut buf: Vec<u8> = Vec::with_capacity(want + ALIGN - 1);
        let pad = self.pad_for(buf.as_ptr());
        buf.shrink_to(pad + want);
        buf
    }

    /// Where data starts in `buf`: after the pad that aligns it, when the
    /// buffer has room for that pad, and the headroom.
    fn data_start(&self, buf: &Vec<u8>) -> usize {
        let pad = self.pad_for(buf.as_ptr());
        let room = buf
            .capacity()
            .saturating_sub(self.headroom + self.block_size);
        if pad <= room {
            pad + self.headroom
        } else {
            self.headroom
        }
    }
}

impl BlockPool {
    /// A pool of at most `count` blocks of `block_size` bytes each.
    pub fn new(block_size: usize, count: usize) -> Self {
        Self::with_headroom(block_size, count, 0)
    }

    /// Like [`BlockPool::new`], each block keeping `headroom` bytes free in
    /// front of its `block_size` bytes of data (see [`Block::expose_headroom`]).
    pub fn with_headroom(block_size: usize, count: usize, headroom: usize) -> Self {
        let count = count.max(1);
        BlockPool {
            inner: Arc::new(PoolInner {
                free: Mutex::new(Vec::with_capacity(count)),
                freed: Condvar::new(),
                block_size,
                headroom,
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
            let free = self.inner.lock_free();
            if free.is_empty() {
                // Woken by a freed block; the timeout re-checks `cancel`.
                let _ = self.inner.freed.wait_timeout(free, POLL_INTERVAL);
            }
        }
    }

    /// An empty block if one is free or may still be allocated.
    pub fn try_get(&self) -> Option<Block> {
        if let Some(buf) = self.inner.lock_free().pop() {
            return Some(self.wrap(buf));
        }
        let inner = &self.inner;
        let mut n = inner.allocated.load(Ordering::Relaxed);
        while n < inner.count {
            match inner
                .allocated
                .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.wrap(inner.allocate())),
                Err(actual) => n = actual,
            }
        }
        None
    }

    fn wrap(&self, mut buf: Vec<u8>) -> Block {
        let start = self.inner.data_start(&buf);
        buf.clear();
        buf.resize(start, 0);
        Block {
            buf,
            start,
            home: Arc::clone(&self.inner),
        }
    }
}

impl Block {
    /// How many blocks of this block's pool a stage downstream may keep at
    /// once (hashing, or holding one back): half of the pool. A stage that
    /// kept them all would leave the source without a block to read into
    /// while the stage waited for input from it: a deadlock.
    pub fn keep_limit(&self) -> usize {
        self.home.count / 2
    }

    /// The bytes held.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The bytes held, for rewriting in place.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    /// Number of bytes held.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True when the block holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pool's block size: how much this block is meant to hold.
    pub fn capacity(&self) -> usize {
        self.home.block_size
    }

    /// Free bytes in front of the data.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Makes the last `n` bytes of the headroom part of the data (zeros
    /// unless written before), e.g. to fill in a header in front of it.
    /// Panics if `n` exceeds [`Block::headroom`].
    pub fn expose_headroom(&mut self, n: usize) {
        assert!(n <= self.start, "exposing more than the headroom");
        self.start -= n;
    }

    /// The buffer itself (data only: any headroom is given up), for stages
    /// that fill or rewrite it. Growing it past the block size works but
    /// costs memory the pool does not account for.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// Appends `data` after the bytes held (the headroom and alignment stay).
    pub fn append(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Drops the first `n` bytes held (they become headroom), e.g. a header
    /// a stage has read, leaving the rest in place. Panics if `n` exceeds
    /// [`Block::len`].
    pub fn consume_front(&mut self, n: usize) {
        assert!(n <= self.len(), "consuming more than the block holds");
        self.start += n;
    }

    /// Makes the block hold exactly `len` bytes, zero-filling new space, and
    /// returns them for writing.
    pub fn resize(&mut self, len: usize) -> &mut [u8] {
        self.buf.resize(self.start + len, 0);
        self.data_mut()
    }

    /// Appends what one read of `fd` gives (waiting for input first), up
    /// to the block size; returns the bytes added (0: end of input, or the
    /// block already full).
    pub fn read_some(
        &mut self,
        fd: rustix::fd::BorrowedFd<'_>,
        cancel: &Cancel,
        idle: &mut dyn crate::fdio::Idle,
    ) -> anyhow::Result<usize> {
        let want = self.start + self.home.block_size;
        crate::fdio::read_some_into(fd, &mut self.buf, want, cancel, idle)
    }

    /// Appends what `fd` gives until the block holds its block size or the
    /// input ends; returns the bytes added (0: end of input). Reads go
    /// straight into the spare capacity, nothing is zero-filled first.
    pub fn read_from(
        &mut self,
        fd: rustix::fd::BorrowedFd<'_>,
        cancel: &Cancel,
        idle: &mut dyn crate::fdio::Idle,
    ) -> anyhow::Result<usize> {
        self.fill_to(fd, self.home.block_size, cancel, idle)
    }

    /// Appends what `fd` gives until the block holds `len` bytes (growing
    /// past the block size if `len` is larger) or the input ends; returns
    /// the bytes added, fewer than asked only at the end of input.
    pub fn fill_to(
        &mut self,
        fd: rustix::fd::BorrowedFd<'_>,
        len: usize,
        cancel: &Cancel,
        idle: &mut dyn crate::fdio::Idle,
    ) -> anyhow::Result<usize> {
        let want = self.start + len;
        let mut added = 0;
        while self.buf.len() < want {
            let n = crate::fdio::read_some_into(fd, &mut self.buf, want, cancel, idle)?;
            if n == 0 {
                break;
            }
            added += n;
        }
        Ok(added)
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // Buffers that grew far beyond the block size are not kept.
        let home = &self.home;
        let normal = home.headroom.saturating_add(home.block_size);
        if self.buf.capacity() <= normal.saturating_mul(2) {
            home.lock_free().push(std::mem::take(&mut self.buf));
        } else {
            // Dropped, so another may be allocated in its place.
            home.allocated.fetch_sub(1, Ordering::SeqCst);
        }
        home.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

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
    fn the_last_freed_block_is_reused_first() {
        let pool = BlockPool::new(16, 3);
        let c = Cancel::new();
        let (a, b) = (pool.get(&c).unwrap(), pool.get(&c).unwrap());
        let (pa, pb) = (a.buf.as_ptr(), b.buf.as_ptr());
        drop(a);
        drop(b);
        assert_eq!(pool.get(&c).unwrap().buf.as_ptr(), pb);
        drop(pool.get(&c).unwrap());
        let _x = pool.get(&c).unwrap();
        assert_eq!(pool.get(&c).unwrap().buf.as_ptr(), pa);
    }

    #[test]
    fn a_block_that_grew_is_replaced_not_lost() {
        let pool = BlockPool::new(16, 1);
        let c = Cancel::new();
        let mut a = pool.get(&c).unwrap();
        a.vec_mut().extend_from_slice(&[0u8; 1000]);
        drop(a);
        // Not kept, yet the pool may allocate its one block again.
        let b = pool.get(&c).unwrap();
        assert!(b.buf.capacity() < 1000);
        assert_eq!(pool.allocated(), 1);
    }

    #[test]
    fn a_waiting_get_wakes_when_a_block_is_freed() {
        let pool = BlockPool::new(16, 1);
        let c = Cancel::new();
        let held = pool.get(&c).unwrap();
        let p2 = pool.clone();
        let c2 = c.clone();
        let t = std::thread::spawn(move || p2.get(&c2).is_ok());
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(held);
        assert!(t.join().unwrap());
    }

    #[test]
    fn waiting_for_a_block_stops_on_cancel() {
        let pool = BlockPool::new(16, 1);
        let c = Cancel::new();
        let _held = pool.get(&c).unwrap();
        c.cancel();
        assert!(pool.get(&c).is_err());
    }

    #[test]
    fn headroom_is_kept_in_front_and_can_be_exposed() {
        let pool = BlockPool::with_headroom(8, 1, 4);
        let c = Cancel::new();
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"0123456789").unwrap();
        drop(w);
        let mut b = pool.get(&c).unwrap();
        assert_eq!((b.headroom(), b.len()), (4, 0));
        let n = b
            .read_from(r.as_fd(), &c, &mut crate::fdio::NoIdle)
            .unwrap();
        assert_eq!(
            (n, b.data()),
            (8, &b"01234567"[..]),
            "reads stop at the block size"
        );
        b.expose_headroom(2);
        b.data_mut()[..2].copy_from_slice(b"hd");
        assert_eq!(b.data(), b"hd01234567");
        assert_eq!(
            b.vec_mut().as_slice(),
            b"hd01234567",
            "vec_mut gives up the rest of the headroom"
        );
        drop(b);
        // A reused block is empty again, with its headroom back, and reads
        // only what the input still has.
        let mut b = pool.get(&c).unwrap();
        assert_eq!((b.headroom(), b.len()), (4, 0));
        let n = b
            .read_from(r.as_fd(), &c, &mut crate::fdio::NoIdle)
            .unwrap();
        assert_eq!((n, b.data()), (2, &b"89"[..]));
        assert_eq!(
            b.read_from(r.as_fd(), &c, &mut crate::fdio::NoIdle)
                .unwrap(),
            0
        );
    }

    #[test]
    fn large_blocks_start_on_a_page_and_read_there() {
        let c = Cancel::new();
        for headroom in [0, 16, 4096 + 24] {
            let pool = BlockPool::with_headroom(1 << 20, 3, headroom);
            let blocks: Vec<Block> = (0..3).map(|_| pool.get(&c).unwrap()).collect();
            for b in &blocks {
                assert_eq!(b.data().as_ptr() as usize % ALIGN, 0, "headroom {headroom}");
                assert!(b.headroom() >= headroom);
            }
            drop(blocks);
            // Reused, a block is still aligned and reads land there, with
            // no reallocation (the capacity already holds pad + block).
            let (r, w) = rustix::pipe::pipe().unwrap();
            rustix::io::write(&w, &[7u8; 5000]).unwrap();
            drop(w);
            let mut b = pool.get(&c).unwrap();
            let at = b.data().as_ptr() as usize;
            assert_eq!(at % ALIGN, 0);
            let n = b
                .read_from(r.as_fd(), &c, &mut crate::fdio::NoIdle)
                .unwrap();
            assert_eq!((n, b.data().as_ptr() as usize), (5000, at));
            assert!(b.data().iter().all(|&x| x == 7));
            // The capacity is exactly pad + headroom + block: the unused
            // part of the room for any pad was given back.
            let front = b.headroom();
            assert_eq!(b.vec_mut().capacity(), front + (1 << 20));
        }
        // Small blocks get no pad.
        let b = BlockPool::with_headroom(64, 1, 8).get(&c).unwrap();
        assert_eq!(b.headroom(), 8);
    }

    #[test]
    fn fill_to_grows_past_the_block_size_and_stops_at_end_of_input() {
        let c = Cancel::new();
        let pool = BlockPool::new(4, 1);
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"0123456789").unwrap();
        drop(w);
        let mut b = pool.get(&c).unwrap();
        let n = b
            .fill_to(r.as_fd(), 6, &c, &mut crate::fdio::NoIdle)
            .unwrap();
        assert_eq!((n, b.data()), (6, &b"012345"[..]));
        let n = b
            .fill_to(r.as_fd(), 20, &c, &mut crate::fdio::NoIdle)
            .unwrap();
        assert_eq!((n, b.data()), (4, &b"0123456789"[..]));
    }
}
