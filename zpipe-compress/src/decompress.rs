//! Decompression: the [`DecompressStage`] reads any standard zstd stream cut
//! at arbitrary points.
//!
//! A frame announced by a pzstd size frame is gathered whole, decoded on a
//! worker thread and its checksum verified before any of it is emitted, so
//! these frames decode on all cores and nothing corrupt is passed on. Any
//! other frame (one big frame from `zstd -19`, `zstd -T2`, `--long` windows)
//! is decoded as it streams in, on the stage's thread, with memory bounded by
//! its window: its bytes are emitted as decoded, and a bad checksum or a
//! truncation at the end still fails the stage. Skippable frames are skipped
//! wherever they are.

use crate::format::{
    self, FormatError, FrameHeader, MAGIC_LEN, MAX_FRAME_HEADER_LEN, MIN_FRAME_HEADER_LEN,
    SIZE_FRAME_LEN, SIZE_FRAME_MAGIC, SIZE_FRAME_PAYLOAD, SKIPPABLE_HEADER_LEN, ZSTD_MAGIC,
};
use std::cell::RefCell;
use zpipe_core::exit::{integrity, usage};
use zpipe_core::par::{workers_for, OrderedPool};
use zpipe_core::pipeline::{Emitter, Stage};
use zpipe_core::pool::{Block, BlockPool};
use zstd::zstd_safe::{self, DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

/// Default limit on a frame's window and on the memory of frames in flight:
/// 128 MiB, zstd's own default (`--memory`).
pub const DEFAULT_MEMORY_LIMIT: u64 = 128 << 20;
/// Size of the output blocks the stage emits when streaming.
pub const OUTPUT_BLOCK_SIZE: usize = 4 << 20;
/// Largest window libzstd supports (2^31).
const WINDOW_LOG_LIMIT: u32 = 31;
/// Smallest window log libzstd accepts as a limit.
const WINDOW_LOG_FLOOR: u32 = 10;

/// How the decompressor works.
#[derive(Debug, Clone)]
pub struct DecompressConfig {
    /// Worker threads for frames with size frames; 0 = one per core.
    pub workers: usize,
    /// Largest window a frame may need, and the memory parallel frames in
    /// flight may hold (input plus output).
    pub memory_limit: u64,
}

impl Default for DecompressConfig {
    fn default() -> Self {
        DecompressConfig {
            workers: 0,
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

impl DecompressConfig {
    /// Largest frame (announced by a size frame) decoded on a worker; larger
    /// ones are decoded as they stream in.
    pub fn region_limit(&self) -> u64 {
        self.memory_limit / 4
    }

    /// Frames in flight at once.
    pub fn window(&self) -> usize {
        workers_for(self.workers) * 2
    }
}

/// A gathered region: copied out of smaller blocks, or a source block that
/// holds exactly one size frame and its region (the data after the size frame).
enum Region {
    Buf(Vec<u8>),
    Block(Block),
}

impl Region {
    fn data(&self) -> &[u8] {
        match self {
            Region::Buf(v) => v,
            Region::Block(b) => &b.data()[SIZE_FRAME_LEN..],
        }
    }
}

struct Job {
    /// Offset in the input of the region's first byte.
    start: u64,
    input: Region,
    out: Block,
    bound: u64,
    memory_limit: u64,
}

struct Done {
    input: Region,
    out: Block,
    cost: u64,
    result: Result<(), anyhow::Error>,
}

enum State {
    /// Between frames: collecting a magic number and header into `hdr`.
    Boundary,
    /// Inside a skippable frame: bytes left to skip.
    Skip { start: u64, left: u64 },
    /// Gathering a region announced by a size frame.
    Gather {
        start: u64,
        need: usize,
        buf: Vec<u8>,
    },
    /// Decoding a frame as it arrives.
    Stream { start: u64 },
}

/// A pipeline stage turning any standard zstd stream into its content.
pub struct DecompressStage {
    cfg: DecompressConfig,
    pool: OrderedPool<Job, Done>,
    out_pool: BlockPool,
    state: State,
    hdr: Vec<u8>,
    /// Input bytes consumed so far.
    offset: u64,
    /// Frames (of any kind) completely read so far.
    frames: u64,
    /// Where the latest frame (of any kind) started.
    prev_start: u64,
    dctx: DCtx<'static>,
    stream_out: Option<Block>,
    free: Vec<Vec<u8>>,
    in_flight_cost: u64,
}

impl DecompressStage {
    /// Starts the worker threads.
    pub fn new(cfg: DecompressConfig) -> anyhow::Result<Self> {
        let workers = workers_for(cfg.workers);
        let window = cfg.window();
        let pool = OrderedPool::new(workers, window, run_job);
        let out_pool = BlockPool::new(OUTPUT_BLOCK_SIZE, window + 3);
        let mut dctx = DCtx::create();
        dctx.set_parameter(DParameter::WindowLogMax(window_log_max(cfg.memory_limit)))
            .map_err(|c| anyhow::anyhow!("{}", zstd_safe::get_error_name(c)))?;
        Ok(DecompressStage {
            cfg,
            pool,
            out_pool,
            state: State::Boundary,
            hdr: Vec::with_capacity(MAX_FRAME_HEADER_LEN),
            offset: 0,
            frames: 0,
            prev_start: 0,
            dctx,
            stream_out: None,
            free: Vec::new(),
            in_flight_cost: 0,
        })
    }

    /// Input bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Frames (zstd and skippable) read completely so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Consumes bytes from `data`; returns how many.
    fn step(&mut self, data: &[u8], out: &mut Emitter<'_>) -> anyhow::Result<usize> {
        match &mut self.state {
            State::Boundary => self.boundary(data, out),
            State::Skip { left, .. } => {
                let n = (*left).min(data.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Boundary;
                    self.frames += 1;
                }
                Ok(n)
            }
            State::Gather { need, buf, start } => {
                let n = (*need - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..n]);
                if buf.len() == *need {
                    let start = *start;
                    let buf = std::mem::take(buf);
                    self.state = State::Boundary;
                    self.submit_region(start, Region::Buf(buf), out)?;
                }
                Ok(n)
            }
            State::Stream { start } => {
                let start = *start;
                self.stream(start, data, out)
            }
        }
    }

    /// Collects a frame's first bytes and decides what the frame is.
    fn boundary(&mut self, data: &[u8], out: &mut Emitter<'_>) -> anyhow::Result<usize> {
        let start = self.offset - self.hdr.len() as u64;
        let want = self.header_bytes_wanted(start)?;
        if self.hdr.len() < want {
            let n = (want - self.hdr.len()).min(data.len());
            self.hdr.extend_from_slice(&data[..n]);
            return Ok(n);
        }
        self.prev_start = start;
        let magic = format::read_u32(&self.hdr, 0).unwrap_or(0);
        if format::is_skippable_magic(magic) {
            let len = format::read_u32(&self.hdr, 4).unwrap_or(0);
            if magic == SIZE_FRAME_MAGIC && len == SIZE_FRAME_PAYLOAD {
                let frame_len = format::read_u32(&self.hdr, 8).unwrap_or(0) as usize;
                self.hdr.clear();
                self.frames += 1;
                if frame_len > 0 && (frame_len as u64) <= self.region_limit() {
                    self.state = State::Gather {
                        start: start + SIZE_FRAME_LEN as u64,
                        need: frame_len,
                        buf: self.take_buffer(frame_len),
                    };
                }
                // A region too large to hold is simply decoded as it streams.
                return Ok(0);
            }
            // The header holds exactly the 8 bytes of magic and length.
            self.hdr.clear();
            if len == 0 {
                self.frames += 1;
            } else {
                self.state = State::Skip {
                    start,
                    left: u64::from(len),
                };
            }
            return Ok(0);
        }
        // A zstd frame without a size frame: stream it.
        let h = format::parse_frame_header(&self.hdr).map_err(|e| self.format_error(start, e))?;
        self.check_window(start, &h)?;
        self.drain(out)?;
        self.dctx
            .reset(ResetDirective::SessionOnly)
            .map_err(|c| corrupt(start, zstd_safe::get_error_name(c)))?;
        let hdr = std::mem::take(&mut self.hdr);
        self.state = State::Stream { start };
        // Feed the header bytes already collected (they are part of the frame).
        self.stream_from(start, &hdr, out, false)?;
        self.hdr = hdr;
        self.hdr.clear();
        Ok(0)
    }

    /// How many header bytes are needed to classify the frame at `start`.
    fn header_bytes_wanted(&self, start: u64) -> anyhow::Result<usize> {
        if self.hdr.len() < MAGIC_LEN {
            return Ok(MAGIC_LEN);
        }
        let magic = format::read_u32(&self.hdr, 0).unwrap_or(0);
        if format::is_skippable_magic(magic) {
            if self.hdr.len() < SKIPPABLE_HEADER_LEN {
                return Ok(SKIPPABLE_HEADER_LEN);
            }
            let len = format::read_u32(&self.hdr, 4).unwrap_or(0);
            if magic == SIZE_FRAME_MAGIC && len == SIZE_FRAME_PAYLOAD {
                return Ok(SIZE_FRAME_LEN);
            }
            return Ok(SKIPPABLE_HEADER_LEN);
        }
        if magic == ZSTD_MAGIC {
            if self.hdr.len() < MIN_FRAME_HEADER_LEN {
                return Ok(MIN_FRAME_HEADER_LEN);
            }
            return Ok(format::frame_header_len(self.hdr[4]));
        }
        Err(self.not_zstd(start))
    }

    fn not_zstd(&self, start: u64) -> anyhow::Error {
        if start == 0 {
            usage("input is not zstd data (no zstd frame magic at byte 0)")
        } else {
            integrity(format!(
                "bad frame at byte offset {start}: not a zstd frame (corrupt data, or trailing garbage after the frame at byte offset {})",
                self.prev_start
            ))
        }
    }

    fn format_error(&self, start: u64, e: FormatError) -> anyhow::Error {
        match e {
            FormatError::Incomplete(_) => truncated(start, self.offset),
            FormatError::Invalid(at, why) => {
                if start == 0 && self.frames == 0 && at == 0 {
                    self.not_zstd(0)
                } else {
                    corrupt(start, &why)
                }
            }
        }
    }

    fn check_window(&self, start: u64, h: &FrameHeader) -> anyhow::Result<()> {
        if h.window_size > self.cfg.memory_limit {
            return Err(usage(format!(
                "the zstd frame at byte offset {start} needs a {} MiB window, more than the memory limit of {} MiB; raise it with --memory={}M (or --long={})",
                h.window_size.div_ceil(1 << 20),
                self.cfg.memory_limit >> 20,
                h.window_size.div_ceil(1 << 20),
                64 - (h.window_size - 1).leading_zeros()
            )));
        }
        Ok(())
    }

    /// Largest region gathered for a parallel decode.
    fn region_limit(&self) -> u64 {
        self.cfg.region_limit()
    }

    fn take_buffer(&mut self, need: usize) -> Vec<u8> {
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v.reserve(need);
        v
    }

    /// Streams `data` into the frame decoder; returns the bytes consumed.
    fn stream(&mut self, start: u64, data: &[u8], out: &mut Emitter<'_>) -> anyhow::Result<usize> {
        self.stream_from(start, data, out, true)
    }

    fn stream_from(
        &mut self,
        start: u64,
        data: &[u8],
        out: &mut Emitter<'_>,
        may_end: bool,
    ) -> anyhow::Result<usize> {
        let mut input = InBuffer::around(data);
        loop {
            if self
                .stream_out
                .as_ref()
                .is_some_and(|b| b.len() >= OUTPUT_BLOCK_SIZE)
            {
                let full = self.stream_out.take().expect("checked above");
                out.emit(full)?;
            }
            if self.stream_out.is_none() {
                self.stream_out = Some(self.out_pool.get(out.cancel())?);
            }
            let blk = self.stream_out.as_mut().expect("set above");
            let vec = blk.vec_mut();
            if vec.capacity() < OUTPUT_BLOCK_SIZE {
                vec.reserve(OUTPUT_BLOCK_SIZE - vec.len());
            }
            let pos = vec.len();
            let mut ob = OutBuffer::around_pos(vec, pos);
            let r = self
                .dctx
                .decompress_stream(&mut ob, &mut input)
                .map_err(|c| corrupt(start, zstd_safe::get_error_name(c)))?;
            let filled = ob.pos();
            let full = filled >= ob.capacity();
            if r == 0 {
                debug_assert!(may_end || input.pos() == data.len());
                self.state = State::Boundary;
                self.frames += 1;
                return Ok(input.pos());
            }
            if !full && input.pos() == data.len() {
                return Ok(input.pos());
            }
        }
    }

    fn flush_stream_out(&mut self, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        if let Some(b) = self.stream_out.take() {
            if !b.is_empty() {
                out.emit(b)?;
            }
        }
        Ok(())
    }

    /// Hands a gathered region to a worker, after checking its structure.
    fn submit_region(
        &mut self,
        start: u64,
        region: Region,
        out: &mut Emitter<'_>,
    ) -> anyhow::Result<()> {
        let buf = region.data();
        let mut at = 0usize;
        let mut bound = 0u64;
        while at < buf.len() {
            let here = start + at as u64;
            let why = match format::walk_frame(&buf[at..]) {
                Ok(e) => {
                    if let Some(h) = e.header {
                        self.check_window(here, &h)?;
                    }
                    bound += e.decoded_bound;
                    at += e.len;
                    continue;
                }
                Err(FormatError::Incomplete(_)) => format!(
                    "the frame runs past the {} bytes its size frame announced",
                    buf.len()
                ),
                Err(FormatError::Invalid(_, why)) => why,
            };
            self.drain(out)?;
            let at_msg = if here == start {
                String::new()
            } else {
                format!(" (at byte offset {here})")
            };
            return Err(corrupt(start, &format!("{why}{at_msg}")));
        }
        let cost = buf.len() as u64 + bound;
        if cost > self.cfg.memory_limit {
            // Too big to hold decoded: stream it (written as decoded).
            self.drain(out)?;
            let mut pos = 0;
            while pos < buf.len() {
                let here = start + pos as u64;
                let e = format::walk_frame(&buf[pos..]).map_err(|e| self.format_error(here, e))?;
                if e.header.is_some() {
                    self.dctx
                        .reset(ResetDirective::SessionOnly)
                        .map_err(|c| corrupt(here, zstd_safe::get_error_name(c)))?;
                    self.stream_from(here, &buf[pos..pos + e.len], out, true)?;
                }
                pos += e.len;
            }
            self.state = State::Boundary;
            self.recycle(region);
            return Ok(());
        }
        self.flush_stream_out(out)?;
        while !self.pool.has_room()
            || (self.pool.in_flight() > 0 && self.in_flight_cost + cost > self.cfg.memory_limit)
        {
            match self.pool.next(out.cancel())? {
                Some(d) => self.handle(d, out)?,
                None => break,
            }
        }
        let block = self.out_pool.get(out.cancel())?;
        self.in_flight_cost += cost;
        let job = Job {
            start,
            input: region,
            out: block,
            bound,
            memory_limit: self.cfg.memory_limit,
        };
        self.pool.submit(job, out.cancel())?;
        self.frames += 1;
        while let Some(d) = self.pool.try_next() {
            self.handle(d, out)?;
        }
        Ok(())
    }

    fn handle(&mut self, d: Done, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        self.in_flight_cost -= d.cost;
        self.recycle(d.input);
        d.result?;
        if !d.out.is_empty() {
            out.emit(d.out)?;
        }
        Ok(())
    }

    fn recycle(&mut self, region: Region) {
        if let Region::Buf(v) = region {
            self.free.push(v);
        }
    }

    /// Emits every frame in flight, in order.
    fn drain(&mut self, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        while let Some(d) = self.pool.next(out.cancel())? {
            self.handle(d, out)?;
        }
        Ok(())
    }
}

impl Stage for DecompressStage {
    fn process(&mut self, block: Block, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        if matches!(self.state, State::Boundary) && self.hdr.is_empty() {
            if let Some(n) = format::read_size_frame(block.data()) {
                let n = n as usize;
                if n > 0 && block.len() == SIZE_FRAME_LEN + n && (n as u64) <= self.region_limit() {
                    // Exactly one size frame and its region: no copy.
                    let start = self.offset;
                    self.prev_start = start;
                    self.frames += 1;
                    self.offset += block.len() as u64;
                    return self.submit_region(
                        start + SIZE_FRAME_LEN as u64,
                        Region::Block(block),
                        out,
                    );
                }
            }
        }
        let data = block.data();
        let mut at = 0;
        while at < data.len() {
            let n = self.step(&data[at..], out)?;
            at += n;
            self.offset += n as u64;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter<'_>) -> anyhow::Result<()> {
        // A complete header waiting for its first payload byte is acted on now.
        if matches!(self.state, State::Boundary) && !self.hdr.is_empty() {
            let start = self.offset - self.hdr.len() as u64;
            let want = self.header_bytes_wanted(start)?;
            if self.hdr.len() == want {
                self.step(&[], out)?;
            }
        }
        self.drain(out)?;
        self.flush_stream_out(out)?;
        match &self.state {
            State::Boundary if self.hdr.is_empty() => {
                if self.offset == 0 {
                    return Err(usage("input is not zstd data (it is empty)"));
                }
                Ok(())
            }
            State::Boundary => {
                let start = self.offset - self.hdr.len() as u64;
                if start == 0 && !format::could_be_zstd(&self.hdr) {
                    return Err(self.not_zstd(0));
                }
                Err(truncated(start, self.offset))
            }
            State::Skip { start, .. } | State::Stream { start } => {
                Err(truncated(*start, self.offset))
            }
            State::Gather { start, .. } => Err(truncated(*start, self.offset)),
        }
    }
}

fn truncated(start: u64, end: u64) -> anyhow::Error {
    integrity(format!(
        "truncated input: the frame at byte offset {start} is incomplete (input ended at byte {end})"
    ))
}

fn corrupt(start: u64, why: &str) -> anyhow::Error {
    integrity(format!("corrupt zstd frame at byte offset {start}: {why}"))
}

/// The WindowLogMax that admits windows up to `limit` bytes.
fn window_log_max(limit: u64) -> u32 {
    let log = 64 - limit.max(1).leading_zeros();
    log.clamp(WINDOW_LOG_FLOOR, WINDOW_LOG_LIMIT)
}

thread_local! {
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

fn run_job(job: Job) -> Done {
    let Job {
        start,
        input,
        mut out,
        bound,
        memory_limit,
    } = job;
    let cost = input.data().len() as u64 + bound;
    let result = DCTX.with(|d| {
        let mut d = d.borrow_mut();
        let dctx = d.get_or_insert_with(DCtx::create);
        decode_region(
            dctx,
            start,
            input.data(),
            out.vec_mut(),
            bound,
            memory_limit,
        )
    });
    if result.is_err() {
        out.vec_mut().clear();
    }
    Done {
        input,
        out,
        cost,
        result,
    }
}

/// Decodes a whole region (frames, checksums verified) into `out`.
fn decode_region(
    dctx: &mut DCtx<'static>,
    start: u64,
    input: &[u8],
    out: &mut Vec<u8>,
    bound: u64,
    memory_limit: u64,
) -> anyhow::Result<()> {
    out.clear();
    out.reserve(bound as usize);
    if dctx.decompress(out, input).is_ok() {
        return Ok(());
    }
    // Find the frame that failed, for its offset.
    let _ = dctx.reset(ResetDirective::SessionOnly);
    let mut at = 0;
    let mut scratch = Vec::new();
    while at < input.len() {
        let here = start + at as u64;
        let e =
            format::walk_frame(&input[at..]).map_err(|_| corrupt(here, "bad frame structure"))?;
        if e.header.is_some() {
            scratch.clear();
            scratch.reserve((e.decoded_bound.min(memory_limit)) as usize);
            if let Err(c) = dctx.decompress(&mut scratch, &input[at..at + e.len]) {
                let _ = dctx.reset(ResetDirective::SessionOnly);
                return Err(corrupt(here, zstd_safe::get_error_name(c)));
            }
        }
        at += e.len;
    }
    Err(corrupt(start, "decoding failed"))
}
