//! A sink that lends its blocks' pages to a pipe instead of copying them.
//!
//! `write(2)` copies every byte into fresh pipe pages, and the reader copies
//! them out again. `vmsplice(2)` puts references to the block's own pages
//! into the pipe, so only the reader's copy is left. The price: a block's
//! memory must not change until the reader has copied it out. [`LendSink`]
//! therefore keeps every block it lent and gives it back to its pool only
//! when the bytes still queued in the pipe (FIONREAD) show that the reader
//! is past the block's end; when it is dropped with blocks still lent, it
//! leaks them rather than let anyone write to pages a reader may yet copy.
//!
//! Lend only to a pipe whose reader copies with `read(2)`, such as ssh: a
//! reader that splice(2)s the pages onwards still holds them after the pipe
//! is empty. zsend-wrap lends only to the ssh it runs itself, and the
//! SHA-256 frames inside the stream would reject a changed byte anyway.
//! Set [`NO_LEND_ENV`] to copy instead (for comparisons).

use crate::cancel::Cancel;
use crate::fdio::{self, Side};
use crate::pipeline::{FdSink, Sink};
use crate::pool::Block;
use anyhow::Context;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::pipe::{IoSliceRaw, SpliceFlags};
use std::collections::VecDeque;
use std::io;
use std::time::Duration;

/// Set (to anything) to make [`LendSink`] copy with `write(2)` instead.
pub const NO_LEND_ENV: &str = "ZPIPE_NO_VMSPLICE";

/// Blocks smaller than this are copied: lending them saves little and
/// would keep more blocks out of their pools.
pub const LEND_MIN: usize = 64 << 10;

/// Most blocks lent at once. Upstream pools hold at least five blocks
/// (zsend-wrap's smallest, the compressor's output pool), so two lent
/// still leave them enough to work with.
pub const MAX_LENT: usize = 2;

/// How often a sink waiting for the reader to finish a lent block looks.
const LEND_POLL: Duration = Duration::from_micros(100);

/// A [`Sink`] writing to a pipe with `vmsplice(2)` (see the module docs).
pub struct LendSink {
    /// The descriptor, its idle hook, and the copying path.
    out: FdSink,
    /// Lent blocks and the stream offset where each ends.
    lent: VecDeque<(u64, Block)>,
    /// Bytes queued into the pipe so far.
    written: u64,
    /// False once the pipe refused vmsplice (or [`NO_LEND_ENV`]): copy.
    lending: bool,
}

impl LendSink {
    /// Writes to the pipe `fd`, sized as [`FdSink::new`] sizes it.
    pub fn new(fd: OwnedFd) -> Self {
        LendSink {
            out: FdSink::new(fd),
            lent: VecDeque::new(),
            written: 0,
            lending: std::env::var_os(NO_LEND_ENV).is_none(),
        }
    }

    /// Blocks currently lent (for tests).
    pub fn lent(&self) -> usize {
        self.lent.len()
    }

    /// Gives back the blocks the reader has copied out.
    fn reclaim(&mut self) {
        if self.lent.is_empty() {
            return;
        }
        let Ok(queued) = rustix::io::ioctl_fionread(&self.out.fd) else {
            return;
        };
        let consumed = self.written.saturating_sub(queued);
        while self.lent.front().is_some_and(|(end, _)| *end <= consumed) {
            self.lent.pop_front();
        }
    }

    /// True when the pipe has no reader any more: nothing will copy the
    /// lent pages, so they may be reused.
    fn reader_gone(&self) -> bool {
        let mut fds = [PollFd::new(&self.out.fd, PollFlags::OUT)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
            && fds[0].revents().contains(PollFlags::ERR)
    }

    /// Waits until at most `n` blocks are lent (or the reader is gone).
    fn wait_lent(&mut self, n: usize, cancel: &Cancel) -> anyhow::Result<()> {
        loop {
            self.reclaim();
            if self.lent.len() <= n {
                return Ok(());
            }
            if self.reader_gone() {
                self.lent.clear();
                return Ok(());
            }
            cancel.check()?;
            std::thread::sleep(LEND_POLL);
        }
    }

    /// Lends `data` to the pipe; `Ok(false)` when the pipe refuses
    /// vmsplice before taking a byte (the caller copies instead).
    fn lend(&mut self, data: &[u8], cancel: &Cancel) -> anyhow::Result<bool> {
        let mut off = 0;
        while off < data.len() {
            let iov = [IoSliceRaw::from_slice(&data[off..])];
            // SAFETY: vmsplice leaves references to these pages in the
            // pipe. The caller keeps the block that owns them in `lent`
            // until FIONREAD shows the reader has copied them out, drops
            // it only then (or when the reader is gone), and leaks it if
            // the sink goes away first: the pages are not written while
            // the pipe can still hand them to a reader.
            #[allow(unsafe_code)]
            let r = unsafe { rustix::pipe::vmsplice(&self.out.fd, &iov, SpliceFlags::NONBLOCK) };
            match r {
                Ok(0) => {
                    return Err(io::Error::from(io::ErrorKind::WriteZero)).context("writing output")
                }
                Ok(n) => off += n,
                Err(Errno::AGAIN) => {
                    fdio::wait_cancellable(
                        self.out.fd.as_fd(),
                        Side::Output,
                        cancel,
                        self.out.idle.as_mut(),
                    )?;
                }
                Err(Errno::INTR) => {}
                Err(Errno::INVAL | Errno::NOSYS | Errno::BADF) if off == 0 && self.written == 0 => {
                    return Ok(false);
                }
                Err(e) => return Err(io::Error::from(e)).context("writing output"),
            }
        }
        Ok(true)
    }
}

impl Sink for LendSink {
    fn write_block(&mut self, block: Block, cancel: &Cancel) -> anyhow::Result<()> {
        let len = block.len() as u64;
        if self.lending && block.len() >= LEND_MIN {
            self.wait_lent(MAX_LENT - 1, cancel)?;
            if self.lend(block.data(), cancel)? {
                self.written += len;
                self.lent.push_back((self.written, block));
                self.reclaim();
                return Ok(());
            }
            self.lending = false;
        }
        self.out.write_block(block, cancel)?;
        self.written += len;
        self.reclaim();
        Ok(())
    }

    fn finish(&mut self, cancel: &Cancel) -> anyhow::Result<()> {
        self.wait_lent(0, cancel)
    }
}

impl Drop for LendSink {
    fn drop(&mut self) {
        self.reclaim();
        if !self.reader_gone() {
            // A reader may still copy these pages: never let them be reused.
            for (_, block) in self.lent.drain(..) {
                std::mem::forget(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::BlockPool;
    use std::io::Read;

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe().unwrap()
    }

    fn block(pool: &BlockPool, fill: u8, len: usize) -> Block {
        let mut b = pool.get(&Cancel::new()).unwrap();
        b.vec_mut().resize(len, fill);
        b
    }

    #[test]
    fn a_reader_gets_every_byte_and_blocks_come_back_after_it_read_them() {
        let (r, w) = pipe();
        let pool = BlockPool::new(1 << 20, 4);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::fs::File::from(r).read_to_end(&mut all).unwrap();
            all
        });
        let mut sink = LendSink::new(w);
        let cancel = Cancel::new();
        let mut want = Vec::new();
        for i in 0..40u8 {
            let len = [1 << 20, 100, 300_000, 70_000][i as usize % 4];
            let b = block(&pool, i, len);
            want.extend_from_slice(b.data());
            sink.write_block(b, &cancel).unwrap();
            assert!(sink.lent() <= MAX_LENT);
        }
        sink.finish(&cancel).unwrap();
        assert_eq!(sink.lent(), 0);
        drop(sink);
        let got = reader.join().unwrap();
        assert!(
            got == want,
            "{} bytes read, {} written",
            got.len(),
            want.len()
        );
        // Every block is back in its pool.
        for _ in 0..4 {
            assert!(pool.try_get().is_some());
        }
    }

    #[test]
    fn a_lent_block_stays_out_of_its_pool_until_read() {
        let (r, w) = pipe();
        let pool = BlockPool::new(256 << 10, 2);
        let mut sink = LendSink::new(w);
        let cancel = Cancel::new();
        sink.write_block(block(&pool, 7, 256 << 10), &cancel)
            .unwrap();
        // Nobody read it: the block is lent, the pool has one left.
        assert_eq!(sink.lent(), 1);
        let spare = pool.try_get().expect("the other block");
        assert!(pool.try_get().is_none());
        drop(spare);
        let mut buf = vec![0u8; 256 << 10];
        std::fs::File::from(r).read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 7));
        sink.finish(&cancel).unwrap();
        assert_eq!(sink.lent(), 0);
        assert!(pool.try_get().is_some() && pool.try_get().is_some());
    }

    #[test]
    fn a_gone_reader_ends_the_wait_and_the_write_fails_as_a_broken_pipe() {
        let (r, w) = pipe();
        let pool = BlockPool::new(256 << 10, 4);
        let mut sink = LendSink::new(w);
        let cancel = Cancel::new();
        sink.write_block(block(&pool, 1, 256 << 10), &cancel)
            .unwrap();
        drop(r);
        sink.finish(&cancel).unwrap();
        let e = sink
            .write_block(block(&pool, 2, 256 << 10), &cancel)
            .unwrap_err();
        assert!(crate::exit::is_broken_pipe(&e), "{e:#}");
    }

    #[test]
    fn a_file_is_written_by_copying() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let f = std::fs::File::create(&path).unwrap();
        let pool = BlockPool::new(256 << 10, 2);
        let mut sink = LendSink::new(OwnedFd::from(f));
        let cancel = Cancel::new();
        sink.write_block(block(&pool, 3, 200 << 10), &cancel)
            .unwrap();
        sink.write_block(block(&pool, 4, 100 << 10), &cancel)
            .unwrap();
        sink.finish(&cancel).unwrap();
        assert_eq!(sink.lent(), 0);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 300 << 10);
        assert!(got[..200 << 10].iter().all(|&b| b == 3));
    }
}
