//! The decoder's state machine: it takes framed bytes in any pieces, checks
//! every record against the stream's state (sequence, offsets, lengths,
//! bounds) and hands out complete frames whose payload still has to be
//! hashed. It does no hashing of payloads and no I/O, so the push-driven
//! [`DecodeStage`](crate::DecodeStage) and the pull-driven
//! [`Decoder`](crate::Decoder) share it.
//!
//! Payload buffers come from the driver: after a valid data frame header
//! the parser asks for one with [`Event::NeedBuffer`], so the driver decides
//! where payloads live (pooled blocks, or reusable vectors read into
//! directly), and a length is always validated before any buffer is sized.

use crate::format::{self, Body, Digest, Header, Record, StreamDigest, RECORD_LEN, SHA256_LEN};
use zpipe_core::exit::integrity;

/// Where a frame's payload is collected.
pub trait PayloadBuf: Send + 'static {
    /// Empties the buffer and makes room for `len` bytes.
    fn start(&mut self, len: usize);
    /// Appends bytes.
    fn append(&mut self, data: &[u8]);
    /// The payload collected so far.
    fn payload(&self) -> &[u8];
}

impl PayloadBuf for zpipe_core::pool::Block {
    fn start(&mut self, len: usize) {
        let v = self.vec_mut();
        v.clear();
        v.reserve_exact(len);
    }
    fn append(&mut self, data: &[u8]) {
        self.vec_mut().extend_from_slice(data);
    }
    fn payload(&self) -> &[u8] {
        self.data()
    }
}

/// A reusable payload buffer that can be read into directly: its vector
/// stays initialised at its largest size, so reuse costs no zero-filling.
#[derive(Debug, Default)]
pub struct FrameBuf {
    data: Vec<u8>,
    len: usize,
    want: usize,
}

impl FrameBuf {
    /// The unfilled part of the frame, for reading into.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.len..self.want]
    }

    /// Marks `n` more bytes of [`spare`](Self::spare) as filled.
    pub fn filled(&mut self, n: usize) {
        self.len += n;
    }
}

impl PayloadBuf for FrameBuf {
    fn start(&mut self, len: usize) {
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
        self.len = 0;
        self.want = len;
    }
    fn append(&mut self, data: &[u8]) {
        self.data[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }
    fn payload(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// A complete frame whose payload still has to be checked against `sha`.
pub struct Frame<B> {
    /// Sequence number.
    pub seq: u64,
    /// Byte offset of the frame's header record in the framed stream.
    pub at: u64,
    /// The SHA-256 the header claims for the payload.
    pub sha: [u8; SHA256_LEN],
    /// The payload.
    pub buf: B,
}

impl<B: PayloadBuf> Frame<B> {
    /// True when the payload's SHA-256 matches the header (run on a worker).
    pub fn verify(&self) -> bool {
        format::sha256(self.buf.payload()) == self.sha
    }

    /// [`verify`](Self::verify) of two frames, hashed together.
    pub fn verify_pair(a: &Self, b: &Self) -> (bool, bool) {
        let (ha, hb) = crate::sha2x::pair(a.buf.payload(), b.buf.payload());
        (ha == a.sha, hb == b.sha)
    }

    /// The error for a frame whose payload did not verify.
    pub fn mismatch(&self) -> anyhow::Error {
        integrity(format!(
            "frame {} at byte {}: payload checksum mismatch (damaged data)",
            self.seq, self.at
        ))
    }
}

/// What the parser needs from, or hands to, its driver.
pub enum Event<B> {
    /// Give a buffer for the payload with [`Parser::give_buffer`] before
    /// feeding more (its length was checked against the stream's bound).
    NeedBuffer,
    /// A complete frame to verify and deliver.
    Frame(Frame<B>),
    /// A valid END trailer: the stream is complete once every frame
    /// verified and no byte follows.
    End,
    /// The sender aborted; the text is the whole error line.
    Abort(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Record,
    NeedBuffer,
    Payload,
    Message,
    Ended,
    Failed,
}

struct AbortInfo {
    at: u64,
    len: usize,
    frames: u64,
    bytes: u64,
    sha: [u8; SHA256_LEN],
}

/// The decoder state machine.
pub struct Parser<B> {
    state: State,
    rec: Record,
    fill: usize,
    pos: u64,
    rec_at: u64,
    max_frame_len: usize,
    digest: Option<StreamDigest>,
    end: Option<Digest>,
    meta: (u64, u64, [u8; SHA256_LEN]),
    cur: Option<Frame<B>>,
    want: usize,
    abort: Option<AbortInfo>,
    msg: Vec<u8>,
}

impl<B: PayloadBuf> Default for Parser<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: PayloadBuf> Parser<B> {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Parser {
            state: State::Header,
            rec: [0; RECORD_LEN],
            fill: 0,
            pos: 0,
            rec_at: 0,
            max_frame_len: 0,
            digest: None,
            end: None,
            meta: (0, 0, [0; SHA256_LEN]),
            cur: None,
            want: 0,
            abort: None,
            msg: Vec::new(),
        }
    }

    /// The stream's frame size bound, once the header was read (else 0).
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Frames whose headers were accepted so far.
    pub fn frames(&self) -> u64 {
        self.digest.as_ref().map_or(0, StreamDigest::frames)
    }

    fn next_seq(&self) -> u64 {
        self.frames()
    }

    fn fail(&mut self, what: String) -> anyhow::Error {
        self.state = State::Failed;
        integrity(what)
    }

    /// Consumes a prefix of `data`; returns how much, and the event that
    /// stopped it, if any. Call again with the rest.
    pub fn feed(&mut self, data: &[u8]) -> anyhow::Result<(usize, Option<Event<B>>)> {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            match self.state {
                State::Header | State::Record => {
                    if self.fill == 0 {
                        self.rec_at = self.pos;
                    }
                    let n = (RECORD_LEN - self.fill).min(rest.len());
                    self.rec[self.fill..self.fill + n].copy_from_slice(&rest[..n]);
                    self.fill += n;
                    self.pos += n as u64;
                    used += n;
                    if self.fill == RECORD_LEN {
                        self.fill = 0;
                        if let Some(ev) = self.record()? {
                            return Ok((used, Some(ev)));
                        }
                    }
                }
                State::NeedBuffer => return Ok((used, Some(Event::NeedBuffer))),
                State::Payload => {
                    let frame = self.cur.as_mut().expect("payload state has a frame");
                    let have = frame.buf.payload().len();
                    let n = (self.want - have).min(rest.len());
                    frame.buf.append(&rest[..n]);
                    self.pos += n as u64;
                    used += n;
                    if let Some(ev) = self.payload_done() {
                        return Ok((used, Some(ev)));
                    }
                }
                State::Message => {
                    let len = self.abort.as_ref().map_or(0, |a| a.len);
                    let n = (len - self.msg.len()).min(rest.len());
                    self.msg.extend_from_slice(&rest[..n]);
                    self.pos += n as u64;
                    used += n;
                    if self.msg.len() == len {
                        return Ok((used, Some(self.aborted(false))));
                    }
                }
                State::Ended => {
                    let at = self.pos;
                    let second = format::MAGIC_FAMILY.iter().zip(rest).all(|(a, b)| a == b);
                    let what = if second {
                        "a second stream follows the END trailer (two streams concatenated)"
                    } else {
                        "trailing data after the END trailer"
                    };
                    return Err(self.fail(format!("byte {at}: {what}")));
                }
                State::Failed => return Err(integrity("decoder used after a failure")),
            }
        }
        Ok((used, None))
    }

    /// Supplies the buffer asked for with [`Event::NeedBuffer`].
    pub fn give_buffer(&mut self, mut buf: B) {
        if self.state == State::NeedBuffer {
            buf.start(self.want);
            let (seq, at, sha) = self.meta;
            self.cur = Some(Frame { seq, at, sha, buf });
            self.state = State::Payload;
        }
    }

    /// True between two records, with none of the next one read: a block
    /// that starts here may hold one whole frame (see [`DecodeStage`](crate::DecodeStage)).
    pub fn at_record(&self) -> bool {
        self.state == State::Record && self.fill == 0
    }

    /// The payload length asked for, while [`Event::NeedBuffer`] is pending.
    pub fn payload_wanted(&self) -> Option<usize> {
        (self.state == State::NeedBuffer).then_some(self.want)
    }

    /// Supplies, for [`Event::NeedBuffer`], a buffer that already holds the
    /// whole payload (exactly [`payload_wanted`](Self::payload_wanted)
    /// bytes); returns the complete frame, or the buffer back when that
    /// is not what is pending.
    pub fn give_full_buffer(&mut self, buf: B) -> Result<Frame<B>, B> {
        if self.payload_wanted() != Some(buf.payload().len()) {
            return Err(buf);
        }
        let (seq, at, sha) = self.meta;
        self.cur = Some(Frame { seq, at, sha, buf });
        self.state = State::Payload;
        match self.payload_read(self.want) {
            Some(Event::Frame(f)) => Ok(f),
            _ => unreachable!("a full payload completes its frame"),
        }
    }

    /// The buffer being filled and how many bytes it still lacks, when the
    /// parser is inside a payload (for drivers that read into it directly).
    pub fn payload_slot(&mut self) -> Option<(&mut B, usize)> {
        if self.state != State::Payload {
            return None;
        }
        let want = self.want;
        let frame = self.cur.as_mut()?;
        let left = want - frame.buf.payload().len();
        Some((&mut frame.buf, left))
    }

    /// Records `n` bytes a driver put into [`payload_slot`](Self::payload_slot);
    /// returns the frame when it is complete.
    pub fn payload_read(&mut self, n: usize) -> Option<Event<B>> {
        self.pos += n as u64;
        self.payload_done()
    }

    fn payload_done(&mut self) -> Option<Event<B>> {
        let frame = self.cur.as_ref()?;
        if frame.buf.payload().len() < self.want {
            return None;
        }
        let frame = self.cur.take()?;
        self.state = State::Record;
        Some(Event::Frame(frame))
    }

    /// Handles a complete 64-byte record.
    fn record(&mut self) -> anyhow::Result<Option<Event<B>>> {
        let at = self.rec_at;
        if self.state == State::Header {
            let h = match Header::decode(&self.rec) {
                Ok(h) => h,
                Err(e) => return Err(self.fail(format!("stream header at byte {at}: {e}"))),
            };
            self.max_frame_len = h.max_frame_len as usize;
            self.digest = Some(StreamDigest::new(&self.rec));
            self.state = State::Record;
            return Ok(None);
        }
        let seq = self.next_seq();
        let body = match format::decode_body(&self.rec) {
            Ok(b) => b,
            Err(e) => {
                let what = if format::likely_trailer(&self.rec) {
                    format!("trailer at byte {at} (after {seq} frames): {e}")
                } else {
                    format!("frame {seq} at byte {at}: {e}")
                };
                return Err(self.fail(what));
            }
        };
        let digest = self.digest.as_mut().expect("header was read");
        match body {
            Body::Data(d) => {
                let expect_off = digest.bytes();
                if d.seq != seq {
                    let how = if d.seq < seq {
                        "a repeated or reordered frame"
                    } else {
                        "frames dropped or reordered"
                    };
                    return Err(self.fail(format!(
                        "frame {seq} at byte {at}: out of sequence: found frame {} ({how})",
                        d.seq
                    )));
                }
                if d.offset != expect_off {
                    return Err(self.fail(format!(
                        "frame {seq} at byte {at}: out of sequence: payload offset {} where {expect_off} was expected",
                        d.offset
                    )));
                }
                let len = d.len as usize;
                if len == 0 || len > self.max_frame_len {
                    return Err(self.fail(format!(
                        "frame {seq} at byte {at}: payload length {len} outside 1..={}",
                        self.max_frame_len
                    )));
                }
                digest.add(&self.rec, d.len);
                self.want = len;
                self.meta = (seq, at, d.sha);
                self.state = State::NeedBuffer;
                Ok(Some(Event::NeedBuffer))
            }
            Body::End(end) => {
                let got = digest.value();
                if end.frames != got.frames || end.bytes != got.bytes {
                    let what = format!(
                        "END trailer at byte {at}: sender sent {} frames ({} bytes), {} frames ({} bytes) arrived (frames dropped)",
                        end.frames, end.bytes, got.frames, got.bytes
                    );
                    return Err(self.fail(what));
                }
                if end.sha256 != got.sha256 {
                    return Err(self.fail(format!(
                        "END trailer at byte {at}: stream digest mismatch (frame headers altered)"
                    )));
                }
                self.end = Some(end);
                self.state = State::Ended;
                Ok(Some(Event::End))
            }
            Body::Abort {
                len,
                frames,
                bytes,
                sha,
            } => {
                let len = len as usize;
                if len > format::MAX_ABORT_MESSAGE {
                    return Err(self.fail(format!(
                        "ABORT trailer at byte {at}: message length {len} over {}",
                        format::MAX_ABORT_MESSAGE
                    )));
                }
                self.abort = Some(AbortInfo {
                    at,
                    len,
                    frames,
                    bytes,
                    sha,
                });
                self.msg.clear();
                self.msg.reserve_exact(len);
                if len == 0 {
                    return Ok(Some(self.aborted(false)));
                }
                self.state = State::Message;
                Ok(None)
            }
        }
    }

    fn aborted(&mut self, truncated: bool) -> Event<B> {
        self.state = State::Failed;
        let a = self.abort.take().expect("abort info");
        let got = self.frames();
        let text = String::from_utf8_lossy(&self.msg);
        let text = text.trim();
        let mut notes = Vec::new();
        if truncated {
            notes.push("message truncated".to_string());
        } else if format::sha256(&self.msg) != a.sha {
            notes.push("message damaged".to_string());
        }
        if a.frames != got {
            notes.push(format!(
                "sender had sent {} frames ({} bytes), {got} arrived",
                a.frames, a.bytes
            ));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        let text = if text.is_empty() {
            "no reason given"
        } else {
            text
        };
        Event::Abort(format!(
            "sender aborted the stream after {got} frames (ABORT at byte {}){notes}: {text}",
            a.at
        ))
    }

    /// Ends the input: `Ok` with the END trailer's digest when the stream
    /// was complete; otherwise the error saying where it was cut (an ABORT
    /// whose message was cut is still reported as the sender's abort).
    pub fn finish(&mut self) -> anyhow::Result<Digest> {
        let pos = self.pos;
        let seq = self.next_seq();
        let what = match self.state {
            State::Ended => return self.end.ok_or_else(|| integrity("no END trailer")),
            State::Header if pos == 0 => "empty input: no stream header".to_string(),
            State::Header => format!("truncated stream header ({pos} of {RECORD_LEN} bytes)"),
            State::Record if self.fill == 0 => format!(
                "truncated: stream ends at byte {pos} after {seq} frames, missing END trailer"
            ),
            State::Record => format!(
                "truncated: frame {seq} at byte {}: header cut after {} of {RECORD_LEN} bytes, missing END trailer",
                self.rec_at, self.fill
            ),
            State::NeedBuffer | State::Payload => {
                let have = self.cur.as_ref().map_or(0, |f| f.buf.payload().len());
                let (seq, at, _) = self.meta;
                format!(
                    "truncated: frame {seq} at byte {at}: payload cut after {have} of {} bytes, missing END trailer",
                    self.want
                )
            }
            State::Message => match self.aborted(true) {
                Event::Abort(text) => text,
                _ => unreachable!("aborted returns Abort"),
            },
            State::Failed => "decoder used after a failure".to_string(),
        };
        self.state = State::Failed;
        Err(integrity(what))
    }
}
