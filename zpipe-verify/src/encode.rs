//! Encoding: [`Encoder`] frames bytes written to it (or read straight from a
//! `Read`) onto any `Write`; [`EncodeStage`] does the same as a pipeline
//! stage. Payloads are hashed on worker threads ([`OrderedPool`]) and
//! written in order. Frames carry exactly the configured frame size except
//! the last, so the framing (and the stream digest) does not depend on how
//! the input arrived.
//!
//! Both follow the carried bytes with [`zfs::Follower`](crate::zfs::Follower):
//! when the input is a ZFS send stream that stops short of its final END
//! record, the trailer is ABORT, not END, so the receiver fails loudly.

use crate::format::{
    self, DataHeader, Digest, Header, Record, StreamDigest, RECORD_LEN, SHA256_LEN,
};
use crate::sha2x;
use crate::zfs::Follower;
use crate::VerifyConfig;
use anyhow::Context;
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex};
use zpipe_core::cancel::Cancel;
use zpipe_core::par::OrderedPool;
use zpipe_core::pipeline::{Emitter, Stage};
use zpipe_core::pool::{Block, BlockPool};

/// The framing state shared by both encoders: sequence, offsets, digest and
/// the ZFS follower.
struct FrameState {
    header: Record,
    digest: StreamDigest,
    follower: Option<Follower>,
}

impl FrameState {
    fn new(cfg: &VerifyConfig) -> Self {
        let header = Header {
            max_frame_len: cfg.frame_size as u32,
        }
        .encode();
        FrameState {
            header,
            digest: StreamDigest::new(&header),
            follower: cfg.follow_zfs.then(Follower::new),
        }
    }

    fn follow(&mut self, data: &[u8]) {
        if let Some(f) = self.follower.as_mut() {
            if f.is_zfs() == Some(false) {
                self.follower = None;
            } else {
                f.feed(data);
            }
        }
    }

    /// The header record of the next frame, which carries `len` bytes
    /// hashing to `sha`.
    fn next_frame(&mut self, len: usize, sha: [u8; SHA256_LEN]) -> Record {
        let rec = DataHeader {
            len: len as u32,
            seq: self.digest.frames(),
            offset: self.digest.bytes(),
            sha,
        }
        .encode();
        self.digest.add(&rec, len as u32);
        rec
    }

    /// Why the stream must end with ABORT even though the caller did not
    /// abort: the carried ZFS stream is incomplete.
    fn incomplete_zfs(&self) -> Option<String> {
        let f = self.follower.as_ref()?;
        (f.is_zfs() == Some(true) && !f.is_complete()).then(|| {
            format!(
                "the carried ZFS send stream is incomplete: {}",
                f.describe_incomplete()
            )
        })
    }

    fn abort_records(&self, message: &str) -> (Record, Vec<u8>) {
        format::encode_abort(message, self.digest.frames(), self.digest.bytes())
    }
}

/// A frame buffer for [`Encoder`]: the header record's room, then payload.
/// The payload starts on a page boundary (the kernel copies into aligned
/// memory markedly faster), and the vector stays initialised at full size
/// so reuse costs no zero-fill.
struct EncBuf {
    data: Vec<u8>,
    /// Offset of the header record in `data`.
    at: usize,
    /// Payload bytes held.
    len: usize,
    /// Payload capacity: the frame size.
    cap: usize,
}

/// Alignment of payloads read by [`Encoder::copy_from`].
const PAYLOAD_ALIGN: usize = 4096;

impl EncBuf {
    fn new(frame_size: usize) -> Self {
        let data = vec![0; PAYLOAD_ALIGN + RECORD_LEN + frame_size];
        let misalign = (data.as_ptr() as usize + RECORD_LEN) % PAYLOAD_ALIGN;
        let at = (PAYLOAD_ALIGN - misalign) % PAYLOAD_ALIGN;
        EncBuf {
            data,
            at,
            len: 0,
            cap: frame_size,
        }
    }

    fn payload(&self) -> &[u8] {
        let p = self.at + RECORD_LEN;
        &self.data[p..p + self.len]
    }

    fn spare(&mut self) -> &mut [u8] {
        let p = self.at + RECORD_LEN;
        &mut self.data[p + self.len..p + self.cap]
    }

    fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// The header record's room followed by the payload: what is written.
    fn record_and_payload(&mut self) -> &mut [u8] {
        &mut self.data[self.at..self.at + RECORD_LEN + self.len]
    }
}

type Hashed<B> = (B, [u8; SHA256_LEN]);

/// Frames a byte stream onto a writer. Call [`finish`](Self::finish) (END)
/// or [`abort`](Self::abort) (ABORT) at the end; dropping it without either
/// leaves a stream every decoder rejects as truncated.
pub struct Encoder<W: Write> {
    out: W,
    frame_size: usize,
    state: FrameState,
    pool: OrderedPool<EncBuf, Hashed<EncBuf>>,
    cur: Option<EncBuf>,
    free: Vec<EncBuf>,
    cancel: Cancel,
}

impl<W: Write> Encoder<W> {
    /// Starts a stream on `out`, writing its header.
    pub fn new(mut out: W, cfg: &VerifyConfig) -> anyhow::Result<Self> {
        cfg.validate()?;
        let state = FrameState::new(cfg);
        out.write_all(&state.header).context("writing output")?;
        let pool = OrderedPool::new_paired(
            cfg.worker_count(),
            cfg.window(cfg.frame_size),
            |b: EncBuf| {
                let sha = format::sha256(b.payload());
                (b, sha)
            },
            |a: EncBuf, b: EncBuf| {
                let (sa, sb) = sha2x::pair(a.payload(), b.payload());
                ((a, sa), (b, sb))
            },
        );
        Ok(Encoder {
            out,
            frame_size: cfg.frame_size,
            state,
            pool,
            cur: None,
            free: Vec::new(),
            cancel: Cancel::new(),
        })
    }

    fn write_frame(&mut self, (mut b, sha): Hashed<EncBuf>) -> anyhow::Result<()> {
        let rec = self.state.next_frame(b.len, sha);
        let frame = b.record_and_payload();
        frame[..RECORD_LEN].copy_from_slice(&rec);
        self.out.write_all(frame).context("writing output")?;
        b.len = 0;
        self.free.push(b);
        Ok(())
    }

    fn submit_current(&mut self) -> anyhow::Result<()> {
        let Some(b) = self.cur.take() else {
            return Ok(());
        };
        if b.len == 0 {
            self.cur = Some(b);
            return Ok(());
        }
        while !self.pool.has_room() {
            if let Some(r) = self.pool.next(&self.cancel)? {
                self.write_frame(r)?;
            }
        }
        self.pool.submit(b, &self.cancel)?;
        while let Some(r) = self.pool.try_next() {
            self.write_frame(r)?;
        }
        Ok(())
    }

    fn current(&mut self) -> &mut EncBuf {
        let size = self.frame_size;
        let free = &mut self.free;
        self.cur
            .get_or_insert_with(|| free.pop().unwrap_or_else(|| EncBuf::new(size)))
    }

    /// Frames all of `data`.
    pub fn write_all(&mut self, mut data: &[u8]) -> anyhow::Result<()> {
        while !data.is_empty() {
            let b = self.current();
            let spare = b.spare();
            let n = spare.len().min(data.len());
            spare[..n].copy_from_slice(&data[..n]);
            b.len += n;
            let full = b.is_full();
            self.state.follow(&data[..n]);
            data = &data[n..];
            if full {
                self.submit_current()?;
            }
        }
        Ok(())
    }

    /// Frames everything `reader` yields until its end, reading straight
    /// into frame buffers; returns the number of bytes read.
    pub fn copy_from<R: Read>(&mut self, reader: &mut R) -> anyhow::Result<u64> {
        let mut total = 0u64;
        loop {
            let b = self.current();
            let start = b.at + RECORD_LEN + b.len;
            let n = match reader.read(b.spare()) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading input"),
            };
            b.len += n;
            let full = b.is_full();
            total += n as u64;
            let cur = self.cur.as_ref().expect("current buffer");
            self.state.follow(&cur.data[start..start + n]);
            if full {
                self.submit_current()?;
            }
        }
    }

    fn flush_frames(&mut self) -> anyhow::Result<()> {
        self.submit_current()?;
        while let Some(r) = self.pool.next(&self.cancel)? {
            self.write_frame(r)?;
        }
        Ok(())
    }

    /// Writes the pending frames and the END trailer, and flushes. When the
    /// input was an incomplete ZFS send stream it writes ABORT instead and
    /// returns an integrity error saying so.
    pub fn finish(mut self) -> anyhow::Result<Digest> {
        self.flush_frames()?;
        if let Some(why) = self.state.incomplete_zfs() {
            self.write_abort(&why)?;
            return Err(zpipe_core::exit::integrity(format!(
                "{why}; wrote an ABORT trailer"
            )));
        }
        let digest = self.state.digest.value();
        self.out
            .write_all(&digest.encode_end())
            .context("writing output")?;
        self.out.flush().context("writing output")?;
        Ok(digest)
    }

    /// Writes the pending frames and an ABORT trailer carrying `message`,
    /// and flushes: the receiver will fail with this message.
    pub fn abort(mut self, message: &str) -> anyhow::Result<()> {
        self.flush_frames()?;
        self.write_abort(message)
    }

    fn write_abort(&mut self, message: &str) -> anyhow::Result<()> {
        let (rec, msg) = self.state.abort_records(message);
        self.out.write_all(&rec).context("writing output")?;
        self.out.write_all(&msg).context("writing output")?;
        self.out.flush().context("writing output")
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Encoder::write_all(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    /// Frames are written as they fill; a partial frame is only written by
    /// `finish`, so this flushes the writer underneath and nothing more.
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// How an [`EncodeStage`] ended its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeOutcome {
    /// END was written.
    Ended(Digest),
    /// ABORT was written with this message.
    Aborted(String),
}

#[derive(Debug, Default)]
struct HandleState {
    abort: Option<String>,
    outcome: Option<EncodeOutcome>,
}

/// Lets the owner of an [`EncodeStage`] turn its END into an ABORT, and
/// tells how the stream ended.
#[derive(Clone, Debug, Default)]
pub struct AbortHandle {
    inner: Arc<Mutex<HandleState>>,
}

impl AbortHandle {
    /// Makes the stage write ABORT(`message`) instead of END, if called
    /// before the stage's `finish` runs (e.g. by a source that saw its
    /// `zfs send` child fail, before it returns end of input).
    pub fn abort(&self, message: String) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.abort.is_none() {
            s.abort = Some(message);
        }
    }

    /// How the stream ended, once the stage's `finish` ran.
    pub fn outcome(&self) -> Option<EncodeOutcome> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outcome
            .clone()
    }

    fn requested(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort
            .clone()
    }

    fn set_outcome(&self, o: EncodeOutcome) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).outcome = Some(o);
    }
}

/// A pipeline stage: raw blocks in, framed blocks out (one block per frame:
/// header record then payload). An input block that is exactly one frame
/// and has [`RECORD_LEN`] bytes of headroom (a pipeline with
/// `headroom: RECORD_LEN` and `block_size` = the frame size) is framed in
/// place; other input is copied into the stage's own pool and released at
/// once.
///
/// When the carried ZFS stream is incomplete, or [`AbortHandle::abort`] was
/// called, `finish` writes ABORT and still returns `Ok`, so the trailer
/// reaches the receiver; the owner learns it from
/// [`AbortHandle::outcome`].
pub struct EncodeStage {
    cfg: VerifyConfig,
    state: FrameState,
    pool: BlockPool,
    hasher: OrderedPool<Block, Hashed<Block>>,
    cur: Option<Block>,
    header_sent: bool,
    handle: AbortHandle,
}

impl EncodeStage {
    /// A stage framing with `cfg`, and the handle to abort it. An invalid
    /// frame size is clamped into 1..=16 MiB (the CLI rejects it first).
    pub fn new(mut cfg: VerifyConfig) -> (EncodeStage, AbortHandle) {
        cfg.frame_size = cfg.frame_size.clamp(1, format::MAX_FRAME_LEN);
        let window = cfg.window(cfg.frame_size);
        let hasher = OrderedPool::new_paired(
            cfg.worker_count(),
            window,
            |b: Block| {
                let sha = format::sha256(&b.data()[RECORD_LEN..]);
                (b, sha)
            },
            |a: Block, b: Block| {
                let (sa, sb) = sha2x::pair(&a.data()[RECORD_LEN..], &b.data()[RECORD_LEN..]);
                ((a, sa), (b, sb))
            },
        );
        let pool = BlockPool::new(RECORD_LEN + cfg.frame_size, window + STAGE_EXTRA_BLOCKS);
        let handle = AbortHandle::default();
        let stage = EncodeStage {
            state: FrameState::new(&cfg),
            cfg,
            pool,
            hasher,
            cur: None,
            header_sent: false,
            handle: handle.clone(),
        };
        (stage, handle)
    }

    fn send_header(&mut self, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        if !self.header_sent {
            let mut b = self.pool.get(out.cancel())?;
            b.vec_mut().extend_from_slice(&self.state.header);
            out.emit(b)?;
            self.header_sent = true;
        }
        Ok(())
    }

    fn emit_frame(
        &mut self,
        (mut b, sha): Hashed<Block>,
        out: &mut Emitter<'_>,
    ) -> anyhow::Result<()> {
        let len = b.len() - RECORD_LEN;
        let rec = self.state.next_frame(len, sha);
        b.data_mut()[..RECORD_LEN].copy_from_slice(&rec);
        out.emit(b)
    }

    fn submit_current(&mut self, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        let Some(b) = self.cur.take() else {
            return Ok(());
        };
        if b.len() == RECORD_LEN {
            return Ok(());
        }
        self.submit(b, usize::MAX, out)
    }

    /// Hands a frame block (header space, then payload) to the hashers once
    /// the window has room and fewer than `max_in_flight` frames are in it,
    /// emitting the frames that finished meanwhile.
    fn submit(
        &mut self,
        b: Block,
        max_in_flight: usize,
        out: &mut Emitter<'_>,
    ) -> anyhow::Result<()> {
        let cancel = out.cancel().clone();
        while !self.hasher.has_room() || self.hasher.in_flight() >= max_in_flight {
            if let Some(r) = self.hasher.next(&cancel)? {
                self.emit_frame(r, out)?;
            }
        }
        self.hasher.submit(b, &cancel)?;
        while let Some(r) = self.hasher.try_next() {
            self.emit_frame(r, out)?;
        }
        Ok(())
    }
}

/// Blocks of the encode stage's pool beyond its hashing window: the header,
/// the frame being filled and slack for blocks queued downstream.
const STAGE_EXTRA_BLOCKS: usize = 4;

impl Stage for EncodeStage {
    fn process(&mut self, block: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        self.send_header(out)?;
        self.state.follow(block.data());
        if self.cur.is_none()
            && block.len() == self.cfg.frame_size
            && block.headroom() >= RECORD_LEN
        {
            // A whole frame with room for its header: frame it in place,
            // keeping no more of the source's blocks than it may.
            let mut block = block;
            block.expose_headroom(RECORD_LEN);
            let cap = block.keep_limit().max(1);
            return self.submit(block, cap, out);
        }
        let frame_end = RECORD_LEN + self.cfg.frame_size;
        let mut data = block.data();
        while !data.is_empty() {
            if self.cur.is_none() {
                let mut b = self.pool.get(out.cancel())?;
                b.vec_mut().resize(RECORD_LEN, 0);
                self.cur = Some(b);
            }
            let b = self.cur.as_mut().expect("current block");
            let n = (frame_end - b.len()).min(data.len());
            b.vec_mut().extend_from_slice(&data[..n]);
            data = &data[n..];
            if b.len() == frame_end {
                self.submit_current(out)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        self.send_header(out)?;
        self.submit_current(out)?;
        let cancel = out.cancel().clone();
        while let Some(r) = self.hasher.next(&cancel)? {
            self.emit_frame(r, out)?;
        }
        let why = self
            .handle
            .requested()
            .or_else(|| self.state.incomplete_zfs());
        let mut b = self.pool.get(&cancel)?;
        let outcome = match why {
            Some(message) => {
                let (rec, msg) = self.state.abort_records(&message);
                b.vec_mut().extend_from_slice(&rec);
                b.vec_mut().extend_from_slice(&msg);
                EncodeOutcome::Aborted(message)
            }
            None => {
                let d = self.state.digest.value();
                b.vec_mut().extend_from_slice(&d.encode_end());
                EncodeOutcome::Ended(d)
            }
        };
        out.emit(b)?;
        self.handle.set_outcome(outcome);
        Ok(())
    }
}
