//! [`Follower`]: a cheap record follower for a ZFS send stream.
//!
//! It reads record headers and skips payloads, nothing more: no checksum
//! work, no allocation. The framing encoder feeds it every byte it passes
//! on, and asks at the end whether the stream it carried was a complete ZFS
//! stream (ended by its final `DRR_END`) or was cut short.

use super::format::{detect_order, ByteOrder, Header, RecordType, DMU_COMPOUNDSTREAM, RECORD_SIZE};

/// Bytes needed to decide whether a stream is ZFS: `drr_type`,
/// `drr_payloadlen` and `drr_begin.drr_magic`.
pub(crate) const DETECT_BYTES: usize = 16;

/// Where the follower is in the record structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the first BEGIN.
    Start,
    /// After the outer BEGIN of a compound (`-R`) stream: its END comes next.
    CompoundHeader,
    /// Between substreams of a compound stream: a BEGIN or the final END.
    CompoundTop,
    /// Inside a substream; `compound` tells whether its END returns to
    /// [`Phase::CompoundTop`] or ends the stream.
    Sub {
        /// The substream belongs to a compound stream.
        compound: bool,
    },
    /// After the final END.
    Done,
}

impl Phase {
    /// The phase after a record of type `ty` (with BEGIN header type
    /// `hdrtype`), or why that record cannot come here.
    pub(crate) fn next(self, ty: RecordType, hdrtype: u64) -> Result<Phase, &'static str> {
        use RecordType::{Begin, End};
        match (self, ty) {
            (Phase::Start, Begin) if hdrtype == DMU_COMPOUNDSTREAM => Ok(Phase::CompoundHeader),
            (Phase::Start, Begin) => Ok(Phase::Sub { compound: false }),
            (Phase::Start, _) => Err("the stream does not start with a BEGIN record"),
            (Phase::CompoundHeader, End) => Ok(Phase::CompoundTop),
            (Phase::CompoundHeader, _) => {
                Err("a compound stream's BEGIN must be followed by its END record")
            }
            (Phase::CompoundTop, Begin) if hdrtype == DMU_COMPOUNDSTREAM => {
                Err("a compound BEGIN inside a compound stream")
            }
            (Phase::CompoundTop, Begin) => Ok(Phase::Sub { compound: true }),
            (Phase::CompoundTop, End) => Ok(Phase::Done),
            (Phase::CompoundTop, _) => {
                Err("a record outside any substream of a compound stream (expected BEGIN or the final END)")
            }
            (Phase::Sub { .. }, Begin) => Err("a BEGIN record inside a substream (missing END)"),
            (Phase::Sub { compound: true }, End) => Ok(Phase::CompoundTop),
            (Phase::Sub { compound: false }, End) => Ok(Phase::Done),
            (Phase::Sub { .. }, _) => Ok(self),
            (Phase::Done, _) => Err("a record after the final END"),
        }
    }
}

/// What the follower knows of the last record it saw, for messages.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecordNote {
    /// Its type.
    pub ty: Option<RecordType>,
    /// Its object number, where the type has one.
    pub object: Option<u64>,
    /// Its offset in the object, where the type has one.
    pub offset: Option<u64>,
    /// The payload size after its header.
    pub payload: u64,
}

impl RecordNote {
    /// Notes a record from its header.
    pub(crate) fn of(h: &Header<'_>, ty: RecordType, payload: u64) -> RecordNote {
        use super::format::off;
        let (object, offset) = match ty {
            RecordType::Object => (Some(h.u64(off::OBJECT_OBJECT)), None),
            RecordType::Write => (
                Some(h.u64(off::WRITE_OBJECT)),
                Some(h.u64(off::WRITE_OFFSET)),
            ),
            RecordType::Free => (Some(h.u64(off::FREE_OBJECT)), Some(h.u64(off::FREE_OFFSET))),
            RecordType::WriteByref => (
                Some(h.u64(off::BYREF_OBJECT)),
                Some(h.u64(off::BYREF_OFFSET)),
            ),
            RecordType::Spill => (Some(h.u64(off::SPILL_OBJECT)), None),
            RecordType::WriteEmbedded => (
                Some(h.u64(off::EMBEDDED_OBJECT)),
                Some(h.u64(off::EMBEDDED_OFFSET)),
            ),
            RecordType::Redact => (
                Some(h.u64(off::REDACT_OBJECT)),
                Some(h.u64(off::REDACT_OFFSET)),
            ),
            RecordType::FreeObjects => (Some(h.u64(off::FREEOBJECTS_FIRSTOBJ)), None),
            RecordType::ObjectRange => (Some(h.u64(off::RANGE_FIRSTOBJ)), None),
            RecordType::Begin | RecordType::End => (None, None),
        };
        RecordNote {
            ty: Some(ty),
            object,
            offset,
            payload,
        }
    }

    /// "object 5 offset 131072", or "" for BEGIN and END.
    fn detail(&self) -> String {
        match (self.object, self.offset) {
            (Some(o), Some(off)) => format!("object {o} offset {off}"),
            (Some(o), None) if self.ty == Some(RecordType::FreeObjects) => {
                format!("first object {o}")
            }
            (Some(o), None) => format!("object {o}"),
            _ => String::new(),
        }
    }

    /// Where a stream that stops here stops, e.g. "inside a WRITE record
    /// payload (object 5 offset 131072; 1000 of 4096 payload bytes present)".
    /// `payload_left` is what is missing of this record's payload, `hdr_len`
    /// how much of the next header (record `next_record`) arrived.
    pub(crate) fn whereabouts(
        &self,
        payload_left: u64,
        hdr_len: usize,
        next_record: u64,
    ) -> String {
        let name = self.ty.map_or("unknown", RecordType::name);
        let detail = self.detail();
        let paren = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        if payload_left > 0 {
            let sep = if detail.is_empty() { "" } else { "; " };
            format!(
                "inside a {name} record payload ({detail}{sep}{} of {} payload bytes present)",
                self.payload - payload_left,
                self.payload
            )
        } else if hdr_len > 0 {
            format!(
                "inside the header of record {next_record} ({hdr_len} of {RECORD_SIZE} bytes), after a {name} record{paren}"
            )
        } else {
            format!("after a {name} record{paren}")
        }
    }
}

/// Follows the records of a ZFS send stream cheaply, to tell whether it is
/// complete. Feed it every byte, in any pieces.
#[derive(Debug, Clone)]
pub struct Follower {
    hdr: [u8; RECORD_SIZE],
    hdr_len: usize,
    payload_left: u64,
    order: Option<ByteOrder>,
    zfs: Option<bool>,
    total: u64,
    records: u64,
    last: RecordNote,
    phase: Phase,
    trailing: u64,
    broken: Option<(u64, String)>,
    substreams: Vec<(u64, String)>,
}

/// The most substreams whose BEGIN a [`Follower`] remembers.
pub const MAX_REMEMBERED_SUBSTREAMS: usize = 10_000;

impl Default for Follower {
    fn default() -> Self {
        Follower::new()
    }
}

impl Follower {
    /// A follower at the start of a stream.
    pub fn new() -> Self {
        Follower {
            hdr: [0; RECORD_SIZE],
            hdr_len: 0,
            payload_left: 0,
            order: None,
            zfs: None,
            total: 0,
            records: 0,
            last: RecordNote::default(),
            phase: Phase::Start,
            trailing: 0,
            broken: None,
            substreams: Vec::new(),
        }
    }

    /// Follows the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        let start_total = self.total;
        self.total += data.len() as u64;
        if self.zfs == Some(false) || self.broken.is_some() {
            return;
        }
        if self.phase == Phase::Done {
            self.trailing += data.len() as u64;
            return;
        }
        let mut pos = start_total;
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= n as u64;
                data = &data[n..];
                pos += n as u64;
                continue;
            }
            if self.phase == Phase::Done {
                self.trailing += data.len() as u64;
                return;
            }
            let n = (RECORD_SIZE - self.hdr_len).min(data.len());
            self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
            self.hdr_len += n;
            data = &data[n..];
            pos += n as u64;
            if self.zfs.is_none() && self.hdr_len >= DETECT_BYTES {
                self.order = detect_order(&self.hdr[..DETECT_BYTES]);
                self.zfs = Some(self.order.is_some());
                if self.order.is_none() {
                    return;
                }
            }
            if self.hdr_len == RECORD_SIZE {
                self.hdr_len = 0;
                if let Err(why) = self.header(pos - RECORD_SIZE as u64) {
                    self.broken = Some((pos - RECORD_SIZE as u64, why));
                    return;
                }
            }
        }
    }

    fn header(&mut self, at: u64) -> Result<(), String> {
        let order = self.order.unwrap_or(ByteOrder::Little);
        let h = Header {
            raw: &self.hdr,
            order,
        };
        let raw_ty = h.type_raw();
        let ty = RecordType::from_u32(raw_ty)
            .ok_or_else(|| format!("unknown record type {raw_ty} at byte {at}"))?;
        let hdrtype = if ty == RecordType::Begin {
            h.hdrtype()
        } else {
            0
        };
        self.phase = self
            .phase
            .next(ty, hdrtype)
            .map_err(|why| format!("{why} (record {} at byte {at})", self.records))?;
        if ty == RecordType::Begin
            && hdrtype == super::format::DMU_SUBSTREAM
            && self.substreams.len() < MAX_REMEMBERED_SUBSTREAMS
        {
            let toguid = h.u64(super::format::off::BEGIN_TOGUID);
            self.substreams.push((toguid, h.toname()));
        }
        let payload = h.payload_size(ty);
        self.last = RecordNote::of(&h, ty, payload);
        self.payload_left = payload;
        self.records += 1;
        Ok(())
    }

    /// `None` until enough bytes arrived to decide; then whether the stream
    /// starts with a `DRR_BEGIN` record carrying the ZFS magic (either byte order).
    pub fn is_zfs(&self) -> Option<bool> {
        self.zfs
    }

    /// True iff the stream is ZFS, its last record is the final `DRR_END`
    /// (the outermost one of a compound `-R` stream), and nothing follows it.
    pub fn is_complete(&self) -> bool {
        self.zfs == Some(true)
            && self.broken.is_none()
            && self.phase == Phase::Done
            && self.payload_left == 0
            && self.trailing == 0
    }

    /// `(drr_toguid, drr_toname)` of each substream's BEGIN so far, in
    /// stream order (the first [`MAX_REMEMBERED_SUBSTREAMS`]): one for a
    /// plain stream, one per snapshot for `-I`/`-R` packages.
    pub fn substreams(&self) -> &[(u64, String)] {
        &self.substreams
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Records whose header was seen so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// One sentence saying where and how the stream stops short of complete
    /// (or that it is complete).
    pub fn describe_incomplete(&self) -> String {
        let n = self.total;
        if self.zfs == Some(false) {
            return format!(
                "not a ZFS send stream: its first {n} bytes do not start with a BEGIN record with the ZFS magic"
            );
        }
        if self.zfs.is_none() {
            return if n == 0 {
                "empty stream: no ZFS records".to_string()
            } else {
                format!(
                    "stream ends after {n} bytes, before the first ZFS record header is complete"
                )
            };
        }
        if let Some((at, why)) = &self.broken {
            return format!("ZFS stream cannot be followed past byte {at}: {why}");
        }
        if self.phase == Phase::Done {
            return if self.trailing > 0 {
                format!(
                    "ZFS stream has {} bytes after its final END record (stream is {n} bytes)",
                    self.trailing
                )
            } else {
                format!(
                    "ZFS stream is complete ({n} bytes, {} records)",
                    self.records
                )
            };
        }
        let whereabouts = self
            .last
            .whereabouts(self.payload_left, self.hdr_len, self.records);
        let missing = match self.phase {
            Phase::CompoundTop | Phase::Sub { compound: true } | Phase::CompoundHeader => {
                "no final END record of the compound (-R) stream"
            }
            _ => "no final END record",
        };
        format!("ZFS stream ends after {n} bytes {whereabouts}; {missing}")
    }
}
