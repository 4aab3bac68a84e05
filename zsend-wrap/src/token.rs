//! OpenZFS `receive_resume_token` values: decoding, validation and encoding.
//!
//! A token is `<version>-<checksum>-<length>-<payload>` (OpenZFS
//! `module/zfs/dsl_dataset.c`, `get_receive_resume_token_impl`):
//!
//! - `version` is decimal `1` (`ZFS_SEND_RESUME_TOKEN_VERSION`);
//! - `payload` is the lower-case hex of a zlib stream (`gzip_compress(...,
//!   6)`, i.e. zlib `compress2` level 6, with the zlib header);
//! - `checksum` is `%llx` of word 0 of `fletcher_4_native_varsize` over the
//!   compressed bytes (the plain sum of the little-endian 32-bit words; a
//!   trailing partial word is not summed);
//! - `length` is `%llx` of the uncompressed length;
//! - the uncompressed bytes are an nvlist packed with `fnvlist_pack`
//!   (`NV_ENCODE_NATIVE`, see [`zpipe_core::nvlist`]) holding `fromguid`
//!   (incremental only), `object`, `offset`, `bytes`, `toguid`, `toname`,
//!   and the presence flags `largeblockok`, `embedok`, `compressok`,
//!   `rawok`, plus `redact_snaps` / `book_redact_snaps` arrays for
//!   redacted sends. `savedok` is honoured by `zfs send -t` when present.
//!
//! [`decode`] checks each layer in the order libzfs's
//! `zfs_send_resume_token_to_nvlist` does and names the failing one;
//! [`encode`] produces tokens libzfs accepts (same framing, checksum and
//! nvlist bytes; the zlib bytes may differ from zlib's own encoder, which
//! `uncompress` does not care about). The checksum of a token written by a
//! big-endian host is accepted too.

use std::fmt;
use std::io::Write;
use zpipe_core::fletcher4::{self, WordOrder};
use zpipe_core::nvlist::{self, NvList, NvPair, NvValue};

/// `ZFS_SEND_RESUME_TOKEN_VERSION`.
pub const TOKEN_VERSION: u32 = 1;
/// zlib level the kernel compresses tokens with.
pub const TOKEN_ZLIB_LEVEL: u32 = 6;
/// Largest uncompressed payload accepted. Real tokens are a few hundred
/// bytes; redaction lists keep them far below this.
pub const MAX_PACKED_LEN: u64 = 1 << 20;
/// Longest token string accepted (hex payload included).
pub const MAX_TOKEN_LEN: usize = 4 << 20;

/// Names of the nvlist pairs of a token.
mod field {
    pub const FROMGUID: &str = "fromguid";
    pub const OBJECT: &str = "object";
    pub const OFFSET: &str = "offset";
    pub const BYTES: &str = "bytes";
    pub const TOGUID: &str = "toguid";
    pub const TONAME: &str = "toname";
    pub const LARGEBLOCKOK: &str = "largeblockok";
    pub const EMBEDOK: &str = "embedok";
    pub const COMPRESSOK: &str = "compressok";
    pub const RAWOK: &str = "rawok";
    pub const SAVEDOK: &str = "savedok";
    pub const REDACT_SNAPS: &str = "redact_snaps";
    pub const BOOK_REDACT_SNAPS: &str = "book_redact_snaps";
    pub const KNOWN: [&str; 13] = [
        FROMGUID,
        OBJECT,
        OFFSET,
        BYTES,
        TOGUID,
        TONAME,
        LARGEBLOCKOK,
        EMBEDOK,
        COMPRESSOK,
        RAWOK,
        SAVEDOK,
        REDACT_SNAPS,
        BOOK_REDACT_SNAPS,
    ];
}

/// The decoded contents of a resume token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumeToken {
    /// GUID of the incremental source; `None` for a full send.
    pub fromguid: Option<u64>,
    /// Object number the resumed send starts at.
    pub object: u64,
    /// Offset within `object` the resumed send starts at.
    pub offset: u64,
    /// Stream bytes the receiver already has.
    pub bytes: u64,
    /// GUID of the snapshot being sent.
    pub toguid: u64,
    /// Name of the snapshot being sent, as the sender called it.
    pub toname: String,
    /// The stream may contain embedded-data records (`send -e`).
    pub embedok: bool,
    /// The stream may contain blocks over 128 KiB (`send -L`).
    pub largeblockok: bool,
    /// The stream may contain compressed records (`send -c`).
    pub compressok: bool,
    /// The stream is raw (`send -w`).
    pub rawok: bool,
    /// The send resumes a saved partial receive (`send -S`).
    pub savedok: bool,
    /// Redaction snapshot GUIDs of a redacted dataset (`redact_snaps`).
    pub redact_snaps: Option<Vec<u64>>,
    /// Redaction snapshot GUIDs of the redaction bookmark (`book_redact_snaps`).
    pub book_redact_snaps: Option<Vec<u64>>,
    /// Pairs this version does not know, kept in order for display and re-encoding.
    pub extra: Vec<NvPair>,
}

impl ResumeToken {
    /// The token's nvlist, pairs in the order the kernel adds them.
    pub fn to_nvlist(&self) -> NvList {
        let mut l = NvList::new();
        if let Some(g) = self.fromguid {
            l.add(field::FROMGUID, NvValue::Uint64(g));
        }
        l.add(field::OBJECT, NvValue::Uint64(self.object));
        l.add(field::OFFSET, NvValue::Uint64(self.offset));
        l.add(field::BYTES, NvValue::Uint64(self.bytes));
        l.add(field::TOGUID, NvValue::Uint64(self.toguid));
        l.add(field::TONAME, NvValue::String(self.toname.clone()));
        for (on, name) in [
            (self.largeblockok, field::LARGEBLOCKOK),
            (self.embedok, field::EMBEDOK),
            (self.compressok, field::COMPRESSOK),
            (self.rawok, field::RAWOK),
        ] {
            if on {
                l.add(name, NvValue::Boolean);
            }
        }
        if let Some(v) = &self.redact_snaps {
            l.add(field::REDACT_SNAPS, NvValue::Uint64Array(v.clone()));
        }
        if let Some(v) = &self.book_redact_snaps {
            l.add(field::BOOK_REDACT_SNAPS, NvValue::Uint64Array(v.clone()));
        }
        if self.savedok {
            l.add(field::SAVEDOK, NvValue::Boolean);
        }
        for p in &self.extra {
            if !field::KNOWN.contains(&p.name.as_str()) {
                l.add(&p.name, p.value.clone());
            }
        }
        l
    }

    /// Reads a token's nvlist; the fields `zfs send -t` requires must be
    /// present with the right types.
    pub fn from_nvlist(l: &NvList) -> anyhow::Result<ResumeToken> {
        let need_u64 = |name: &str| {
            l.uint64(name)
                .ok_or_else(|| invalid(format!("missing or mistyped field '{name}'")))
        };
        let optional_u64 = |name: &str| match l.get(name) {
            None => Ok(None),
            Some(NvValue::Uint64(v)) => Ok(Some(*v)),
            Some(_) => Err(invalid(format!("field '{name}' is not a uint64"))),
        };
        let optional_array = |name: &str| match l.get(name) {
            None => Ok(None),
            Some(NvValue::Uint64Array(v)) => Ok(Some(v.clone())),
            Some(_) => Err(invalid(format!("field '{name}' is not a uint64 array"))),
        };
        let toname = l
            .string(field::TONAME)
            .ok_or_else(|| invalid(format!("missing or mistyped field '{}'", field::TONAME)))?
            .to_string();
        Ok(ResumeToken {
            fromguid: optional_u64(field::FROMGUID)?,
            object: need_u64(field::OBJECT)?,
            offset: need_u64(field::OFFSET)?,
            bytes: need_u64(field::BYTES)?,
            toguid: need_u64(field::TOGUID)?,
            toname,
            embedok: l.contains(field::EMBEDOK),
            largeblockok: l.contains(field::LARGEBLOCKOK),
            compressok: l.contains(field::COMPRESSOK),
            rawok: l.contains(field::RAWOK),
            savedok: l.contains(field::SAVEDOK),
            redact_snaps: optional_array(field::REDACT_SNAPS)?,
            book_redact_snaps: optional_array(field::BOOK_REDACT_SNAPS)?,
            extra: l
                .pairs
                .iter()
                .filter(|p| !field::KNOWN.contains(&p.name.as_str()))
                .cloned()
                .collect(),
        })
    }

    /// True when the token resumes an incremental send.
    pub fn is_incremental(&self) -> bool {
        self.fromguid.is_some()
    }
}

/// Prints the token's fields the way `zfs send -nvt` does after
/// "resume token contents:" (libnvpair's `nvlist_print`).
impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_nvlist(), f)
    }
}

fn invalid(reason: impl fmt::Display) -> anyhow::Error {
    zpipe_core::exit::usage(format!("not a valid resume token: {reason}"))
}

fn parse_hex_u64(s: &str, what: &str) -> anyhow::Result<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!("invalid format ({what} '{s}' is not hex)")));
    }
    u64::from_str_radix(s, 16)
        .map_err(|_| invalid(format!("invalid format ({what} '{s}' overflows 64 bits)")))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes and validates a token string (surrounding whitespace, as left
/// by `zfs get` output or copy and paste, is ignored).
pub fn decode(token: &str) -> anyhow::Result<ResumeToken> {
    let token = token.trim();
    if token.is_empty() || token == "-" {
        return Err(invalid("the token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid(format!(
            "the token is {} bytes long, more than the {MAX_TOKEN_LEN} accepted",
            token.len()
        )));
    }
    let mut parts = token.splitn(4, '-');
    let (Some(version), Some(checksum), Some(length), Some(payload)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "invalid format (expected <version>-<checksum>-<length>-<payload>)",
        ));
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "invalid format (version '{version}' is not a number)"
        )));
    }
    match version.parse::<u32>() {
        Ok(TOKEN_VERSION) => {}
        _ => {
            return Err(invalid(format!(
                "invalid version {version} (only {TOKEN_VERSION} exists)"
            )))
        }
    }
    let checksum = parse_hex_u64(checksum, "checksum")?;
    let packed_len = parse_hex_u64(length, "length")?;
    if packed_len > MAX_PACKED_LEN {
        return Err(invalid(format!(
            "payload length {packed_len} exceeds the {MAX_PACKED_LEN} bytes accepted"
        )));
    }
    if payload.is_empty() {
        return Err(invalid("payload is empty"));
    }
    if payload.len() % 2 != 0 {
        return Err(invalid("payload has an odd number of hex digits"));
    }
    let mut compressed = Vec::with_capacity(payload.len() / 2);
    for pair in payload.as_bytes().chunks_exact(2) {
        match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(h), Some(l)) => compressed.push(h << 4 | l),
            _ => return Err(invalid("payload is not hex-encoded")),
        }
    }
    let le = fletcher4::varsize_with_order(&compressed, WordOrder::Little)[0];
    let be = fletcher4::varsize_with_order(&compressed, WordOrder::Big)[0];
    if checksum != le && checksum != be {
        return Err(invalid(format!(
            "incorrect checksum (token says {checksum:x}, payload sums to {le:x})"
        )));
    }
    let packed = inflate_exact(&compressed, packed_len)?;
    let list = nvlist::unpack_native(&packed)
        .map_err(|e| invalid(format!("nvlist_unpack failed: {e}")))?;
    ResumeToken::from_nvlist(&list)
}

/// Inflates a zlib stream that must decompress to exactly `len` bytes.
fn inflate_exact(compressed: &[u8], len: u64) -> anyhow::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| invalid("payload length overflows"))?;
    let mut out = Vec::with_capacity(len);
    let mut z = flate2::Decompress::new(true);
    let status = z
        .decompress_vec(compressed, &mut out, flate2::FlushDecompress::Finish)
        .map_err(|e| invalid(format!("decompression failed ({e})")))?;
    if status != flate2::Status::StreamEnd {
        // Either the stream is cut short or it holds more than `len` bytes.
        return Err(invalid(if out.len() >= len {
            format!("decompression failed (payload inflates to more than the {len} bytes the token says)")
        } else {
            "decompression failed (the zlib stream is truncated or corrupt)".to_string()
        }));
    }
    if out.len() != len {
        return Err(invalid(format!(
            "decompression failed (payload inflates to {} bytes, the token says {len})",
            out.len()
        )));
    }
    Ok(out)
}

/// Encodes a token the way the kernel does: native nvlist, zlib level 6,
/// Fletcher-4 word 0 of the compressed bytes, lower-case hex.
pub fn encode(token: &ResumeToken) -> String {
    let packed = nvlist::pack_native(&token.to_nvlist());
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(packed.len()),
        flate2::Compression::new(TOKEN_ZLIB_LEVEL),
    );
    // Writing to a Vec cannot fail.
    let _ = z.write_all(&packed);
    let compressed = z.finish().unwrap_or_default();
    let checksum = fletcher4::varsize(&compressed)[0];
    let mut out = format!("{TOKEN_VERSION}-{checksum:x}-{:x}-", packed.len());
    for b in &compressed {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResumeToken {
        ResumeToken {
            fromguid: Some(7),
            object: 0x21,
            offset: 0x2_0000,
            bytes: 0x63d0,
            toguid: 0xbbea_e606_278c_a4c4,
            toname: "pool/fs@snap".into(),
            embedok: true,
            ..Default::default()
        }
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let t = sample();
        assert_eq!(decode(&encode(&t)).unwrap(), t);
    }

    #[test]
    fn whitespace_around_the_token_is_ignored() {
        let t = sample();
        assert_eq!(decode(&format!("  {}\n", encode(&t))).unwrap(), t);
    }

    #[test]
    fn display_matches_nvlist_print() {
        let text = sample().to_string();
        assert_eq!(
            text,
            "nvlist version: 0\n\tfromguid = 0x7\n\tobject = 0x21\n\toffset = 0x20000\n\tbytes = 0x63d0\n\ttoguid = 0xbbeae606278ca4c4\n\ttoname = pool/fs@snap\n\tembedok = 1\n"
        );
    }

    #[test]
    fn missing_toname_is_named() {
        let mut l = sample().to_nvlist();
        l.pairs.retain(|p| p.name != "toname");
        let err = ResumeToken::from_nvlist(&l).unwrap_err().to_string();
        assert!(err.contains("toname"), "{err}");
    }
}
