//! Decoding: [`Decoder`] reads a framed stream from any `Read` and writes
//! the verified payload to a `Write`; [`DecodeStage`] does the same as a
//! pipeline stage on blocks cut anywhere. Both hash payloads on worker
//! threads ([`OrderedPool`]) and hand a frame's bytes on only after that
//! frame's SHA-256 matched, in order. At the first failure everything
//! verified before it is delivered and nothing after it; the error names
//! the frame and byte offset.
//!
//! One verified frame is always held back until the next one verified or
//! the END trailer did: after an ABORT trailer it is dropped, so a stream
//! whose sender failed (even after writing all of a ZFS stream) never
//! reaches its consumer whole, and `zfs recv` cannot complete it.

use crate::format::{self, Body, Digest, Header, Record, MAX_ABORT_MESSAGE, RECORD_LEN};
use crate::parser::{Event, Frame, FrameBuf, Parser, PayloadBuf};
use crate::VerifyConfig;
use anyhow::Context;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::sync::{Arc, Mutex};
use zpipe_core::cancel::Cancel;
use zpipe_core::par::OrderedPool;
use zpipe_core::pipeline::{Emitter, Framing, Stage};
use zpipe_core::pool::{Block, BlockPool};

/// Size of the small read buffer the pull decoder uses for record headers;
/// payloads are read straight into frame buffers.
const RECORD_READ_BUFFER: usize = 16 << 10;

/// Verifies frames on worker threads and delivers them in order, holding
/// the last verified one back (see the module docs).
struct Checker<B: PayloadBuf> {
    pool: OrderedPool<Frame<B>, (Frame<B>, bool)>,
    held: Option<B>,
}

impl<B: PayloadBuf> Checker<B> {
    fn new(cfg: &VerifyConfig, frame_len: usize) -> Self {
        let workers = cfg.worker_count();
        let window = cfg.window(frame_len);
        Checker {
            pool: OrderedPool::new_paired(
                workers,
                window,
                |f: Frame<B>| {
                    let ok = f.verify();
                    (f, ok)
                },
                |a: Frame<B>, b: Frame<B>| {
                    let (oa, ob) = Frame::verify_pair(&a, &b);
                    ((a, oa), (b, ob))
                },
            ),
            held: None,
        }
    }

    /// Holds a verified frame, delivering the one held before it.
    fn deliver(
        &mut self,
        r: (Frame<B>, bool),
        out: &mut dyn FnMut(B) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let (frame, ok) = r;
        if !ok {
            // Everything verified before a damaged frame is delivered.
            if let Some(prev) = self.held.take() {
                out(prev)?;
            }
            return Err(frame.mismatch());
        }
        match self.held.replace(frame.buf) {
            Some(prev) => out(prev),
            None => Ok(()),
        }
    }

    /// After [`drain`](Self::drain): delivers the held frame, or drops it
    /// when the stream ended with ABORT.
    fn release(
        &mut self,
        aborted: bool,
        out: &mut dyn FnMut(B) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match self.held.take() {
            Some(b) if !aborted => out(b),
            _ => Ok(()),
        }
    }

    /// Waits until another frame may be submitted with fewer than
    /// `max_in_flight` in flight, delivering results.
    fn make_room(
        &mut self,
        max_in_flight: usize,
        cancel: &Cancel,
        out: &mut dyn FnMut(B) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        while !self.pool.has_room() || self.pool.in_flight() >= max_in_flight {
            match self.pool.next(cancel)? {
                Some(r) => self.deliver(r, out)?,
                None => break,
            }
        }
        Ok(())
    }

    fn submit(
        &mut self,
        frame: Frame<B>,
        max_in_flight: usize,
        cancel: &Cancel,
        out: &mut dyn FnMut(B) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.make_room(max_in_flight, cancel, out)?;
        self.pool.submit(frame, cancel)?;
        while let Some(r) = self.pool.try_next() {
            self.deliver(r, out)?;
        }
        Ok(())
    }

    /// Delivers every frame in flight; the first bad one is the error.
    fn drain(
        &mut self,
        cancel: &Cancel,
        out: &mut dyn FnMut(B) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        while let Some(r) = self.pool.next(cancel)? {
            self.deliver(r, out)?;
        }
        Ok(())
    }
}

/// Reads a framed stream and yields the verified payload.
pub struct Decoder<R: Read> {
    reader: BufReader<R>,
    cfg: VerifyConfig,
}

impl<R: Read> Decoder<R> {
    /// A decoder reading the framed stream from `reader`.
    pub fn new(reader: R, cfg: &VerifyConfig) -> Self {
        Decoder {
            reader: BufReader::with_capacity(RECORD_READ_BUFFER, reader),
            cfg: cfg.clone(),
        }
    }

    /// Verifies the whole stream, writing each frame's payload to `out` once
    /// it verified; returns the END trailer's digest. On failure, `out` has
    /// received exactly the frames before the first damaged place.
    pub fn decode_to<W: Write>(mut self, out: &mut W) -> anyhow::Result<Digest> {
        let cancel = Cancel::new();
        let mut parser: Parser<FrameBuf> = Parser::new();
        let mut checker: Option<Checker<FrameBuf>> = None;
        let free: RefCell<Vec<FrameBuf>> = RefCell::new(Vec::new());
        let mut deliver = |b: FrameBuf| -> anyhow::Result<()> {
            out.write_all(b.payload()).context("writing output")?;
            free.borrow_mut().push(b);
            Ok(())
        };
        // Errors found by the parser (and the end of input) come after every
        // frame already handed to the checker: deliver those first, and let
        // an earlier bad frame win. Errors from the checker itself end at once.
        let ended = |checker: &mut Option<Checker<FrameBuf>>,
                     r: anyhow::Result<Digest>,
                     aborted: bool,
                     deliver: &mut dyn FnMut(FrameBuf) -> anyhow::Result<()>|
         -> anyhow::Result<Digest> {
            if let Some(c) = checker.as_mut() {
                c.drain(&cancel, deliver)?;
                c.release(aborted, deliver)?;
            }
            r
        };
        let digest = loop {
            let ev = match self.step(&mut parser) {
                Ok(Some(ev)) => ev,
                Ok(None) => break ended(&mut checker, parser.finish(), false, &mut deliver)?,
                Err(e) => break ended(&mut checker, Err(e), false, &mut deliver)?,
            };
            match ev {
                Event::NeedBuffer => {
                    let frame_len = parser.max_frame_len();
                    let c = checker.get_or_insert_with(|| Checker::new(&self.cfg, frame_len));
                    c.make_room(usize::MAX, &cancel, &mut deliver)?;
                    let buf = free.borrow_mut().pop().unwrap_or_default();
                    parser.give_buffer(buf);
                }
                Event::Frame(f) => {
                    let c = checker.as_mut().expect("a frame follows NeedBuffer");
                    c.submit(f, usize::MAX, &cancel, &mut deliver)?;
                }
                Event::End => {}
                Event::Abort(text) => {
                    let e = zpipe_core::exit::integrity(text);
                    break ended(&mut checker, Err(e), true, &mut deliver)?;
                }
            }
        };
        out.flush().context("writing output")?;
        Ok(digest)
    }

    /// Reads until the parser has an event; `Ok(None)` at end of input.
    fn step(&mut self, parser: &mut Parser<FrameBuf>) -> anyhow::Result<Option<Event<FrameBuf>>> {
        loop {
            if self.reader.buffer().is_empty() {
                if let Some((buf, _left)) = parser.payload_slot() {
                    let n = read_retrying(self.reader.get_mut(), buf.spare())?;
                    if n == 0 {
                        return Ok(None);
                    }
                    buf.filled(n);
                    if let Some(ev) = parser.payload_read(n) {
                        return Ok(Some(ev));
                    }
                    continue;
                }
            }
            let data = match self.reader.fill_buf() {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading input"),
            };
            if data.is_empty() {
                return Ok(None);
            }
            let (n, ev) = parser.feed(data)?;
            self.reader.consume(n);
            if ev.is_some() {
                return Ok(ev);
            }
        }
    }
}

fn read_retrying<R: Read>(r: &mut R, buf: &mut [u8]) -> anyhow::Result<usize> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading input"),
        }
    }
}

/// What a [`DecodeStage`] found, readable after the pipeline ran.
#[derive(Clone, Debug, Default)]
pub struct DecodeHandle {
    inner: Arc<Mutex<Option<Digest>>>,
    in_place: Arc<std::sync::atomic::AtomicU64>,
}

impl DecodeHandle {
    /// The END trailer's digest (frames, bytes, stream digest) when the
    /// stream was complete and every frame verified; `None` otherwise.
    pub fn digest(&self) -> Option<Digest> {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of verified frames of a complete stream (0 when incomplete).
    pub fn frames(&self) -> u64 {
        self.digest().map_or(0, |d| d.frames)
    }

    /// Verified payload bytes of a complete stream (0 when incomplete).
    pub fn bytes(&self) -> u64 {
        self.digest().map_or(0, |d| d.bytes)
    }

    /// Frames checked in place, in the block they arrived in (no copy).
    pub fn frames_in_place(&self) -> u64 {
        self.in_place.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// [`Framing`] of a framed stream for [`FdSource`](zpipe_core::pipeline::FdSource):
/// one record and what follows it (a payload, an ABORT message) per block,
/// so [`DecodeStage`] checks each data frame in place. It only cuts; the
/// stage's parser still checks every record, and a record this framing
/// cannot read (damage) gets a plain block for the parser to reject.
#[derive(Debug, Default)]
pub struct RecordFraming {
    /// The header's frame length bound, once the header was read.
    max_frame_len: Option<usize>,
}

impl Framing for RecordFraming {
    fn head_len(&self) -> usize {
        RECORD_LEN
    }

    fn unit_len(&mut self, head: &[u8]) -> Option<usize> {
        let rec: &Record = head.try_into().ok()?;
        let Some(max) = self.max_frame_len else {
            let h = Header::decode(rec).ok()?;
            self.max_frame_len = Some(h.max_frame_len as usize);
            return Some(RECORD_LEN);
        };
        let follows = match format::decode_body(rec).ok()? {
            Body::Data(d) => Some(d.len as usize).filter(|&n| n <= max)?,
            Body::End(_) => 0,
            Body::Abort { len, .. } => Some(len as usize).filter(|&n| n <= MAX_ABORT_MESSAGE)?,
        };
        Some(RECORD_LEN + follows)
    }
}

/// A pipeline stage: framed blocks in (cut anywhere), verified payload out.
pub struct DecodeStage {
    cfg: VerifyConfig,
    parser: Parser<Block>,
    checker: Option<Checker<Block>>,
    pool: Option<BlockPool>,
    handle: DecodeHandle,
}

/// Blocks of the stage's own pool beyond its hashing window: one being
/// filled plus slack for blocks queued downstream.
const STAGE_EXTRA_BLOCKS: usize = 4;

impl DecodeStage {
    /// A decode stage and the handle that reports its result.
    pub fn new(cfg: VerifyConfig) -> (DecodeStage, DecodeHandle) {
        let handle = DecodeHandle::default();
        let stage = DecodeStage {
            cfg,
            parser: Parser::new(),
            checker: None,
            pool: None,
            handle: handle.clone(),
        };
        (stage, handle)
    }

    /// Ends with `r` after delivering every frame in flight (an earlier
    /// bad frame wins): for parser errors, ABORT and the end of input.
    /// After an ABORT the last verified frame is not delivered.
    fn ended<T>(
        &mut self,
        r: anyhow::Result<T>,
        aborted: bool,
        out: &mut Emitter<'_>,
    ) -> anyhow::Result<T> {
        if let Some(c) = self.checker.as_mut() {
            let cancel = out.cancel().clone();
            c.drain(&cancel, &mut |b| out.emit(b))?;
            c.release(aborted, &mut |b| out.emit(b))?;
        }
        r
    }

    /// Checks a block that holds exactly one data frame, its record already
    /// parsed, in place: the payload is hashed where it is and the block
    /// itself, minus the record, is what gets delivered (no copy).
    fn check_in_place(&mut self, mut block: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        let cancel = out.cancel().clone();
        // The block belongs to the pool upstream: in flight plus the one
        // frame held back stay within what that pool allows.
        let cap = block.keep_limit() - 1;
        let frame_len = self.parser.max_frame_len();
        let c = self
            .checker
            .get_or_insert_with(|| Checker::new(&self.cfg, frame_len));
        block.consume_front(RECORD_LEN);
        self.handle
            .in_place
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = match self.parser.give_full_buffer(block) {
            Ok(f) => f,
            Err(_) => unreachable!("the caller checked the payload length"),
        };
        c.submit(frame, cap, &cancel, &mut |b| out.emit(b))
    }

    fn handle_event(&mut self, ev: Event<Block>, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        let cancel = out.cancel().clone();
        match ev {
            Event::NeedBuffer => {
                let frame_len = self.parser.max_frame_len();
                let c = self
                    .checker
                    .get_or_insert_with(|| Checker::new(&self.cfg, frame_len));
                c.make_room(usize::MAX, &cancel, &mut |b| out.emit(b))?;
                let count = self.cfg.window(frame_len) + STAGE_EXTRA_BLOCKS;
                let pool = self
                    .pool
                    .get_or_insert_with(|| BlockPool::new(frame_len, count));
                let b = pool.get(&cancel)?;
                self.parser.give_buffer(b);
            }
            Event::Frame(f) => {
                let c = self.checker.as_mut().expect("a frame follows NeedBuffer");
                c.submit(f, usize::MAX, &cancel, &mut |b| out.emit(b))?;
            }
            Event::End => {}
            Event::Abort(text) => {
                return self.ended(Err(zpipe_core::exit::integrity(text)), true, out);
            }
        }
        Ok(())
    }
}

/// Upstream pools that let the decode stage keep fewer blocks than this
/// (one in flight, one held back) never lend it their blocks (see
/// [`DecodeStage::check_in_place`]).
const MIN_KEEP_IN_PLACE: usize = 2;

impl Stage for DecodeStage {
    fn process(&mut self, block: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        let mut skip = 0;
        if self.parser.at_record()
            && block.len() > RECORD_LEN
            && block.keep_limit() >= MIN_KEEP_IN_PLACE
        {
            // Maybe one whole frame (a RecordFraming source, or one
            // compressed frame per verify frame): parse its record first.
            let (n, ev) = match self.parser.feed(&block.data()[..RECORD_LEN]) {
                Ok(r) => r,
                Err(e) => return self.ended(Err(e), false, out),
            };
            skip = n;
            match ev {
                Some(Event::NeedBuffer)
                    if self.parser.payload_wanted() == Some(block.len() - RECORD_LEN) =>
                {
                    return self.check_in_place(block, out);
                }
                Some(ev) => self.handle_event(ev, out)?,
                None => {}
            }
        }
        let mut data = &block.data()[skip..];
        while !data.is_empty() {
            let (n, ev) = match self.parser.feed(data) {
                Ok(r) => r,
                Err(e) => return self.ended(Err(e), false, out),
            };
            data = &data[n..];
            if let Some(ev) = ev {
                self.handle_event(ev, out)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        let r = self.parser.finish();
        let digest = self.ended(r, false, out)?;
        *self.handle.inner.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
        Ok(())
    }
}
