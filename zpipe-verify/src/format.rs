//! The verify wire format of docs/FORMAT.md: constants, record layout, and
//! the encoding and checking of single 64-byte records.
//!
//! A stream is a HEADER record, any number of DATA records each followed by
//! its payload, and one trailer: END, or ABORT followed by the sender's
//! message. Every record is [`RECORD_LEN`] bytes: [`FIELDS_LEN`] bytes of
//! fields and a [`CHECK_LEN`]-byte check (the first bytes of the SHA-256 of
//! the fields), so a damaged length or sequence number is caught before the
//! decoder acts on it. All integers are little-endian.

use sha2::{Digest as _, Sha256};
use std::fmt;

/// Length of every record (header, data frame header, trailers).
pub const RECORD_LEN: usize = 64;
/// Length of a record's fields; the check follows them.
pub const FIELDS_LEN: usize = 56;
/// Length of a record's check: the first bytes of SHA-256 over its fields.
pub const CHECK_LEN: usize = RECORD_LEN - FIELDS_LEN;
/// Length of a SHA-256 digest.
pub const SHA256_LEN: usize = 32;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes 0..7 of every version's magic: `\x89ZPV\r\n\x1a`.
pub const MAGIC_FAMILY: [u8; 7] = [0x89, b'Z', b'P', b'V', b'\r', b'\n', 0x1A];
/// The magic that opens a stream of this version: [`MAGIC_FAMILY`] then the
/// version byte.
pub const MAGIC: [u8; 8] = [0x89, b'Z', b'P', b'V', b'\r', b'\n', 0x1A, FORMAT_VERSION];

/// Largest payload one data frame may carry: 16 MiB.
pub const MAX_FRAME_LEN: usize = 16 << 20;
/// Default payload size of a data frame: 1 MiB.
pub const DEFAULT_FRAME_LEN: usize = 1 << 20;
/// Largest sender message an ABORT trailer may carry: 64 KiB.
pub const MAX_ABORT_MESSAGE: usize = 64 << 10;
/// Hash algorithm identifier of SHA-256 in the header.
pub const HASH_SHA256: u32 = 1;

/// Tag of a data frame header.
pub const TAG_DATA: [u8; 4] = *b"DATA";
/// Tag of the END trailer.
pub const TAG_END: [u8; 4] = *b"END_";
/// Tag of the ABORT trailer.
pub const TAG_ABORT: [u8; 4] = *b"ABRT";

/// One 64-byte record.
pub type Record = [u8; RECORD_LEN];

/// True when `prefix` starts like a zpipe-verify stream of any version
/// (the first 7 magic bytes); false for shorter prefixes.
pub fn looks_like_framed(prefix: &[u8]) -> bool {
    prefix.len() >= MAGIC_FAMILY.len() && prefix[..MAGIC_FAMILY.len()] == MAGIC_FAMILY
}

/// The SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; SHA256_LEN] {
    Sha256::digest(data).into()
}

fn check_of(fields: &[u8]) -> [u8; CHECK_LEN] {
    let h = sha256(fields);
    let mut c = [0u8; CHECK_LEN];
    c.copy_from_slice(&h[..CHECK_LEN]);
    c
}

/// Writes the check of `rec`'s fields into its last bytes.
pub fn seal(rec: &mut Record) {
    let c = check_of(&rec[..FIELDS_LEN]);
    rec[FIELDS_LEN..].copy_from_slice(&c);
}

/// True when `rec`'s check matches its fields.
pub fn check_ok(rec: &Record) -> bool {
    check_of(&rec[..FIELDS_LEN]) == rec[FIELDS_LEN..]
}

fn u32_at(rec: &Record, at: usize) -> u32 {
    u32::from_le_bytes(rec[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(rec: &Record, at: usize) -> u64 {
    u64::from_le_bytes(rec[at..at + 8].try_into().expect("8 bytes"))
}

fn sha_at(rec: &Record, at: usize) -> [u8; SHA256_LEN] {
    rec[at..at + SHA256_LEN].try_into().expect("32 bytes")
}

/// The stream header's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Largest payload any data frame of the stream carries.
    pub max_frame_len: u32,
}

impl Header {
    /// Encodes the header record.
    pub fn encode(&self) -> Record {
        let mut r = [0u8; RECORD_LEN];
        r[..8].copy_from_slice(&MAGIC);
        r[8..12].copy_from_slice(&self.max_frame_len.to_le_bytes());
        // 12..16 flags: zero in version 1.
        r[16..20].copy_from_slice(&HASH_SHA256.to_le_bytes());
        seal(&mut r);
        r
    }

    /// Decodes and validates a header record; the error says what is wrong.
    pub fn decode(r: &Record) -> Result<Header, String> {
        if !looks_like_framed(r) {
            return Err(format!("not a zpipe-verify stream ({})", sniff(r)));
        }
        if !check_ok(r) {
            return Err("stream header checksum mismatch (damaged header)".into());
        }
        if r[7] != FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {} (this build reads version {FORMAT_VERSION})",
                r[7]
            ));
        }
        let max = u32_at(r, 8);
        if max == 0 || max as usize > MAX_FRAME_LEN {
            return Err(format!(
                "stream header gives frame size {max}, outside 1..={MAX_FRAME_LEN}"
            ));
        }
        let flags = u32_at(r, 12);
        if flags != 0 {
            return Err(format!("stream header has unknown flags {flags:#x}"));
        }
        let alg = u32_at(r, 16);
        if alg != HASH_SHA256 {
            return Err(format!("stream header names unknown hash algorithm {alg}"));
        }
        if r[20..FIELDS_LEN].iter().any(|&b| b != 0) {
            return Err("stream header has non-zero reserved bytes".into());
        }
        Ok(Header { max_frame_len: max })
    }
}

/// A data frame header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Sequence number, from 0.
    pub seq: u64,
    /// Offset of the payload's first byte in the carried stream.
    pub offset: u64,
    /// SHA-256 of the payload.
    pub sha: [u8; SHA256_LEN],
}

impl DataHeader {
    /// Encodes the frame header record.
    pub fn encode(&self) -> Record {
        let mut r = [0u8; RECORD_LEN];
        r[..4].copy_from_slice(&TAG_DATA);
        r[4..8].copy_from_slice(&self.len.to_le_bytes());
        r[8..16].copy_from_slice(&self.seq.to_le_bytes());
        r[16..24].copy_from_slice(&self.offset.to_le_bytes());
        r[24..56].copy_from_slice(&self.sha);
        seal(&mut r);
        r
    }
}

/// The END trailer's fields (also what a finished stream proves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    /// Number of data frames.
    pub frames: u64,
    /// Total payload bytes.
    pub bytes: u64,
    /// The whole-stream digest (docs/FORMAT.md §Stream digest).
    pub sha256: [u8; SHA256_LEN],
}

impl Digest {
    /// The stream digest as lowercase hex.
    pub fn hex(&self) -> String {
        hex(&self.sha256)
    }

    /// The line `--digest-file` writes: the same on both ends of a stream.
    pub fn line(&self) -> String {
        format!(
            "zpipe-verify v{FORMAT_VERSION} sha256-frames={} frames={} bytes={}\n",
            self.hex(),
            self.frames,
            self.bytes
        )
    }

    /// Encodes the END record.
    pub fn encode_end(&self) -> Record {
        let mut r = [0u8; RECORD_LEN];
        r[..4].copy_from_slice(&TAG_END);
        r[8..16].copy_from_slice(&self.frames.to_le_bytes());
        r[16..24].copy_from_slice(&self.bytes.to_le_bytes());
        r[24..56].copy_from_slice(&self.sha256);
        seal(&mut r);
        r
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sha256-frames={} frames={} bytes={}",
            self.hex(),
            self.frames,
            self.bytes
        )
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The ABORT record for `message` (truncated to [`MAX_ABORT_MESSAGE`] bytes
/// on a character boundary) after `frames` frames and `bytes` bytes; returns
/// the record and the message bytes that follow it.
pub fn encode_abort(message: &str, frames: u64, bytes: u64) -> (Record, Vec<u8>) {
    let mut end = message.len().min(MAX_ABORT_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = message.as_bytes()[..end].to_vec();
    let mut r = [0u8; RECORD_LEN];
    r[..4].copy_from_slice(&TAG_ABORT);
    r[4..8].copy_from_slice(&(msg.len() as u32).to_le_bytes());
    r[8..16].copy_from_slice(&frames.to_le_bytes());
    r[16..24].copy_from_slice(&bytes.to_le_bytes());
    r[24..56].copy_from_slice(&sha256(&msg));
    seal(&mut r);
    (r, msg)
}

/// A record that follows the header, decoded but not yet checked against
/// the stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A data frame header.
    Data(DataHeader),
    /// The END trailer.
    End(Digest),
    /// The ABORT trailer: message length, frames and bytes sent, message hash.
    Abort {
        /// Length of the message that follows.
        len: u32,
        /// Frames the sender had sent.
        frames: u64,
        /// Payload bytes the sender had sent.
        bytes: u64,
        /// SHA-256 of the message.
        sha: [u8; SHA256_LEN],
    },
}

/// Decodes a record that follows the header; the error says what is wrong.
pub fn decode_body(r: &Record) -> Result<Body, String> {
    if !check_ok(r) {
        if looks_like_framed(r) {
            return Err("found a stream header where a frame was expected \
                        (two streams concatenated, or a restarted sender)"
                .into());
        }
        return Err("frame header checksum mismatch (damaged frame header)".into());
    }
    let tag: [u8; 4] = r[..4].try_into().expect("4 bytes");
    match tag {
        TAG_DATA => Ok(Body::Data(DataHeader {
            len: u32_at(r, 4),
            seq: u64_at(r, 8),
            offset: u64_at(r, 16),
            sha: sha_at(r, 24),
        })),
        TAG_END => {
            if u32_at(r, 4) != 0 {
                return Err("END trailer has non-zero reserved bytes".into());
            }
            Ok(Body::End(Digest {
                frames: u64_at(r, 8),
                bytes: u64_at(r, 16),
                sha256: sha_at(r, 24),
            }))
        }
        TAG_ABORT => Ok(Body::Abort {
            len: u32_at(r, 4),
            frames: u64_at(r, 8),
            bytes: u64_at(r, 16),
            sha: sha_at(r, 24),
        }),
        _ if looks_like_framed(r) => Err("found a stream header where a frame was expected \
                                          (two streams concatenated, or a restarted sender)"
            .into()),
        _ => Err(format!("unknown record tag {}", hex(&tag))),
    }
}

/// For a damaged record: true when its tag is nearer (in bits) to a
/// trailer's tag than to a data frame's, so errors can name the likely kind.
pub fn likely_trailer(r: &Record) -> bool {
    let distance = |tag: &[u8; 4]| -> u32 {
        tag.iter()
            .zip(&r[..4])
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    };
    distance(&TAG_END).min(distance(&TAG_ABORT)) < distance(&TAG_DATA)
}

/// A short guess at what `prefix` is, for "not a zpipe-verify stream" errors.
pub fn sniff(prefix: &[u8]) -> &'static str {
    const ZSTD_MAGIC: u32 = 0xFD2F_B528;
    const ZSTD_SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
    const ZSTD_SKIPPABLE: u32 = 0x184D_2A50;
    const DRR_BEGIN_MAGIC: u64 = 0x2_F5BA_CBAC;
    if prefix.len() >= 4 {
        let first = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes"));
        if first == ZSTD_MAGIC || first & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE {
            return "input looks like zstd data: decompress it first";
        }
        if prefix.len() >= 16 {
            let magic = u64::from_le_bytes(prefix[8..16].try_into().expect("8 bytes"));
            if first == 0 && (magic == DRR_BEGIN_MAGIC || magic.swap_bytes() == DRR_BEGIN_MAGIC) {
                return "input looks like a raw ZFS send stream, which was not framed";
            }
        }
    }
    if prefix.starts_with(&[0x1F, 0x8B]) {
        return "input looks like gzip data";
    }
    "bad magic"
}

/// The running whole-stream digest: SHA-256 over the header record's fields
/// followed by each data frame header's fields, in order.
#[derive(Clone)]
pub struct StreamDigest {
    hasher: Sha256,
    frames: u64,
    bytes: u64,
}

impl StreamDigest {
    /// Starts the digest of a stream with header `h`.
    pub fn new(h: &Record) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(&h[..FIELDS_LEN]);
        StreamDigest {
            hasher,
            frames: 0,
            bytes: 0,
        }
    }

    /// Adds one data frame header.
    pub fn add(&mut self, rec: &Record, len: u32) {
        self.hasher.update(&rec[..FIELDS_LEN]);
        self.frames += 1;
        self.bytes += u64::from(len);
    }

    /// Frames added so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Payload bytes added so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of the frames added so far.
    pub fn value(&self) -> Digest {
        Digest {
            frames: self.frames,
            bytes: self.bytes,
            sha256: self.hasher.clone().finalize().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_not_zstd_or_zfs() {
        assert_eq!(sniff(&MAGIC), "bad magic");
        assert!(!looks_like_framed(&0xFD2F_B528u32.to_le_bytes()));
        let mut drr = [0u8; 16];
        drr[8..16].copy_from_slice(&0x2_F5BA_CBACu64.to_le_bytes());
        assert!(!looks_like_framed(&drr));
        assert!(sniff(&drr).contains("ZFS"));
        assert!(looks_like_framed(&MAGIC));
        assert!(!looks_like_framed(&MAGIC[..3]));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = Header {
            max_frame_len: 1 << 20,
        };
        let r = h.encode();
        assert_eq!(Header::decode(&r).unwrap(), h);
        for bit in 0..RECORD_LEN * 8 {
            let mut d = r;
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&d).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn oversized_frame_size_is_refused() {
        let r = Header {
            max_frame_len: MAX_FRAME_LEN as u32 + 1,
        }
        .encode();
        assert!(Header::decode(&r).unwrap_err().contains("frame size"));
    }

    #[test]
    fn abort_message_is_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ABORT_MESSAGE);
        let (_, msg) = encode_abort(&long, 0, 0);
        assert!(msg.len() <= MAX_ABORT_MESSAGE);
        assert!(std::str::from_utf8(&msg).is_ok());
    }
}
