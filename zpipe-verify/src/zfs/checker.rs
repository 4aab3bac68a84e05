//! [`Checker`]: the strict ZFS send stream checker behind `zpipe-verify --zfs`.
//!
//! It walks every replay record of a raw `zfs send` stream (no framing),
//! streaming payloads through Fletcher-4 without buffering them, and fails
//! on the first inconsistency: a cut anywhere, an unknown record type, a
//! record out of place, a field out of range, a payload size that the
//! header rules (`zfs_ioctl.h`) do not allow, a per-record checksum or an
//! END checksum that does not match, or bytes after the final END.
//!
//! Checksums follow OpenZFS `dump_record()` (module/zfs/dmu_send.c,
//! lib/libzfs/libzfs_sendrecv.c) and `receive_read_payload_and_next_header()`
//! (module/zfs/dmu_recv.c): one running Fletcher-4 per (sub)stream, reset at
//! each BEGIN, over every byte in stream order, as 32-bit words in the
//! sender's byte order. A non-BEGIN record's last 32 bytes
//! (`drr_checksum.drr_checksum`) hold the running sum over everything before
//! them, or zero in streams older than per-record checksums (zfs-fuse, old
//! Solaris), and the receiver accepts zero. `drr_end.drr_checksum` holds the
//! running sum over everything before the END record. In a compound (`-R`)
//! stream, the outer BEGIN and its nvlist are summed on their own and
//! checked by the END that follows them; the final END is all zeros.

use std::fmt;
use std::io::Read;

use zpipe_core::fletcher4::{Fletcher4, WordOrder};

use super::follower::{Phase, RecordNote};
use super::format::{
    begin_flag, detect_order, feature, off, ByteOrder, Header, RecordType, BPE_PAYLOAD_SIZE,
    CHECKSUM_OFFSET, DMU_COMPOUNDSTREAM, DMU_SUBSTREAM, DN_MAX_BONUSLEN, MAXNAMELEN,
    NUM_RECORD_TYPES, RECORD_SIZE, SPA_MAXBLOCKSIZE, UNION_OFFSET,
};

/// Default bound on a BEGIN record's nvlist payload (`drr_payloadlen`).
pub const DEFAULT_MAX_BEGIN_PAYLOAD: u64 = 64 << 20;
/// How many substreams a [`Summary`] lists one by one; the rest are counted.
pub const MAX_LISTED_SUBSTREAMS: usize = 1000;
/// `SPA_MINBLOCKSIZE`: blocks are multiples of 512 bytes.
const SPA_MINBLOCKSIZE: u64 = 512;
/// `DNODES_PER_BLOCK`: an OBJECT_RANGE covers one 16 KiB dnode block of 512-byte slots.
const DNODES_PER_BLOCK: u64 = 32;
/// `DNODE_MAX_SLOTS`: the most slots one dnode may take.
const DNODE_MAX_SLOTS: u8 = 32;
/// `DMU_OT_NUMTYPES`: legacy object types are below this.
const DMU_OT_NUMTYPES: u32 = 54;
/// `DMU_OT_NEWTYPE`: flag of the bit-encoded object types.
const DMU_OT_NEWTYPE: u32 = 0x80;
/// `DMU_OT_BYTESWAP_MASK`: byteswap function index of a new-style type.
const DMU_OT_BYTESWAP_MASK: u32 = 0x1f;
/// `DMU_BSWAP_NUMFUNCS`: number of byteswap functions.
const DMU_BSWAP_NUMFUNCS: u32 = 10;
/// `DMU_OST_NUMTYPES`: objset types (`drr_begin.drr_type`) are below this.
const DMU_OST_NUMTYPES: u32 = 6;
/// Bound on checksum and compression function numbers: above every value
/// OpenZFS has defined (14 checksums, 17 compressors), so only a damaged
/// field trips it.
const MAX_FUNCTION: u8 = 32;
/// `NUM_BP_EMBEDDED_TYPES`: embedded block pointer types.
const NUM_BP_EMBEDDED_TYPES: u8 = 3;
/// `DMU_OBJECT_END`: a FREE length meaning "to the end of the object".
const DMU_OBJECT_END: u64 = u64::MAX;
/// Bits of `drr_versioninfo` above the header type and feature flags (reserved).
const VERSIONINFO_RESERVED_SHIFT: u32 = 32;
/// Bytes of the packed nvlist header checked at the start of a BEGIN payload.
const NVLIST_HEADER: usize = 4;

/// Options of a [`Checker`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Fail on records without a per-record checksum (streams older than
    /// OpenZFS 0.7 / zfs-fuse have none; by default they are accepted and
    /// only the END checksums are checked).
    pub require_record_checksums: bool,
    /// Largest BEGIN nvlist payload accepted, in bytes.
    pub max_begin_payload: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            require_record_checksums: false,
            max_begin_payload: DEFAULT_MAX_BEGIN_PAYLOAD,
        }
    }
}

/// What kind of failure a [`ZfsError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZfsErrorKind {
    /// The input does not start with a ZFS BEGIN record.
    NotZfs,
    /// The stream ends before its final END record.
    Truncated,
    /// A record or field is malformed or out of place.
    Corrupt,
    /// A per-record or END checksum does not match.
    Checksum,
    /// Bytes follow the final END record.
    TrailingData,
}

/// A failed check: what, where (byte offset of the record or byte) and which record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsError {
    /// The kind of failure.
    pub kind: ZfsErrorKind,
    /// Byte offset in the stream where the failing record (or byte) starts.
    pub offset: u64,
    /// Zero-based index of the failing record.
    pub record: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ZfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (at byte {}, record {})",
            self.message, self.offset, self.record
        )
    }
}

impl std::error::Error for ZfsError {}

/// What one substream (one BEGIN…END pair) held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubstreamSummary {
    /// `drr_toname`: the snapshot sent.
    pub toname: String,
    /// `drr_toguid`.
    pub toguid: u64,
    /// `drr_fromguid` (0 for a full stream).
    pub fromguid: u64,
    /// Feature flags (`DMU_BACKUP_FEATURE_*`).
    pub features: u64,
    /// `drr_flags` (`DRR_FLAG_*`).
    pub flags: u32,
    /// `drr_creation_time` (seconds since the epoch).
    pub creation_time: u64,
    /// Records per `drr_type`, BEGIN and END included.
    pub records: [u64; NUM_RECORD_TYPES],
    /// Bytes of the substream, BEGIN to END inclusive.
    pub bytes: u64,
    /// Payload bytes (data after record headers).
    pub payload_bytes: u64,
    /// Per-record checksums found and verified.
    pub record_checksums: u64,
}

/// The outer header of a compound (`zfs send -R`, `-I`, `-p`) stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompoundHeader {
    /// `drr_toname` of the outer BEGIN.
    pub toname: String,
    /// Its feature flags.
    pub features: u64,
    /// Size of its packed nvlist payload.
    pub nvlist_bytes: u64,
}

/// The result of a successful check: what the stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Byte order of the sender.
    pub order: ByteOrder,
    /// The outer header, for a compound stream.
    pub compound: Option<CompoundHeader>,
    /// The substreams, in order (the first [`MAX_LISTED_SUBSTREAMS`]).
    pub substreams: Vec<SubstreamSummary>,
    /// How many substreams there were.
    pub substream_count: u64,
    /// Records per `drr_type` over the whole stream.
    pub records: [u64; NUM_RECORD_TYPES],
    /// Total bytes.
    pub bytes: u64,
    /// Payload bytes over the whole stream.
    pub payload_bytes: u64,
    /// END checksums verified (one per substream, one per compound header).
    pub end_checksums: u64,
    /// Per-record checksums verified.
    pub record_checksums: u64,
    /// Records (not BEGIN) that carried no per-record checksum.
    pub records_without_checksum: u64,
}

impl Summary {
    /// Total number of records.
    pub fn record_count(&self) -> u64 {
        self.records.iter().sum()
    }

    /// The name the stream sends to: the compound header's, else the substream's.
    pub fn to_name(&self) -> &str {
        match (&self.compound, self.substreams.first()) {
            (Some(c), _) => &c.toname,
            (None, Some(s)) => &s.toname,
            (None, None) => "",
        }
    }
}

fn flag_names(bits: u64, names: &[(u64, &str)]) -> String {
    if bits == 0 {
        return "none".to_string();
    }
    let mut out: Vec<String> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let known: u64 = names.iter().map(|(b, _)| b).fold(0, |a, b| a | b);
    if bits & !known != 0 {
        out.push(format!("0x{:x}", bits & !known));
    }
    out.join(",")
}

fn record_counts(records: &[u64; NUM_RECORD_TYPES]) -> String {
    let parts: Vec<String> = RecordType::ALL
        .iter()
        .filter(|t| records[**t as usize] > 0)
        .map(|t| format!("{} {}", t.name(), records[*t as usize]))
        .collect();
    parts.join(", ")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let begin_flags: Vec<(u64, &str)> = begin_flag::NAMES
            .iter()
            .map(|(b, n)| (u64::from(*b), *n))
            .collect();
        writeln!(f, "ZFS send stream: complete and consistent")?;
        writeln!(
            f,
            "  bytes:      {} ({} records, {} payload bytes)",
            self.bytes,
            self.record_count(),
            self.payload_bytes
        )?;
        writeln!(f, "  byte order: {}", self.order.name())?;
        if let Some(c) = &self.compound {
            writeln!(
                f,
                "  compound:   {} ({} substreams, {} byte nvlist header, features {})",
                c.toname,
                self.substream_count,
                c.nvlist_bytes,
                flag_names(c.features, feature::NAMES)
            )?;
        }
        for (i, s) in self.substreams.iter().enumerate() {
            let prefix = if self.compound.is_some() {
                format!("  [{}] ", i + 1)
            } else {
                "  ".to_string()
            };
            writeln!(f, "{prefix}to-name:   {}", s.toname)?;
            writeln!(f, "{prefix}to-guid:   {} (0x{:016x})", s.toguid, s.toguid)?;
            if s.fromguid == 0 {
                writeln!(f, "{prefix}from-guid: 0 (full stream)")?;
            } else {
                writeln!(
                    f,
                    "{prefix}from-guid: {} (0x{:016x}, incremental)",
                    s.fromguid, s.fromguid
                )?;
            }
            writeln!(
                f,
                "{prefix}features:  {} (0x{:x}); flags: {} (0x{:x})",
                flag_names(s.features, feature::NAMES),
                s.features,
                flag_names(u64::from(s.flags), &begin_flags),
                s.flags
            )?;
            writeln!(
                f,
                "{prefix}records:   {} ({} bytes)",
                record_counts(&s.records),
                s.bytes
            )?;
        }
        if self.substream_count > self.substreams.len() as u64 {
            writeln!(
                f,
                "  ... and {} more substreams",
                self.substream_count - self.substreams.len() as u64
            )?;
        }
        if self.compound.is_some() {
            writeln!(f, "  records:    {}", record_counts(&self.records))?;
        }
        let per_record = if self.record_checksums == 0 {
            "none (older stream format; END checksums cover everything)".to_string()
        } else if self.records_without_checksum == 0 {
            format!("{} verified", self.record_checksums)
        } else {
            format!(
                "{} verified, {} records without",
                self.record_checksums, self.records_without_checksum
            )
        };
        write!(
            f,
            "  checksums:  fletcher-4, {} END checksums verified; per-record: {per_record}",
            self.end_checksums
        )
    }
}

/// The strict checker: feed it the stream in any pieces, then [`finish`](Checker::finish).
pub struct Checker {
    opts: CheckOptions,
    hdr: [u8; RECORD_SIZE],
    hdr_len: usize,
    payload_left: u64,
    nvhead: [u8; NVLIST_HEADER],
    nvhead_len: usize,
    nvhead_at: u64,
    check_nvhead: bool,
    order: Option<ByteOrder>,
    sum: Fletcher4,
    pos: u64,
    record_start: u64,
    records: u64,
    phase: Phase,
    last: RecordNote,
    sub: SubstreamSummary,
    sub_start: u64,
    sub_has_cksum: Option<bool>,
    summary: Summary,
    failed: Option<ZfsError>,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("pos", &self.pos)
            .field("records", &self.records)
            .field("phase", &self.phase)
            .finish()
    }
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new(CheckOptions::default())
    }
}

fn word_order(order: ByteOrder) -> WordOrder {
    match order {
        ByteOrder::Little => WordOrder::Little,
        ByteOrder::Big => WordOrder::Big,
    }
}

/// `DMU_OT_IS_VALID`.
fn object_type_valid(ot: u32) -> bool {
    if ot & DMU_OT_NEWTYPE != 0 {
        ot <= 0xff && (ot & DMU_OT_BYTESWAP_MASK) < DMU_BSWAP_NUMFUNCS
    } else {
        ot < DMU_OT_NUMTYPES
    }
}

/// Size of each `drr_u` member: bytes past it (up to the record checksum) are zero.
fn body_size(ty: RecordType) -> usize {
    match ty {
        RecordType::Begin => RECORD_SIZE - UNION_OFFSET,
        RecordType::End => 40,
        RecordType::Object => 56,
        RecordType::FreeObjects => 24,
        RecordType::Write => 132,
        RecordType::Free => 32,
        RecordType::WriteByref => 104,
        RecordType::Spill => 80,
        RecordType::WriteEmbedded => 48,
        RecordType::ObjectRange => 64,
        RecordType::Redact => 32,
    }
}

impl Checker {
    /// A checker at the start of a stream.
    pub fn new(opts: CheckOptions) -> Self {
        Checker {
            opts,
            hdr: [0; RECORD_SIZE],
            hdr_len: 0,
            payload_left: 0,
            nvhead: [0; NVLIST_HEADER],
            nvhead_len: 0,
            nvhead_at: 0,
            check_nvhead: false,
            order: None,
            sum: Fletcher4::new(),
            pos: 0,
            record_start: 0,
            records: 0,
            phase: Phase::Start,
            last: RecordNote::default(),
            sub: SubstreamSummary::default(),
            sub_start: 0,
            sub_has_cksum: None,
            summary: Summary {
                order: ByteOrder::Little,
                compound: None,
                substreams: Vec::new(),
                substream_count: 0,
                records: [0; NUM_RECORD_TYPES],
                bytes: 0,
                payload_bytes: 0,
                end_checksums: 0,
                record_checksums: 0,
                records_without_checksum: 0,
            },
            failed: None,
        }
    }

    fn err(&self, kind: ZfsErrorKind, message: impl Into<String>) -> ZfsError {
        ZfsError {
            kind,
            offset: self.record_start,
            record: self.records,
            message: message.into(),
        }
    }

    fn corrupt(&self, what: impl fmt::Display) -> ZfsError {
        let ty = RecordType::from_u32(self.order.unwrap_or(ByteOrder::Little).u32(&self.hdr, 0))
            .map_or("record".to_string(), |t| format!("{t} record"));
        self.err(ZfsErrorKind::Corrupt, format!("corrupt {ty}: {what}"))
    }

    /// Checks the next bytes of the stream. After an error every later
    /// call returns the same error.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ZfsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(data);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), ZfsError> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let chunk = &data[..n];
                if self.check_nvhead {
                    self.nvlist_header(chunk)?;
                }
                self.sum.update(chunk);
                self.payload_left -= n as u64;
                self.pos += n as u64;
                data = &data[n..];
                continue;
            }
            if self.phase == Phase::Done {
                self.record_start = self.pos;
                return Err(self.err(
                    ZfsErrorKind::TrailingData,
                    format!(
                        "{} or more bytes of trailing data after the final END record",
                        data.len()
                    ),
                ));
            }
            if self.hdr_len == 0 {
                self.record_start = self.pos;
            }
            let n = (RECORD_SIZE - self.hdr_len).min(data.len());
            self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
            self.hdr_len += n;
            self.pos += n as u64;
            data = &data[n..];
            if self.order.is_none() && self.hdr_len >= super::follower::DETECT_BYTES {
                let order = detect_order(&self.hdr).ok_or_else(|| {
                    self.err(
                        ZfsErrorKind::NotZfs,
                        "not a ZFS send stream: no BEGIN record with the ZFS magic (0x2F5BACBAC) at the start",
                    )
                })?;
                self.order = Some(order);
                self.summary.order = order;
            }
            if self.hdr_len == RECORD_SIZE {
                self.hdr_len = 0;
                self.record()?;
            }
        }
        Ok(())
    }

    fn nvlist_header(&mut self, chunk: &[u8]) -> Result<(), ZfsError> {
        let take = (NVLIST_HEADER - self.nvhead_len).min(chunk.len());
        self.nvhead[self.nvhead_len..self.nvhead_len + take].copy_from_slice(&chunk[..take]);
        self.nvhead_len += take;
        if self.nvhead_len == NVLIST_HEADER {
            self.check_nvhead = false;
            // nvs_header_t: encoding (NV_ENCODE_NATIVE 0 / NV_ENCODE_XDR 1),
            // endian (0 big / 1 little), two reserved zero bytes.
            let [enc, endian, r1, r2] = self.nvhead;
            if enc > 1 || endian > 1 || r1 != 0 || r2 != 0 {
                return Err(ZfsError {
                    kind: ZfsErrorKind::Corrupt,
                    offset: self.nvhead_at,
                    record: self.records.saturating_sub(1),
                    message: format!(
                        "corrupt BEGIN record: its payload is not a packed nvlist (header bytes {enc:02x} {endian:02x} {r1:02x} {r2:02x})"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Handles one complete record header in `self.hdr`.
    fn record(&mut self) -> Result<(), ZfsError> {
        let order = self.order.unwrap_or(ByteOrder::Little);
        let hdr = self.hdr;
        let h = Header { raw: &hdr, order };
        let raw_ty = h.type_raw();
        let ty = RecordType::from_u32(raw_ty).ok_or_else(|| {
            self.err(
                ZfsErrorKind::Corrupt,
                format!("unknown record type {raw_ty} (0x{raw_ty:x})"),
            )
        })?;
        let hdrtype = if ty == RecordType::Begin {
            h.hdrtype()
        } else {
            0
        };
        let from = self.phase;
        let next = from
            .next(ty, hdrtype)
            .map_err(|why| self.err(ZfsErrorKind::Corrupt, why))?;

        // Checksums first: a damaged field is better reported as the
        // checksum mismatch that proves it, where there is one.
        let before = self.sum.sums();
        if ty == RecordType::Begin {
            self.sum = Fletcher4::with_order(word_order(order));
            self.sum.update(&hdr);
        } else {
            self.sum.update(&hdr[..CHECKSUM_OFFSET]);
            let stored = h.record_checksum();
            let in_sub = matches!(from, Phase::Sub { .. });
            // The final END of a compound stream is checked to be all zeros
            // in `validate`; it carries no checksum of any kind.
            let final_end = from == Phase::CompoundTop && ty == RecordType::End;
            if stored != [0; 4] && !final_end {
                let want = self.sum.sums();
                if stored != want {
                    return Err(self.err(
                        ZfsErrorKind::Checksum,
                        format!(
                            "per-record checksum mismatch in {ty} record: stored {}, computed {}",
                            cksum_hex(stored),
                            cksum_hex(want)
                        ),
                    ));
                }
                self.summary.record_checksums += 1;
                if in_sub {
                    self.sub.record_checksums += 1;
                    self.sub_has_cksum.get_or_insert(true);
                }
            } else if in_sub {
                if self.sub_has_cksum == Some(true) || self.opts.require_record_checksums {
                    return Err(self.err(
                        ZfsErrorKind::Checksum,
                        format!("{ty} record has no per-record checksum"),
                    ));
                }
                self.sub_has_cksum = Some(false);
                self.summary.records_without_checksum += 1;
            }
            self.sum.update(&hdr[CHECKSUM_OFFSET..]);
        }

        let payload = h.payload_size(ty);
        self.validate(&h, ty, from, payload, before)?;

        // Bookkeeping.
        if ty == RecordType::Begin {
            if next == Phase::CompoundHeader {
                self.summary.compound = Some(CompoundHeader {
                    toname: h.toname(),
                    features: h.features(),
                    nvlist_bytes: payload,
                });
            } else {
                self.sub = SubstreamSummary {
                    toname: h.toname(),
                    toguid: h.u64(off::BEGIN_TOGUID),
                    fromguid: h.u64(off::BEGIN_FROMGUID),
                    features: h.features(),
                    flags: h.u32(off::BEGIN_FLAGS),
                    creation_time: h.u64(off::BEGIN_CREATION_TIME),
                    ..SubstreamSummary::default()
                };
                self.sub_start = self.record_start;
                self.sub_has_cksum = None;
            }
            self.check_nvhead = payload > 0;
            self.nvhead_len = 0;
            self.nvhead_at = self.pos;
        }
        self.summary.records[ty as usize] += 1;
        self.summary.payload_bytes += payload;
        if matches!(next, Phase::Sub { .. }) || matches!(from, Phase::Sub { .. }) {
            self.sub.records[ty as usize] += 1;
            self.sub.payload_bytes += payload;
        }
        if ty == RecordType::End && matches!(from, Phase::Sub { .. }) {
            self.sub.bytes = self.pos - self.sub_start;
            self.summary.substream_count += 1;
            if self.summary.substreams.len() < MAX_LISTED_SUBSTREAMS {
                self.summary.substreams.push(std::mem::take(&mut self.sub));
            }
        }
        self.last = RecordNote::of(&h, ty, payload);
        self.payload_left = payload;
        self.phase = next;
        self.records += 1;
        Ok(())
    }

    /// Field checks of one record.
    fn validate(
        &self,
        h: &Header<'_>,
        ty: RecordType,
        from: Phase,
        payload: u64,
        before: [u64; 4],
    ) -> Result<(), ZfsError> {
        let features = self.sub.features;
        let need = |bit: u64, name: &str| -> Result<(), ZfsError> {
            if features & bit == 0 {
                Err(self.corrupt(format!(
                    "this record needs the {name} feature, which the stream's BEGIN does not announce"
                )))
            } else {
                Ok(())
            }
        };
        let toguid = |at: usize| -> Result<(), ZfsError> {
            let g = h.u64(at);
            if g != self.sub.toguid {
                Err(self.corrupt(format!(
                    "drr_toguid 0x{g:016x} differs from the BEGIN's 0x{:016x}",
                    self.sub.toguid
                )))
            } else {
                Ok(())
            }
        };
        let no_overflow = |offset: u64, length: u64, what: &str| -> Result<(), ZfsError> {
            if offset.checked_add(length).is_none() {
                Err(self.corrupt(format!(
                    "{what} offset {offset} + length {length} overflows"
                )))
            } else {
                Ok(())
            }
        };
        let block_size = |size: u64, what: &str| -> Result<(), ZfsError> {
            if size == 0 || size % SPA_MINBLOCKSIZE != 0 || size > SPA_MAXBLOCKSIZE {
                Err(self.corrupt(format!(
                    "{what} {size} is not a block size (a multiple of {SPA_MINBLOCKSIZE} up to {SPA_MAXBLOCKSIZE})"
                )))
            } else {
                Ok(())
            }
        };

        // Padding after the record's own struct, up to the checksum, is zero.
        if ty != RecordType::Begin {
            let tail = &h.raw[UNION_OFFSET + body_size(ty)..CHECKSUM_OFFSET];
            if let Some(i) = tail.iter().position(|&b| b != 0) {
                return Err(self.corrupt(format!(
                    "nonzero padding byte at record offset {}",
                    UNION_OFFSET + body_size(ty) + i
                )));
            }
            let plen = u64::from(h.payloadlen());
            if plen != 0 && plen != payload {
                return Err(self.corrupt(format!(
                    "drr_payloadlen {plen} disagrees with the payload size {payload} its fields give"
                )));
            }
        }

        match ty {
            RecordType::Begin => {
                if detect_order(h.raw) != self.order {
                    return Err(
                        self.corrupt("bad magic (not 0x2F5BACBAC in the stream's byte order)")
                    );
                }
                let vi = h.u64(off::BEGIN_VERSIONINFO);
                if vi >> VERSIONINFO_RESERVED_SHIFT != 0 {
                    return Err(
                        self.corrupt(format!("reserved bits set in drr_versioninfo 0x{vi:x}"))
                    );
                }
                let hdrtype = h.hdrtype();
                if hdrtype != DMU_SUBSTREAM && hdrtype != DMU_COMPOUNDSTREAM {
                    return Err(self.corrupt(format!("unknown stream header type {hdrtype}")));
                }
                let unknown = h.features() & !feature::KNOWN;
                if unknown != 0 {
                    return Err(self.corrupt(format!(
                        "unknown feature flags 0x{unknown:x} (a newer OpenZFS, or damage)"
                    )));
                }
                let ost = h.u32(off::BEGIN_TYPE);
                if ost >= DMU_OST_NUMTYPES {
                    return Err(self.corrupt(format!("unknown objset type {ost}")));
                }
                let start = UNION_OFFSET + off::BEGIN_TONAME;
                let name = &h.raw[start..start + MAXNAMELEN];
                match name.iter().position(|&b| b == 0) {
                    None => return Err(self.corrupt("drr_toname is not NUL-terminated")),
                    Some(0) => return Err(self.corrupt("drr_toname is empty")),
                    Some(_) => {}
                }
                if payload > self.opts.max_begin_payload {
                    return Err(self.corrupt(format!(
                        "nvlist payload of {payload} bytes is larger than the {} byte bound",
                        self.opts.max_begin_payload
                    )));
                }
                if hdrtype == DMU_SUBSTREAM && h.u64(off::BEGIN_TOGUID) == 0 {
                    return Err(self.corrupt("drr_toguid is zero"));
                }
            }
            RecordType::End => {
                let stored = h.cksum_at(UNION_OFFSET + off::END_CHECKSUM);
                let guid = h.u64(off::END_TOGUID);
                match from {
                    Phase::CompoundTop => {
                        if stored != [0; 4] || guid != 0 || h.record_checksum() != [0; 4] {
                            return Err(self.corrupt(
                                "the final END record of a compound stream is not all zeros",
                            ));
                        }
                    }
                    _ => {
                        if stored != before {
                            return Err(self.err(
                                ZfsErrorKind::Checksum,
                                format!(
                                    "END checksum mismatch: stored {}, computed {}",
                                    cksum_hex(stored),
                                    cksum_hex(before)
                                ),
                            ));
                        }
                        if from == Phase::CompoundHeader {
                            if guid != 0 {
                                return Err(self.corrupt(format!(
                                    "drr_toguid 0x{guid:016x} in the END of a compound header (expected 0)"
                                )));
                            }
                        } else {
                            toguid(off::END_TOGUID)?;
                        }
                    }
                }
            }
            RecordType::Object => {
                toguid(off::OBJECT_TOGUID)?;
                let ot = h.u32(off::OBJECT_TYPE);
                let bt = h.u32(off::OBJECT_BONUSTYPE);
                if ot == 0 || !object_type_valid(ot) {
                    return Err(self.corrupt(format!("invalid object type {ot}")));
                }
                if !object_type_valid(bt) {
                    return Err(self.corrupt(format!("invalid bonus type {bt}")));
                }
                block_size(u64::from(h.u32(off::OBJECT_BLKSZ)), "drr_blksz")?;
                let bonuslen = u64::from(h.u32(off::OBJECT_BONUSLEN));
                let raw = u64::from(h.u32(off::OBJECT_RAW_BONUSLEN));
                if bonuslen > DN_MAX_BONUSLEN || raw > DN_MAX_BONUSLEN {
                    return Err(self.corrupt(format!(
                        "bonus length {bonuslen} (raw {raw}) exceeds {DN_MAX_BONUSLEN}"
                    )));
                }
                if raw != 0 {
                    need(feature::RAW, "raw")?;
                }
                if h.u8(off::OBJECT_DN_SLOTS) > DNODE_MAX_SLOTS {
                    return Err(self.corrupt(format!(
                        "drr_dn_slots {} exceeds {DNODE_MAX_SLOTS}",
                        h.u8(off::OBJECT_DN_SLOTS)
                    )));
                }
                let (ck, comp) = (h.u8(off::OBJECT_CHECKSUMTYPE), h.u8(off::OBJECT_COMPRESS));
                if ck >= MAX_FUNCTION || comp >= MAX_FUNCTION {
                    return Err(self.corrupt(format!(
                        "checksum type {ck} or compression {comp} out of range"
                    )));
                }
            }
            RecordType::FreeObjects => {
                toguid(off::FREEOBJECTS_TOGUID)?;
                no_overflow(
                    h.u64(off::FREEOBJECTS_FIRSTOBJ),
                    h.u64(off::FREEOBJECTS_NUMOBJS),
                    "object range",
                )?;
            }
            RecordType::Write => {
                toguid(off::WRITE_TOGUID)?;
                let ot = h.u32(off::WRITE_TYPE);
                if !object_type_valid(ot) {
                    return Err(self.corrupt(format!("invalid object type {ot}")));
                }
                let lsize = h.u64(off::WRITE_LOGICAL_SIZE);
                block_size(lsize, "logical size")?;
                no_overflow(h.u64(off::WRITE_OFFSET), lsize, "write")?;
                let comp = h.u8(off::WRITE_COMPRESSIONTYPE);
                let csize = h.u64(off::WRITE_COMPRESSED_SIZE);
                if comp != 0 {
                    if features & (feature::COMPRESSED | feature::RAW) == 0 {
                        need(feature::COMPRESSED, "compressed")?;
                    }
                    if comp >= MAX_FUNCTION {
                        return Err(self.corrupt(format!("compression type {comp} out of range")));
                    }
                    if csize == 0 || csize > lsize {
                        return Err(self.corrupt(format!(
                            "compressed size {csize} is not in 1..={lsize} (the logical size)"
                        )));
                    }
                } else if csize != 0 {
                    return Err(self.corrupt(format!(
                        "compressed size {csize} set on an uncompressed write"
                    )));
                }
                if features & feature::RAW == 0
                    && h.raw
                        [UNION_OFFSET + off::WRITE_CRYPT.start..UNION_OFFSET + off::WRITE_CRYPT.end]
                        .iter()
                        .any(|&b| b != 0)
                {
                    return Err(self.corrupt("encryption parameters set in a non-raw stream"));
                }
            }
            RecordType::Free => {
                toguid(off::FREE_TOGUID)?;
                let len = h.u64(off::FREE_LENGTH);
                if len != DMU_OBJECT_END {
                    no_overflow(h.u64(off::FREE_OFFSET), len, "free")?;
                }
            }
            RecordType::WriteByref => {
                toguid(off::BYREF_TOGUID)?;
                need(feature::DEDUP, "dedup")?;
                let len = h.u64(off::BYREF_LENGTH);
                block_size(len, "length")?;
                no_overflow(h.u64(off::BYREF_OFFSET), len, "write-by-reference")?;
            }
            RecordType::Spill => {
                toguid(off::SPILL_TOGUID)?;
                need(feature::SA_SPILL, "sa_spill")?;
                // receive_spill(): SPA_MINBLOCKSIZE <= drr_length <= the largest block.
                let len = h.u64(off::SPILL_LENGTH);
                if !(SPA_MINBLOCKSIZE..=SPA_MAXBLOCKSIZE).contains(&len) {
                    return Err(self.corrupt(format!(
                        "spill length {len} is outside {SPA_MINBLOCKSIZE}..={SPA_MAXBLOCKSIZE}"
                    )));
                }
                let csize = h.u64(off::SPILL_COMPRESSED_SIZE);
                if csize != 0 {
                    need(feature::RAW, "raw")?;
                    if csize > len {
                        return Err(self.corrupt(format!(
                            "compressed size {csize} exceeds the spill length {len}"
                        )));
                    }
                }
                if h.u8(off::SPILL_COMPRESSIONTYPE) >= MAX_FUNCTION {
                    return Err(self.corrupt("compression type out of range"));
                }
                if features & feature::RAW == 0
                    && h.raw
                        [UNION_OFFSET + off::SPILL_CRYPT.start..UNION_OFFSET + off::SPILL_CRYPT.end]
                        .iter()
                        .any(|&b| b != 0)
                {
                    return Err(self.corrupt("encryption parameters set in a non-raw stream"));
                }
            }
            RecordType::WriteEmbedded => {
                toguid(off::EMBEDDED_TOGUID)?;
                need(feature::EMBED_DATA, "embed_data")?;
                let psize = u64::from(h.u32(off::EMBEDDED_PSIZE));
                let lsize = u64::from(h.u32(off::EMBEDDED_LSIZE));
                let len = h.u64(off::EMBEDDED_LENGTH);
                // receive_write_embedded(): psize <= BPE_PAYLOAD_SIZE; the
                // compressed size never exceeds the logical one.
                if psize > BPE_PAYLOAD_SIZE {
                    return Err(
                        self.corrupt(format!("drr_psize {psize} exceeds {BPE_PAYLOAD_SIZE}"))
                    );
                }
                if lsize < psize || lsize > SPA_MAXBLOCKSIZE {
                    return Err(self.corrupt(format!(
                        "sizes out of order: psize {psize}, lsize {lsize}, length {len}"
                    )));
                }
                no_overflow(h.u64(off::EMBEDDED_OFFSET), len, "embedded write")?;
                if h.u8(off::EMBEDDED_ETYPE) >= NUM_BP_EMBEDDED_TYPES
                    || h.u8(off::EMBEDDED_COMPRESSION) >= MAX_FUNCTION
                {
                    return Err(self.corrupt("embedded type or compression out of range"));
                }
            }
            RecordType::ObjectRange => {
                toguid(off::RANGE_TOGUID)?;
                need(feature::RAW, "raw")?;
                let first = h.u64(off::RANGE_FIRSTOBJ);
                let slots = h.u64(off::RANGE_NUMSLOTS);
                if slots != DNODES_PER_BLOCK || first % DNODES_PER_BLOCK != 0 {
                    return Err(self.corrupt(format!(
                        "range of {slots} slots from object {first} is not one dnode block ({DNODES_PER_BLOCK} slots, aligned)"
                    )));
                }
            }
            RecordType::Redact => {
                toguid(off::REDACT_TOGUID)?;
                need(feature::REDACTED, "redacted")?;
                no_overflow(
                    h.u64(off::REDACT_OFFSET),
                    h.u64(off::REDACT_LENGTH),
                    "redact",
                )?;
            }
        }
        if ty != RecordType::Begin && payload > SPA_MAXBLOCKSIZE {
            return Err(self.corrupt(format!(
                "payload of {payload} bytes exceeds the largest block ({SPA_MAXBLOCKSIZE})"
            )));
        }
        Ok(())
    }

    /// Ends the check: the stream must have ended exactly after its final END.
    pub fn finish(self) -> Result<Summary, ZfsError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let n = self.pos;
        let truncated = |message: String| ZfsError {
            kind: ZfsErrorKind::Truncated,
            offset: n,
            record: self.records,
            message,
        };
        if self.order.is_none() {
            if n == 0 {
                return Err(ZfsError {
                    kind: ZfsErrorKind::NotZfs,
                    offset: 0,
                    record: 0,
                    message: "empty input: not a ZFS send stream".to_string(),
                });
            }
            return Err(truncated(format!(
                "stream ends after {n} bytes, before its first record header is complete"
            )));
        }
        if self.phase == Phase::Done {
            let mut summary = self.summary;
            summary.bytes = n;
            summary.end_checksums =
                summary.records[RecordType::End as usize] - u64::from(summary.compound.is_some());
            return Ok(summary);
        }
        let whereabouts = self
            .last
            .whereabouts(self.payload_left, self.hdr_len, self.records);
        let missing = match self.phase {
            Phase::CompoundTop | Phase::CompoundHeader | Phase::Sub { compound: true } => {
                "no final END record of the compound (-R) stream"
            }
            _ => "no final END record",
        };
        Err(truncated(format!(
            "truncated ZFS stream: ends after {n} bytes {whereabouts}; {missing}"
        )))
    }
}

fn cksum_hex(c: [u64; 4]) -> String {
    format!("{:x}/{:x}/{:x}/{:x}", c[0], c[1], c[2], c[3])
}

/// Size of the reads [`check_stream`] makes.
const READ_SIZE: usize = zpipe_core::DEFAULT_BLOCK_SIZE;

/// Checks a whole stream from `r`. Integrity failures (corruption,
/// truncation, checksum mismatch, input that is not ZFS) map to exit 2 with
/// the byte offset and record index in the message; read errors keep their
/// `io::Error` (exit 3).
pub fn check_stream<R: Read>(mut r: R) -> anyhow::Result<Summary> {
    let mut checker = Checker::new(CheckOptions::default());
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(anyhow::Error::from(e).context("reading the ZFS stream"));
            }
        };
        checker
            .feed(&buf[..n])
            .map_err(|e| zpipe_core::exit::integrity(e.to_string()))?;
    }
    checker
        .finish()
        .map_err(|e| zpipe_core::exit::integrity(e.to_string()))
}

/// True if `prefix` (at least 16 bytes) starts like a ZFS send stream: a
/// `DRR_BEGIN` record with `DMU_BACKUP_MAGIC` in either byte order.
pub fn looks_like_zfs(prefix: &[u8]) -> bool {
    detect_order(prefix).is_some()
}
