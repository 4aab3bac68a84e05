//! The zstd wire format as far as zpipe-compress needs it (RFC 8878):
//! magic numbers, the pzstd size frame, frame-header parsing, a block walker
//! that finds where a frame ends and bounds its decoded size, and the
//! hand-built frames of Raw_Blocks used for incompressible data.
//!
//! Everything here parses untrusted bytes: every length is checked against
//! the bytes present before it is used, and nothing allocates from a length
//! read off the wire.

use crate::xxh64::xxh64;

/// Magic number of a zstd frame (little-endian on the wire: `28 B5 2F FD`).
pub const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// First skippable-frame magic; skippable magics are `0x184D2A50..=0x184D2A5F`.
pub const SKIPPABLE_MAGIC_MIN: u32 = 0x184D_2A50;
/// Mask that maps every skippable magic to [`SKIPPABLE_MAGIC_MIN`].
pub const SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;
/// Magic of pzstd's size frame (the first skippable magic).
pub const SIZE_FRAME_MAGIC: u32 = SKIPPABLE_MAGIC_MIN;
/// Payload length of a pzstd size frame: one u32.
pub const SIZE_FRAME_PAYLOAD: u32 = 4;
/// Whole length of a pzstd size frame: magic, length, compressed size.
pub const SIZE_FRAME_LEN: usize = 12;
/// Length of a skippable frame's header (magic + payload length).
pub const SKIPPABLE_HEADER_LEN: usize = 8;
/// Length of the magic number of any frame.
pub const MAGIC_LEN: usize = 4;
/// Longest possible zstd frame header (magic, FHD, window, dict id, content size).
pub const MAX_FRAME_HEADER_LEN: usize = 18;
/// Shortest zstd frame header (magic and FHD), enough to know the full length.
pub const MIN_FRAME_HEADER_LEN: usize = 5;
/// Length of a block header.
pub const BLOCK_HEADER_LEN: usize = 3;
/// Largest block content (Block_Maximum_Size upper limit).
pub const MAX_BLOCK_SIZE: usize = 128 * 1024;
/// Length of the content checksum at the end of a frame.
pub const CHECKSUM_LEN: usize = 4;
/// Header length of the raw frames we build (magic, FHD, 4-byte content size).
pub const RAW_FRAME_HEADER_LEN: usize = 9;
/// Frame_Header_Descriptor of our raw frames: FCS field 4 bytes (flag 2),
/// Single_Segment; [`FHD_CHECKSUM`] added when they carry a checksum.
const RAW_FRAME_FHD: u8 = (2 << 6) | (1 << 5);
/// The Content_Checksum_flag of a Frame_Header_Descriptor.
const FHD_CHECKSUM: u8 = 1 << 2;
/// The smallest window a frame may declare (Window_Descriptor exponent 0).
const WINDOW_LOG_MIN: u32 = 10;

/// True when `prefix` starts with a zstd frame or skippable-frame magic;
/// fewer than four bytes never look like zstd.
pub fn looks_like_zstd(prefix: &[u8]) -> bool {
    match read_u32(prefix, 0) {
        Some(m) => m == ZSTD_MAGIC || is_skippable_magic(m),
        None => false,
    }
}

/// True when `prefix` (of any length) could be the start of a zstd stream:
/// a full or partial frame or skippable-frame magic.
pub fn could_be_zstd(prefix: &[u8]) -> bool {
    let n = prefix.len().min(MAGIC_LEN);
    let zstd = ZSTD_MAGIC.to_le_bytes();
    let skip = SKIPPABLE_MAGIC_MIN.to_le_bytes();
    !prefix.is_empty()
        && (prefix[..n] == zstd[..n] || (prefix[0] & 0xF0 == skip[0] && prefix[1..n] == skip[1..n]))
}

/// True for any of the sixteen skippable-frame magics.
pub fn is_skippable_magic(magic: u32) -> bool {
    magic & SKIPPABLE_MAGIC_MASK == SKIPPABLE_MAGIC_MIN
}

/// Reads a little-endian u32 at `at`, if the bytes are there.
pub fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// The pzstd size frame announcing that the next `frame_len` bytes are a frame.
pub fn size_frame(frame_len: u32) -> [u8; SIZE_FRAME_LEN] {
    let mut b = [0u8; SIZE_FRAME_LEN];
    b[0..4].copy_from_slice(&SIZE_FRAME_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&SIZE_FRAME_PAYLOAD.to_le_bytes());
    b[8..12].copy_from_slice(&frame_len.to_le_bytes());
    b
}

/// The frame length a pzstd size frame announces, if `b` starts with one.
pub fn read_size_frame(b: &[u8]) -> Option<u32> {
    if read_u32(b, 0)? == SIZE_FRAME_MAGIC && read_u32(b, 4)? == SIZE_FRAME_PAYLOAD {
        read_u32(b, 8)
    } else {
        None
    }
}

/// What a zstd frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the header in bytes, magic included.
    pub header_len: usize,
    /// The window the decoder needs, in bytes.
    pub window_size: u64,
    /// Decoded size, when the header records it.
    pub content_size: Option<u64>,
    /// True when the frame ends with a content checksum.
    pub checksum: bool,
    /// Dictionary id (0 = none).
    pub dict_id: u32,
}

impl FrameHeader {
    /// Largest block content in this frame (Block_Maximum_Size).
    pub fn block_max(&self) -> usize {
        self.window_size.min(MAX_BLOCK_SIZE as u64) as usize
    }
}

/// Why a header or frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// More bytes are needed (at least this many in total).
    Incomplete(usize),
    /// The bytes are not valid; the text says why, the offset is relative.
    Invalid(usize, String),
}

/// Length of the header that starts `b` (zstd magic assumed), from its FHD.
pub fn frame_header_len(fhd: u8) -> usize {
    let fcs_flag = fhd >> 6;
    let single = fhd & 0x20 != 0;
    let did = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = match fcs_flag {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    MAGIC_LEN + 1 + usize::from(!single) + did + fcs
}

/// Parses a zstd frame header at the start of `b` (which starts with the magic).
pub fn parse_frame_header(b: &[u8]) -> Result<FrameHeader, FormatError> {
    if b.len() < MIN_FRAME_HEADER_LEN {
        return Err(FormatError::Incomplete(MIN_FRAME_HEADER_LEN));
    }
    if read_u32(b, 0) != Some(ZSTD_MAGIC) {
        return Err(FormatError::Invalid(0, "not a zstd frame magic".into()));
    }
    let fhd = b[4];
    let len = frame_header_len(fhd);
    if b.len() < len {
        return Err(FormatError::Incomplete(len));
    }
    if fhd & 0x08 != 0 {
        return Err(FormatError::Invalid(
            4,
            "reserved bit set in the frame header".into(),
        ));
    }
    let single = fhd & 0x20 != 0;
    let mut at = 5;
    let mut window_size = 0u64;
    if !single {
        let wd = b[at];
        at += 1;
        let exponent = u32::from(wd >> 3);
        let mantissa = u64::from(wd & 7);
        let log = WINDOW_LOG_MIN + exponent;
        let base = 1u64 << log;
        window_size = base + (base / 8) * mantissa;
    }
    let did_len = [0, 1, 2, 4][usize::from(fhd & 3)];
    let mut dict_id = 0u32;
    for i in 0..did_len {
        dict_id |= u32::from(b[at + i]) << (8 * i);
    }
    at += did_len;
    let content_size = match (fhd >> 6, single) {
        (0, false) => None,
        (0, true) => Some(u64::from(b[at])),
        (1, _) => Some(u64::from(u16::from_le_bytes([b[at], b[at + 1]])) + 256),
        (2, _) => Some(u64::from(read_u32(b, at).unwrap_or(0))),
        _ => Some(u64::from_le_bytes(
            b[at..at + 8].try_into().expect("8 bytes checked above"),
        )),
    };
    if single {
        window_size = content_size.unwrap_or(0);
    }
    Ok(FrameHeader {
        header_len: len,
        window_size,
        content_size,
        checksum: fhd & 0x04 != 0,
        dict_id,
    })
}

/// A frame found by [`walk_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameExtent {
    /// Bytes the whole frame takes, header and checksum included.
    pub len: usize,
    /// An upper bound of its decoded size (exact for raw and RLE blocks).
    pub decoded_bound: u64,
    /// Its header; `None` for a skippable frame.
    pub header: Option<FrameHeader>,
}

/// Finds the end of the frame (zstd or skippable) at the start of `b` by
/// walking its block headers, without decoding anything.
pub fn walk_frame(b: &[u8]) -> Result<FrameExtent, FormatError> {
    let magic = read_u32(b, 0).ok_or(FormatError::Incomplete(MAGIC_LEN))?;
    if is_skippable_magic(magic) {
        let n = read_u32(b, 4).ok_or(FormatError::Incomplete(SKIPPABLE_HEADER_LEN))?;
        let len = SKIPPABLE_HEADER_LEN + n as usize;
        if b.len() < len {
            return Err(FormatError::Incomplete(len));
        }
        return Ok(FrameExtent {
            len,
            decoded_bound: 0,
            header: None,
        });
    }
    if magic != ZSTD_MAGIC {
        return Err(FormatError::Invalid(0, "not a zstd frame".into()));
    }
    let h = parse_frame_header(b)?;
    let block_max = h.block_max();
    let mut at = h.header_len;
    let mut bound = 0u64;
    loop {
        let hdr = b
            .get(at..at + BLOCK_HEADER_LEN)
            .ok_or(FormatError::Incomplete(at + BLOCK_HEADER_LEN))?;
        let v = u32::from(hdr[0]) | u32::from(hdr[1]) << 8 | u32::from(hdr[2]) << 16;
        let last = v & 1 != 0;
        let kind = (v >> 1) & 3;
        let size = (v >> 3) as usize;
        let (payload, decoded) = match kind {
            0 => (size, size),
            1 => (1, size),
            2 => (size, block_max),
            _ => {
                return Err(FormatError::Invalid(at, "reserved block type".into()));
            }
        };
        if size > block_max {
            return Err(FormatError::Invalid(
                at,
                format!("block of {size} bytes exceeds the frame's maximum of {block_max}"),
            ));
        }
        at += BLOCK_HEADER_LEN + payload;
        bound += decoded as u64;
        if last {
            break;
        }
    }
    if h.checksum {
        at += CHECKSUM_LEN;
    }
    if b.len() < at {
        return Err(FormatError::Incomplete(at));
    }
    if let Some(cs) = h.content_size {
        if cs > bound {
            return Err(FormatError::Invalid(
                4,
                format!("header claims {cs} bytes but the blocks hold at most {bound}"),
            ));
        }
        bound = cs;
    }
    Ok(FrameExtent {
        len: at,
        decoded_bound: bound,
        header: Some(h),
    })
}

/// Length of the raw frame [`write_raw_frame`] makes for `content_len` bytes.
pub fn raw_frame_len(content_len: usize, checksum: bool) -> usize {
    let blocks = content_len.div_ceil(MAX_BLOCK_SIZE).max(1);
    let sum = if checksum { CHECKSUM_LEN } else { 0 };
    RAW_FRAME_HEADER_LEN + blocks * BLOCK_HEADER_LEN + content_len + sum
}

/// Largest content a raw frame can carry (its size field is 32 bits).
pub const RAW_FRAME_MAX_CONTENT: usize = u32::MAX as usize;

/// Appends a standard zstd frame storing `content` in Raw_Blocks, with its
/// content size and (when `checksum`) its content checksum, to `out`.
/// `content` must be at most [`RAW_FRAME_MAX_CONTENT`] bytes.
pub fn write_raw_frame(content: &[u8], checksum: bool, out: &mut Vec<u8>) {
    debug_assert!(content.len() <= RAW_FRAME_MAX_CONTENT);
    out.reserve(raw_frame_len(content.len(), checksum));
    out.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    out.push(RAW_FRAME_FHD | if checksum { FHD_CHECKSUM } else { 0 });
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    let mut chunks = content.chunks(MAX_BLOCK_SIZE).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&block_header(true, 0));
    }
    while let Some(c) = chunks.next() {
        out.extend_from_slice(&block_header(chunks.peek().is_none(), c.len()));
        out.extend_from_slice(c);
    }
    if checksum {
        out.extend_from_slice(&(xxh64(content, 0) as u32).to_le_bytes());
    }
}

fn block_header(last: bool, raw_len: usize) -> [u8; 3] {
    let v = (raw_len as u32) << 3 | u32::from(last);
    [v as u8, (v >> 8) as u8, (v >> 16) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_decode(b: &[u8]) -> Vec<u8> {
        zstd::stream::decode_all(b).unwrap()
    }

    #[test]
    fn raw_frames_decode_with_libzstd() {
        for len in [
            0,
            1,
            100,
            MAX_BLOCK_SIZE - 1,
            MAX_BLOCK_SIZE,
            MAX_BLOCK_SIZE + 1,
            300_000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 7) as u8).collect();
            for checksum in [true, false] {
                let mut f = Vec::new();
                write_raw_frame(&data, checksum, &mut f);
                assert_eq!(f.len(), raw_frame_len(len, checksum));
                assert_eq!(zstd_decode(&f), data, "len {len}");
                let e = walk_frame(&f).unwrap();
                assert_eq!(e.len, f.len());
                assert_eq!(e.decoded_bound, len as u64);
                assert_eq!(e.header.unwrap().checksum, checksum);
            }
        }
    }

    #[test]
    fn corrupt_raw_payload_fails_the_checksum() {
        let data = vec![5u8; 1000];
        let mut f = Vec::new();
        write_raw_frame(&data, true, &mut f);
        f[500] ^= 1;
        assert!(zstd::stream::decode_all(&f[..]).is_err());
    }

    #[test]
    fn walker_finds_the_end_of_libzstd_frames() {
        let data: Vec<u8> = (0..1_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        for level in [1, 3, 19] {
            let f = zstd::bulk::compress(&data, level).unwrap();
            let e = walk_frame(&f).unwrap();
            assert_eq!(e.len, f.len());
            assert!(e.decoded_bound >= data.len() as u64);
            for cut in [0, 3, 4, 5, 10, f.len() / 2, f.len() - 1] {
                assert!(matches!(
                    walk_frame(&f[..cut]),
                    Err(FormatError::Incomplete(_))
                ));
            }
        }
    }

    #[test]
    fn size_frame_round_trips_and_magics_are_recognised() {
        let s = size_frame(0x0102_0304);
        assert_eq!(read_size_frame(&s), Some(0x0102_0304));
        assert!(looks_like_zstd(&s));
        assert!(looks_like_zstd(&ZSTD_MAGIC.to_le_bytes()));
        assert!(looks_like_zstd(&0x184D_2A5Fu32.to_le_bytes()));
        assert!(!looks_like_zstd(b"\x1f\x8b\x08\x00"));
        assert!(!looks_like_zstd(b"\x28\xb5"));
        assert!(could_be_zstd(b"\x28\xb5"));
        assert!(could_be_zstd(b"\x5e\x2a\x4d"));
        assert!(!could_be_zstd(b"\x28\xb6"));
        assert!(!could_be_zstd(b""));
    }

    #[test]
    fn window_descriptor_is_decoded() {
        // FHD 0x00: no single segment, no content size; WD exponent 17 mantissa 0 → 2^27.
        let mut b = ZSTD_MAGIC.to_le_bytes().to_vec();
        b.extend_from_slice(&[0x00, 17 << 3]);
        let h = parse_frame_header(&b).unwrap();
        assert_eq!(h.window_size, 1 << 27);
        assert_eq!(h.header_len, 6);
        assert_eq!(h.content_size, None);
    }
}
