//! The on-the-wire layout of a ZFS send stream: `dmu_replay_record_t`, the
//! `drr_*` record bodies, feature flags and the payload-size rules.
//!
//! Every offset here is taken from OpenZFS `include/sys/zfs_ioctl.h`. A
//! record is a fixed 312-byte `dmu_replay_record_t`:
//!
//! | bytes     | field                                                   |
//! |-----------|---------------------------------------------------------|
//! | 0..4      | `drr_type` (enum, `DRR_BEGIN` = 0 … `DRR_REDACT` = 10)   |
//! | 4..8      | `drr_payloadlen` (only BEGIN uses it: the nvlist size)  |
//! | 8..312    | `drr_u`, the union of the `drr_*` bodies                |
//! | 280..312  | `drr_u.drr_checksum.drr_checksum` (all types but BEGIN) |
//!
//! All integers are in the sender's native byte order; a receiver knows it
//! from `drr_begin.drr_magic` (`DMU_BACKUP_MAGIC` or its byte swap).

use std::fmt;

/// `sizeof (dmu_replay_record_t)`: 4 (`drr_type`) + 4 (`drr_payloadlen`) + 304 (`drr_u`).
pub const RECORD_SIZE: usize = 312;
/// Offset of `drr_u` in a record.
pub const UNION_OFFSET: usize = 8;
/// `offsetof(dmu_replay_record_t, drr_u.drr_checksum.drr_checksum)`: 8 + 34 × 8.
pub const CHECKSUM_OFFSET: usize = UNION_OFFSET + 34 * 8;
/// `sizeof (zio_cksum_t)`: four 64-bit words.
pub const CHECKSUM_SIZE: usize = 32;
/// `DMU_BACKUP_MAGIC`, the value of `drr_begin.drr_magic`.
pub const DMU_BACKUP_MAGIC: u64 = 0x2_F5BA_CBAC;
/// `SPA_MAXBLOCKSIZE` (16 MiB): the largest block, so the largest WRITE/SPILL payload.
pub const SPA_MAXBLOCKSIZE: u64 = 16 << 20;
/// `BPE_PAYLOAD_SIZE`: the most data an embedded block pointer holds (WRITE_EMBEDDED psize).
pub const BPE_PAYLOAD_SIZE: u64 = 112;
/// `DN_MAX_BONUSLEN` for large dnodes (`DN_SLOTS_TO_BONUSLEN(DNODE_MAX_SLOTS)`): 32 slots × 512 − 192.
pub const DN_MAX_BONUSLEN: u64 = 32 * 512 - 192;
/// `MAXNAMELEN`: size of `drr_begin.drr_toname`.
pub const MAXNAMELEN: usize = 256;
/// `DMU_SUBSTREAM`: header type of a single-dataset stream (low 2 bits of `drr_versioninfo`).
pub const DMU_SUBSTREAM: u64 = 1;
/// `DMU_COMPOUNDSTREAM`: header type of a `zfs send -R`/`-p` package.
pub const DMU_COMPOUNDSTREAM: u64 = 2;

/// Offsets inside `drr_u` (add [`UNION_OFFSET`] for the record offset).
pub mod off {
    /// `drr_begin.drr_magic` (u64).
    pub const BEGIN_MAGIC: usize = 0;
    /// `drr_begin.drr_versioninfo` (u64): header type in bits 0–1, features in bits 2–31.
    pub const BEGIN_VERSIONINFO: usize = 8;
    /// `drr_begin.drr_creation_time` (u64).
    pub const BEGIN_CREATION_TIME: usize = 16;
    /// `drr_begin.drr_type` (`dmu_objset_type_t`, u32).
    pub const BEGIN_TYPE: usize = 24;
    /// `drr_begin.drr_flags` (u32, `DRR_FLAG_*`).
    pub const BEGIN_FLAGS: usize = 28;
    /// `drr_begin.drr_toguid` (u64).
    pub const BEGIN_TOGUID: usize = 32;
    /// `drr_begin.drr_fromguid` (u64).
    pub const BEGIN_FROMGUID: usize = 40;
    /// `drr_begin.drr_toname` (`char[MAXNAMELEN]`).
    pub const BEGIN_TONAME: usize = 48;

    /// `drr_end.drr_checksum` (`zio_cksum_t`).
    pub const END_CHECKSUM: usize = 0;
    /// `drr_end.drr_toguid` (u64).
    pub const END_TOGUID: usize = 32;

    /// `drr_object.drr_object` (u64).
    pub const OBJECT_OBJECT: usize = 0;
    /// `drr_object.drr_type` (u32).
    pub const OBJECT_TYPE: usize = 8;
    /// `drr_object.drr_bonustype` (u32).
    pub const OBJECT_BONUSTYPE: usize = 12;
    /// `drr_object.drr_blksz` (u32).
    pub const OBJECT_BLKSZ: usize = 16;
    /// `drr_object.drr_bonuslen` (u32).
    pub const OBJECT_BONUSLEN: usize = 20;
    /// `drr_object.drr_checksumtype` (u8).
    pub const OBJECT_CHECKSUMTYPE: usize = 24;
    /// `drr_object.drr_compress` (u8).
    pub const OBJECT_COMPRESS: usize = 25;
    /// `drr_object.drr_dn_slots` (u8; 0 in old streams).
    pub const OBJECT_DN_SLOTS: usize = 26;
    /// `drr_object.drr_raw_bonuslen` (u32; nonzero only in raw streams).
    pub const OBJECT_RAW_BONUSLEN: usize = 28;
    /// `drr_object.drr_toguid` (u64).
    pub const OBJECT_TOGUID: usize = 32;

    /// `drr_freeobjects.drr_firstobj` (u64).
    pub const FREEOBJECTS_FIRSTOBJ: usize = 0;
    /// `drr_freeobjects.drr_numobjs` (u64).
    pub const FREEOBJECTS_NUMOBJS: usize = 8;
    /// `drr_freeobjects.drr_toguid` (u64).
    pub const FREEOBJECTS_TOGUID: usize = 16;

    /// `drr_write.drr_object` (u64).
    pub const WRITE_OBJECT: usize = 0;
    /// `drr_write.drr_type` (u32, the object's `dmu_object_type_t`).
    pub const WRITE_TYPE: usize = 8;
    /// `drr_write.drr_offset` (u64).
    pub const WRITE_OFFSET: usize = 16;
    /// `drr_write.drr_logical_size` (u64; `drr_length` in old streams).
    pub const WRITE_LOGICAL_SIZE: usize = 24;
    /// `drr_write.drr_toguid` (u64).
    pub const WRITE_TOGUID: usize = 32;
    /// `drr_write.drr_checksumtype` (u8).
    pub const WRITE_CHECKSUMTYPE: usize = 40;
    /// `drr_write.drr_compressiontype` (u8; a pad byte, so 0, in old streams).
    pub const WRITE_COMPRESSIONTYPE: usize = 42;
    /// `drr_write.drr_salt`, `drr_iv`, `drr_mac` (8 + 12 + 16 bytes; raw sends only).
    pub const WRITE_CRYPT: std::ops::Range<usize> = 96..132;
    /// `drr_write.drr_compressed_size` (u64), after the 40-byte `ddt_key_t drr_key` at 48.
    pub const WRITE_COMPRESSED_SIZE: usize = 88;

    /// `drr_free.drr_object` (u64).
    pub const FREE_OBJECT: usize = 0;
    /// `drr_free.drr_offset` (u64).
    pub const FREE_OFFSET: usize = 8;
    /// `drr_free.drr_length` (u64; `DMU_OBJECT_END` = all ones means "to the end").
    pub const FREE_LENGTH: usize = 16;
    /// `drr_free.drr_toguid` (u64).
    pub const FREE_TOGUID: usize = 24;

    /// `drr_write_byref.drr_object` (u64).
    pub const BYREF_OBJECT: usize = 0;
    /// `drr_write_byref.drr_offset` (u64).
    pub const BYREF_OFFSET: usize = 8;
    /// `drr_write_byref.drr_length` (u64).
    pub const BYREF_LENGTH: usize = 16;
    /// `drr_write_byref.drr_toguid` (u64).
    pub const BYREF_TOGUID: usize = 24;
    /// `drr_write_byref.drr_refguid` (u64).
    pub const BYREF_REFGUID: usize = 32;
    /// `drr_write_byref.drr_refobject` (u64).
    pub const BYREF_REFOBJECT: usize = 40;
    /// `drr_write_byref.drr_refoffset` (u64).
    pub const BYREF_REFOFFSET: usize = 48;

    /// `drr_spill.drr_object` (u64).
    pub const SPILL_OBJECT: usize = 0;
    /// `drr_spill.drr_length` (u64).
    pub const SPILL_LENGTH: usize = 8;
    /// `drr_spill.drr_toguid` (u64).
    pub const SPILL_TOGUID: usize = 16;
    /// `drr_spill.drr_compressiontype` (u8).
    pub const SPILL_COMPRESSIONTYPE: usize = 25;
    /// `drr_spill.drr_compressed_size` (u64; nonzero only in raw streams).
    pub const SPILL_COMPRESSED_SIZE: usize = 32;
    /// `drr_spill.drr_salt`, `drr_iv`, `drr_mac` (raw sends only).
    pub const SPILL_CRYPT: std::ops::Range<usize> = 40..76;
    /// `drr_spill.drr_type` (u32), after the encryption parameters.
    pub const SPILL_TYPE: usize = 76;

    /// `drr_write_embedded.drr_object` (u64).
    pub const EMBEDDED_OBJECT: usize = 0;
    /// `drr_write_embedded.drr_offset` (u64).
    pub const EMBEDDED_OFFSET: usize = 8;
    /// `drr_write_embedded.drr_length` (u64).
    pub const EMBEDDED_LENGTH: usize = 16;
    /// `drr_write_embedded.drr_toguid` (u64).
    pub const EMBEDDED_TOGUID: usize = 24;
    /// `drr_write_embedded.drr_compression` (u8).
    pub const EMBEDDED_COMPRESSION: usize = 32;
    /// `drr_write_embedded.drr_etype` (u8).
    pub const EMBEDDED_ETYPE: usize = 33;
    /// `drr_write_embedded.drr_lsize` (u32).
    pub const EMBEDDED_LSIZE: usize = 40;
    /// `drr_write_embedded.drr_psize` (u32).
    pub const EMBEDDED_PSIZE: usize = 44;

    /// `drr_object_range.drr_firstobj` (u64).
    pub const RANGE_FIRSTOBJ: usize = 0;
    /// `drr_object_range.drr_numslots` (u64).
    pub const RANGE_NUMSLOTS: usize = 8;
    /// `drr_object_range.drr_toguid` (u64).
    pub const RANGE_TOGUID: usize = 16;

    /// `drr_redact.drr_object` (u64).
    pub const REDACT_OBJECT: usize = 0;
    /// `drr_redact.drr_offset` (u64).
    pub const REDACT_OFFSET: usize = 8;
    /// `drr_redact.drr_length` (u64).
    pub const REDACT_LENGTH: usize = 16;
    /// `drr_redact.drr_toguid` (u64).
    pub const REDACT_TOGUID: usize = 24;
}

/// `DMU_BACKUP_FEATURE_*` bits of `drr_versioninfo` (after shifting out the header type).
pub mod feature {
    /// `DMU_BACKUP_FEATURE_DEDUP`: WRITE_BYREF records may appear.
    pub const DEDUP: u64 = 1 << 0;
    /// `DMU_BACKUP_FEATURE_DEDUPPROPS`.
    pub const DEDUPPROPS: u64 = 1 << 1;
    /// `DMU_BACKUP_FEATURE_SA_SPILL`: SPILL records may appear.
    pub const SA_SPILL: u64 = 1 << 2;
    /// `DMU_BACKUP_FEATURE_EMBED_DATA`: WRITE_EMBEDDED records may appear.
    pub const EMBED_DATA: u64 = 1 << 16;
    /// `DMU_BACKUP_FEATURE_LZ4`.
    pub const LZ4: u64 = 1 << 17;
    /// `DMU_BACKUP_FEATURE_LARGE_BLOCKS`: blocks above 128 KiB.
    pub const LARGE_BLOCKS: u64 = 1 << 19;
    /// `DMU_BACKUP_FEATURE_RESUMING`.
    pub const RESUMING: u64 = 1 << 20;
    /// `DMU_BACKUP_FEATURE_REDACTED`: REDACT records may appear.
    pub const REDACTED: u64 = 1 << 21;
    /// `DMU_BACKUP_FEATURE_COMPRESSED`: WRITE records may carry compressed payloads.
    pub const COMPRESSED: u64 = 1 << 22;
    /// `DMU_BACKUP_FEATURE_LARGE_DNODE`.
    pub const LARGE_DNODE: u64 = 1 << 23;
    /// `DMU_BACKUP_FEATURE_RAW`: encrypted raw send (OBJECT_RANGE, raw sizes).
    pub const RAW: u64 = 1 << 24;
    /// `DMU_BACKUP_FEATURE_ZSTD`.
    pub const ZSTD: u64 = 1 << 25;
    /// `DMU_BACKUP_FEATURE_HOLDS`.
    pub const HOLDS: u64 = 1 << 26;
    /// `DMU_BACKUP_FEATURE_SWITCH_TO_LARGE_BLOCKS`.
    pub const SWITCH_TO_LARGE_BLOCKS: u64 = 1 << 27;
    /// `DMU_BACKUP_FEATURE_LARGE_MICROZAP` (OpenZFS 2.3).
    pub const LARGE_MICROZAP: u64 = 1 << 28;
    /// Width of the feature-flag field in `drr_versioninfo` (bits 2..32).
    pub const FIELD_BITS: u32 = 30;

    /// Names of the known bits, for summaries.
    pub const NAMES: &[(u64, &str)] = &[
        (DEDUP, "dedup"),
        (DEDUPPROPS, "dedupprops"),
        (SA_SPILL, "sa_spill"),
        (EMBED_DATA, "embed_data"),
        (LZ4, "lz4"),
        (LARGE_BLOCKS, "large_blocks"),
        (RESUMING, "resuming"),
        (REDACTED, "redacted"),
        (COMPRESSED, "compressed"),
        (LARGE_DNODE, "large_dnode"),
        (RAW, "raw"),
        (ZSTD, "zstd"),
        (HOLDS, "holds"),
        (SWITCH_TO_LARGE_BLOCKS, "switch_to_large_blocks"),
        (LARGE_MICROZAP, "large_microzap"),
    ];

    /// Every bit this checker knows; bits 3–15 are reserved for closed-source forks.
    pub const KNOWN: u64 = DEDUP
        | DEDUPPROPS
        | SA_SPILL
        | EMBED_DATA
        | LZ4
        | (1 << 18)
        | LARGE_BLOCKS
        | RESUMING
        | REDACTED
        | COMPRESSED
        | LARGE_DNODE
        | RAW
        | ZSTD
        | HOLDS
        | SWITCH_TO_LARGE_BLOCKS
        | LARGE_MICROZAP;
}

/// `DRR_FLAG_*` bits of `drr_begin.drr_flags`.
pub mod begin_flag {
    /// `DRR_FLAG_CLONE`.
    pub const CLONE: u32 = 1 << 0;
    /// `DRR_FLAG_CI_DATA`.
    pub const CI_DATA: u32 = 1 << 1;
    /// `DRR_FLAG_FREERECORDS`.
    pub const FREERECORDS: u32 = 1 << 2;
    /// `DRR_FLAG_SPILL_BLOCK`.
    pub const SPILL_BLOCK: u32 = 1 << 3;
    /// Names of the known bits, for summaries.
    pub const NAMES: &[(u32, &str)] = &[
        (CLONE, "clone"),
        (CI_DATA, "ci_data"),
        (FREERECORDS, "freerecords"),
        (SPILL_BLOCK, "spill_block"),
    ];
}

/// The `drr_type` of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// `DRR_BEGIN`: starts a (sub)stream; carries names, guids and features.
    Begin = 0,
    /// `DRR_OBJECT`: a dnode, followed by its bonus buffer.
    Object = 1,
    /// `DRR_FREEOBJECTS`: a range of freed objects.
    FreeObjects = 2,
    /// `DRR_WRITE`: a data block, followed by its (maybe compressed) contents.
    Write = 3,
    /// `DRR_FREE`: a freed range of an object.
    Free = 4,
    /// `DRR_END`: ends a (sub)stream; carries the stream checksum.
    End = 5,
    /// `DRR_WRITE_BYREF`: a dedup reference to an earlier block.
    WriteByref = 6,
    /// `DRR_SPILL`: a spill block, followed by its contents.
    Spill = 7,
    /// `DRR_WRITE_EMBEDDED`: a block small enough to live in its block pointer.
    WriteEmbedded = 8,
    /// `DRR_OBJECT_RANGE`: a range of dnode slots (raw sends).
    ObjectRange = 9,
    /// `DRR_REDACT`: a redacted range (redacted sends).
    Redact = 10,
}

/// `DRR_NUMTYPES`.
pub const NUM_RECORD_TYPES: usize = 11;

impl RecordType {
    /// All types in `drr_type` order.
    pub const ALL: [RecordType; NUM_RECORD_TYPES] = [
        RecordType::Begin,
        RecordType::Object,
        RecordType::FreeObjects,
        RecordType::Write,
        RecordType::Free,
        RecordType::End,
        RecordType::WriteByref,
        RecordType::Spill,
        RecordType::WriteEmbedded,
        RecordType::ObjectRange,
        RecordType::Redact,
    ];

    /// The type for a `drr_type` value, if it is one.
    pub fn from_u32(v: u32) -> Option<RecordType> {
        RecordType::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// The OpenZFS name (`BEGIN`, `WRITE`, …) as `zstream dump` prints it.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::Begin => "BEGIN",
            RecordType::Object => "OBJECT",
            RecordType::FreeObjects => "FREEOBJECTS",
            RecordType::Write => "WRITE",
            RecordType::Free => "FREE",
            RecordType::End => "END",
            RecordType::WriteByref => "WRITE_BYREF",
            RecordType::Spill => "SPILL",
            RecordType::WriteEmbedded => "WRITE_EMBEDDED",
            RecordType::ObjectRange => "OBJECT_RANGE",
            RecordType::Redact => "REDACT",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The byte order of a stream, as told by `drr_magic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Written by a little-endian host (x86, most ARM).
    Little,
    /// Written by a big-endian host (SPARC, POWER): the magic reads byte-swapped.
    Big,
}

impl ByteOrder {
    /// Reads a u32 at `at`; `buf` must hold `at + 4` bytes.
    pub fn u32(self, buf: &[u8], at: usize) -> u32 {
        let b: [u8; 4] = buf[at..at + 4].try_into().unwrap_or([0; 4]);
        match self {
            ByteOrder::Little => u32::from_le_bytes(b),
            ByteOrder::Big => u32::from_be_bytes(b),
        }
    }

    /// Reads a u64 at `at`; `buf` must hold `at + 8` bytes.
    pub fn u64(self, buf: &[u8], at: usize) -> u64 {
        let b: [u8; 8] = buf[at..at + 8].try_into().unwrap_or([0; 8]);
        match self {
            ByteOrder::Little => u64::from_le_bytes(b),
            ByteOrder::Big => u64::from_be_bytes(b),
        }
    }

    /// Writes a u32 at `at`.
    pub fn put_u32(self, buf: &mut [u8], at: usize, v: u32) {
        let b = match self {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        };
        buf[at..at + 4].copy_from_slice(&b);
    }

    /// Writes a u64 at `at`.
    pub fn put_u64(self, buf: &mut [u8], at: usize, v: u64) {
        let b = match self {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        };
        buf[at..at + 8].copy_from_slice(&b);
    }

    /// Name for summaries.
    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Little => "little-endian",
            ByteOrder::Big => "big-endian",
        }
    }
}

/// The byte order of a stream whose first 16 bytes are `prefix`, if they
/// are a `DRR_BEGIN` header with `DMU_BACKUP_MAGIC` in either order.
pub fn detect_order(prefix: &[u8]) -> Option<ByteOrder> {
    const MAGIC_AT: usize = UNION_OFFSET + off::BEGIN_MAGIC;
    if prefix.len() < MAGIC_AT + 8 || prefix[..4] != [0; 4] {
        return None;
    }
    if ByteOrder::Little.u64(prefix, MAGIC_AT) == DMU_BACKUP_MAGIC {
        Some(ByteOrder::Little)
    } else if ByteOrder::Big.u64(prefix, MAGIC_AT) == DMU_BACKUP_MAGIC {
        Some(ByteOrder::Big)
    } else {
        None
    }
}

/// `P2ROUNDUP(x, 8)` without overflow.
pub fn round_up_8(x: u64) -> u64 {
    x.div_ceil(8).saturating_mul(8)
}

/// A parsed 312-byte record header with its byte order.
#[derive(Clone, Copy)]
pub struct Header<'a> {
    /// The raw record.
    pub raw: &'a [u8; RECORD_SIZE],
    /// Its byte order.
    pub order: ByteOrder,
}

impl<'a> Header<'a> {
    /// The raw `drr_type`.
    pub fn type_raw(&self) -> u32 {
        self.order.u32(self.raw, 0)
    }

    /// `drr_payloadlen`.
    pub fn payloadlen(&self) -> u32 {
        self.order.u32(self.raw, 4)
    }

    /// A u8 of `drr_u` at `at`.
    pub fn u8(&self, at: usize) -> u8 {
        self.raw[UNION_OFFSET + at]
    }

    /// A u32 of `drr_u` at `at`.
    pub fn u32(&self, at: usize) -> u32 {
        self.order.u32(self.raw, UNION_OFFSET + at)
    }

    /// A u64 of `drr_u` at `at`.
    pub fn u64(&self, at: usize) -> u64 {
        self.order.u64(self.raw, UNION_OFFSET + at)
    }

    /// A `zio_cksum_t` (four u64) at record offset `at`.
    pub fn cksum_at(&self, at: usize) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.order.u64(self.raw, at + 8 * i))
    }

    /// The trailing `drr_checksum.drr_checksum` (not meaningful for BEGIN).
    pub fn record_checksum(&self) -> [u64; 4] {
        self.cksum_at(CHECKSUM_OFFSET)
    }

    /// The payload size that follows this record, by the rules of
    /// `zfs_ioctl.h` (`DRR_OBJECT_PAYLOAD_SIZE`, `DRR_WRITE_PAYLOAD_SIZE`,
    /// `DRR_SPILL_PAYLOAD_SIZE`, `P2ROUNDUP(drr_psize, 8)` for
    /// WRITE_EMBEDDED, `drr_payloadlen` for BEGIN, none for the rest).
    pub fn payload_size(&self, ty: RecordType) -> u64 {
        match ty {
            RecordType::Begin => u64::from(self.payloadlen()),
            RecordType::Object => {
                let raw = self.u32(off::OBJECT_RAW_BONUSLEN);
                if raw != 0 {
                    u64::from(raw)
                } else {
                    round_up_8(u64::from(self.u32(off::OBJECT_BONUSLEN)))
                }
            }
            RecordType::Write => {
                if self.u8(off::WRITE_COMPRESSIONTYPE) != 0 {
                    self.u64(off::WRITE_COMPRESSED_SIZE)
                } else {
                    self.u64(off::WRITE_LOGICAL_SIZE)
                }
            }
            RecordType::Spill => {
                let c = self.u64(off::SPILL_COMPRESSED_SIZE);
                if c != 0 {
                    c
                } else {
                    self.u64(off::SPILL_LENGTH)
                }
            }
            RecordType::WriteEmbedded => round_up_8(u64::from(self.u32(off::EMBEDDED_PSIZE))),
            RecordType::FreeObjects
            | RecordType::Free
            | RecordType::End
            | RecordType::WriteByref
            | RecordType::ObjectRange
            | RecordType::Redact => 0,
        }
    }

    /// The header type of a BEGIN (`DMU_SUBSTREAM` or `DMU_COMPOUNDSTREAM`).
    pub fn hdrtype(&self) -> u64 {
        self.u64(off::BEGIN_VERSIONINFO) & 0b11
    }

    /// The feature flags of a BEGIN.
    pub fn features(&self) -> u64 {
        (self.u64(off::BEGIN_VERSIONINFO) >> 2) & ((1 << feature::FIELD_BITS) - 1)
    }

    /// `drr_toname` of a BEGIN, up to its NUL.
    pub fn toname(&self) -> String {
        let start = UNION_OFFSET + off::BEGIN_TONAME;
        let name = &self.raw[start..start + MAXNAMELEN];
        let end = name.iter().position(|&b| b == 0).unwrap_or(MAXNAMELEN);
        String::from_utf8_lossy(&name[..end]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants_match_the_header() {
        assert_eq!(CHECKSUM_OFFSET, 280);
        assert_eq!(CHECKSUM_OFFSET + CHECKSUM_SIZE, RECORD_SIZE);
        assert_eq!(UNION_OFFSET + off::BEGIN_TONAME + MAXNAMELEN, RECORD_SIZE);
    }

    #[test]
    fn magic_is_detected_in_both_orders() {
        let mut r = [0u8; 16];
        r[8..].copy_from_slice(&DMU_BACKUP_MAGIC.to_le_bytes());
        assert_eq!(detect_order(&r), Some(ByteOrder::Little));
        r[8..].copy_from_slice(&DMU_BACKUP_MAGIC.to_be_bytes());
        assert_eq!(detect_order(&r), Some(ByteOrder::Big));
        r[0] = 1;
        assert_eq!(detect_order(&r), None);
        assert_eq!(detect_order(&r[..10]), None);
    }
}
