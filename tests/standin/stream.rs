//! Just enough of the ZFS send stream format for the stand-in: record
//! headers (312 bytes), payload lengths, the BEGIN fields, and a reader that
//! tells a clean end from a cut.
//!
//! Layout (OpenZFS `include/sys/zfs_ioctl.h`, `dmu_replay_record_t`): a
//! u32 `drr_type`, a u32 `drr_payloadlen`, then a 304-byte union; fields
//! are little-endian on the machines we test on.

use std::io::{self, Read};

/// Size of one record header.
pub const RECORD_SIZE: usize = 312;
/// Offset of the union in a record.
pub const U: usize = 8;
/// `DMU_BACKUP_MAGIC`.
pub const MAGIC: u64 = 0x2_F5BA_CBAC;
/// `DMU_COMPOUNDSTREAM` header type (a `-R`/`-I` package).
pub const COMPOUND: u64 = 2;
/// Bits of `drr_versioninfo` below the feature flags (the header type).
pub const FEATURE_SHIFT: u32 = 2;
/// Width of the feature-flags field of `drr_versioninfo`.
pub const FEATURE_BITS: u32 = 30;
/// `DMU_BACKUP_FEATURE_EMBED_DATA`.
pub const F_EMBED: u64 = 1 << 16;
/// `DMU_BACKUP_FEATURE_LARGE_BLOCKS`.
pub const F_LARGE_BLOCKS: u64 = 1 << 19;
/// `DMU_BACKUP_FEATURE_RESUMING`.
pub const F_RESUMING: u64 = 1 << 20;
/// `DMU_BACKUP_FEATURE_COMPRESSED`.
pub const F_COMPRESSED: u64 = 1 << 22;
/// `DMU_BACKUP_FEATURE_RAW`.
pub const F_RAW: u64 = 1 << 24;
/// `DRR_FLAG_CLONE` in `drr_flags`.
pub const FLAG_CLONE: u32 = 1;
/// Largest payload accepted for one record (16 MiB blocks, big BEGIN nvlists).
pub const MAX_PAYLOAD: u64 = 256 << 20;

/// Record types (`drr_type`).
pub mod ty {
    pub const BEGIN: u32 = 0;
    pub const OBJECT: u32 = 1;
    pub const FREEOBJECTS: u32 = 2;
    pub const WRITE: u32 = 3;
    pub const FREE: u32 = 4;
    pub const END: u32 = 5;
    pub const WRITE_BYREF: u32 = 6;
    pub const SPILL: u32 = 7;
    pub const WRITE_EMBEDDED: u32 = 8;
    pub const OBJECT_RANGE: u32 = 9;
    pub const REDACT: u32 = 10;
}

/// One record header.
#[derive(Clone)]
pub struct Header(pub [u8; RECORD_SIZE]);

impl Header {
    /// Little-endian u32 at `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.0[off..off + 4].try_into().unwrap())
    }
    /// Little-endian u64 at `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.0[off..off + 8].try_into().unwrap())
    }
    /// Writes a little-endian u32 at `off`.
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Writes a little-endian u64 at `off`.
    pub fn set_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// `drr_type`.
    pub fn ty(&self) -> u32 {
        self.u32_at(0)
    }

    /// The (object, offset) position a record stands for, as a resume point.
    pub fn position(&self) -> (u64, u64) {
        match self.ty() {
            ty::OBJECT | ty::SPILL => (self.u64_at(U), 0),
            ty::FREEOBJECTS => (self.u64_at(U), 0),
            ty::WRITE => (self.u64_at(U), self.u64_at(U + 16)),
            ty::FREE | ty::WRITE_BYREF | ty::WRITE_EMBEDDED | ty::REDACT => {
                (self.u64_at(U), self.u64_at(U + 8))
            }
            ty::OBJECT_RANGE => (self.u64_at(U), 0),
            _ => (0, 0),
        }
    }

    /// Bytes of payload after this header, given the stream's features.
    pub fn payload_len(&self, features: u64) -> io::Result<u64> {
        let packed = features & (F_COMPRESSED | F_RAW) != 0;
        let n = match self.ty() {
            ty::BEGIN => u64::from(self.u32_at(4)),
            ty::OBJECT => u64::from(self.u32_at(U + 20)).div_ceil(8) * 8,
            ty::WRITE => {
                let c = self.u64_at(U + 88);
                if packed && c != 0 {
                    c
                } else {
                    self.u64_at(U + 24)
                }
            }
            ty::SPILL => {
                let c = self.u64_at(U + 32);
                if packed && c != 0 {
                    c
                } else {
                    self.u64_at(U + 8)
                }
            }
            ty::WRITE_EMBEDDED => u64::from(self.u32_at(U + 44)).div_ceil(8) * 8,
            ty::FREEOBJECTS
            | ty::FREE
            | ty::END
            | ty::WRITE_BYREF
            | ty::OBJECT_RANGE
            | ty::REDACT => 0,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown record type {other}"),
                ))
            }
        };
        if n > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("record payload of {n} bytes is implausible"),
            ));
        }
        Ok(n)
    }
}

/// The fields of a BEGIN record the stand-in uses.
#[derive(Debug, Clone)]
pub struct Begin {
    /// `drr_versioninfo`.
    pub versioninfo: u64,
    /// `drr_flags`.
    pub flags: u32,
    /// `drr_toguid`.
    pub toguid: u64,
    /// `drr_fromguid`.
    pub fromguid: u64,
    /// `drr_toname`.
    pub toname: String,
}

impl Begin {
    /// Reads the BEGIN fields of `h`, which must be a BEGIN record.
    pub fn parse(h: &Header) -> io::Result<Begin> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        if h.ty() != ty::BEGIN {
            return Err(bad("stream does not start with a BEGIN record"));
        }
        let magic = h.u64_at(U);
        if magic != MAGIC {
            return Err(bad(if magic == MAGIC.swap_bytes() {
                "byte-swapped (big-endian) streams are not supported by the stand-in"
            } else {
                "BEGIN record has a bad magic number"
            }));
        }
        let name = &h.0[U + 48..U + 48 + 256];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Ok(Begin {
            versioninfo: h.u64_at(U + 8),
            flags: h.u32_at(U + 28),
            toguid: h.u64_at(U + 32),
            fromguid: h.u64_at(U + 40),
            toname: String::from_utf8_lossy(&name[..end]).into_owned(),
        })
    }

    /// The header type (1 = substream, 2 = compound).
    pub fn hdrtype(&self) -> u64 {
        self.versioninfo & ((1 << FEATURE_SHIFT) - 1)
    }

    /// The feature flags.
    pub fn features(&self) -> u64 {
        (self.versioninfo >> FEATURE_SHIFT) & ((1 << FEATURE_BITS) - 1)
    }

    /// True for a stream that creates a new filesystem (full or clone).
    pub fn wants_new_fs(&self) -> bool {
        self.fromguid == 0 || self.flags & FLAG_CLONE != 0
    }
}

/// What the next read found.
pub enum Next {
    /// A complete record header.
    Record(Box<Header>),
    /// End of input exactly at a record boundary.
    Eof,
    /// End of input inside a header.
    Cut,
}

/// Reads records from a byte source, counting bytes.
pub struct RecordReader<R> {
    inner: R,
    /// Bytes consumed so far.
    pub pos: u64,
}

impl<R: Read> RecordReader<R> {
    /// A reader at position 0.
    pub fn new(inner: R) -> Self {
        RecordReader { inner, pos: 0 }
    }

    /// Reads the next header.
    pub fn header(&mut self) -> io::Result<Next> {
        let mut h = Header([0; RECORD_SIZE]);
        let mut got = 0;
        while got < RECORD_SIZE {
            match self.inner.read(&mut h.0[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += got as u64;
        Ok(match got {
            0 => Next::Eof,
            RECORD_SIZE => Next::Record(Box::new(h)),
            _ => Next::Cut,
        })
    }

    /// Passes up to `n` payload bytes to `sink`; returns how many arrived
    /// (fewer than `n` means the input ended).
    pub fn payload(
        &mut self,
        n: u64,
        buf: &mut [u8],
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        let mut left = n;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let got = match self.inner.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.pos += got as u64;
            left -= got as u64;
            sink(&buf[..got])?;
        }
        Ok(n - left)
    }
}
