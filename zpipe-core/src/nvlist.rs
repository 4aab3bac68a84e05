//! The packed nvlist codec (NV_ENCODE_NATIVE), as used by ZFS resume tokens
//! and the BEGIN payload of resumed send streams.
//!
//! Layout (libnvpair `nvpair.c`, `fnvlist_pack` = `nvlist_pack(...,
//! NV_ENCODE_NATIVE)`), all integers in the byte order named by the header:
//!
//! ```text
//! header   u8 encoding (0 = native, 1 = XDR), u8 endian (1 = little), u8 0, u8 0
//! nvlist   i32 nvl_version (0), u32 nvl_nvflag (1 = NV_UNIQUE_NAME)
//! pairs    each: i32 nvp_size, i16 nvp_name_sz (incl. NUL), i16 reserved,
//!                i32 nvp_value_elem, i32 nvp_type,
//!                name + NUL, zero-padded to 8 (offset from pair start = align8(16 + name_sz)),
//!                value, zero-padded to 8;  nvp_size = align8(16 + name_sz) + align8(value size)
//! end      i32 0 (four zero bytes)
//! ```
//!
//! An embedded nvlist (`DATA_TYPE_NVLIST`) carries a 24-byte `nvlist_t`
//! image as its value, and its own `nvlist` header, pairs and terminator
//! follow the pair immediately. Decoding checks every size against the
//! buffer before reading, validates names and values the way
//! `i_validate_nvpair` does, and never panics.

use thiserror::Error;

/// `NV_ENCODE_NATIVE` in the header's first byte.
pub const NV_ENCODE_NATIVE: u8 = 0;
/// `NV_ENCODE_XDR` in the header's first byte.
pub const NV_ENCODE_XDR: u8 = 1;
/// Header endian byte for a little-endian writer.
pub const NV_LITTLE_ENDIAN: u8 = 1;
/// Header endian byte for a big-endian writer.
pub const NV_BIG_ENDIAN: u8 = 0;
/// `NV_VERSION`, the only nvlist version.
pub const NV_VERSION: i32 = 0;
/// `NV_UNIQUE_NAME`: adding a name replaces an existing pair of that name.
pub const NV_UNIQUE_NAME: u32 = 1;
/// libnvpair's `nvpair_max_recursion`: deepest nesting accepted.
pub const MAX_RECURSION: usize = 20;

/// Size of the stream header.
const HEADER_SIZE: usize = 4;
/// Size of an nvlist's version + flags.
const NVL_HEADER_SIZE: usize = 8;
/// `sizeof (nvpair_t)`: the fixed part of a pair.
const NVPAIR_SIZE: usize = 16;
/// `sizeof (nvlist_t)`: the value image of an embedded nvlist.
const NVLIST_T_SIZE: usize = 24;
/// Size of the end-of-list marker.
const TERMINATOR_SIZE: usize = 4;
/// nvpair alignment.
const NV_ALIGN: usize = 8;

/// `data_type_t` codes of the types this codec handles.
mod data_type {
    pub const BOOLEAN: i32 = 1;
    pub const BYTE: i32 = 2;
    pub const INT16: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT32: i32 = 5;
    pub const UINT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const UINT64: i32 = 8;
    pub const STRING: i32 = 9;
    pub const UINT64_ARRAY: i32 = 16;
    pub const HRTIME: i32 = 18;
    pub const NVLIST: i32 = 19;
    pub const BOOLEAN_VALUE: i32 = 21;
    pub const INT8: i32 = 22;
    pub const UINT8: i32 = 23;
}

/// Why a packed nvlist could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NvListError {
    /// The buffer ended before the structure did.
    #[error("nvlist truncated: needed {needed} bytes at offset {offset}, have {have}")]
    Truncated {
        /// Offset of the read that failed.
        offset: usize,
        /// Bytes the read needed.
        needed: usize,
        /// Bytes left in the buffer.
        have: usize,
    },
    /// The header names an encoding other than native.
    #[error("nvlist encoding {0} is not supported (only NV_ENCODE_NATIVE)")]
    Encoding(u8),
    /// The header's endian byte is neither 0 nor 1.
    #[error("nvlist header has invalid endian byte {0}")]
    Endian(u8),
    /// An nvlist's version is not `NV_VERSION`.
    #[error("nvlist version {0} is not supported")]
    Version(i32),
    /// A pair is malformed.
    #[error("nvpair at offset {offset}: {reason}")]
    BadPair {
        /// Offset of the pair.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// Nesting deeper than [`MAX_RECURSION`].
    #[error("nvlist nested deeper than {MAX_RECURSION} levels")]
    TooDeep,
}

/// One value of an nvpair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvValue {
    /// `DATA_TYPE_BOOLEAN`: a presence flag without a value.
    Boolean,
    /// `DATA_TYPE_BOOLEAN_VALUE`.
    BooleanValue(bool),
    /// `DATA_TYPE_BYTE`.
    Byte(u8),
    /// `DATA_TYPE_INT8`.
    Int8(i8),
    /// `DATA_TYPE_UINT8`.
    Uint8(u8),
    /// `DATA_TYPE_INT16`.
    Int16(i16),
    /// `DATA_TYPE_UINT16`.
    Uint16(u16),
    /// `DATA_TYPE_INT32`.
    Int32(i32),
    /// `DATA_TYPE_UINT32`.
    Uint32(u32),
    /// `DATA_TYPE_INT64`.
    Int64(i64),
    /// `DATA_TYPE_UINT64`.
    Uint64(u64),
    /// `DATA_TYPE_HRTIME` (nanoseconds).
    Hrtime(i64),
    /// `DATA_TYPE_STRING` (no interior NUL).
    String(String),
    /// `DATA_TYPE_UINT64_ARRAY`.
    Uint64Array(Vec<u64>),
    /// `DATA_TYPE_NVLIST`.
    NvList(NvList),
}

impl NvValue {
    fn type_code(&self) -> i32 {
        use data_type as t;
        match self {
            NvValue::Boolean => t::BOOLEAN,
            NvValue::BooleanValue(_) => t::BOOLEAN_VALUE,
            NvValue::Byte(_) => t::BYTE,
            NvValue::Int8(_) => t::INT8,
            NvValue::Uint8(_) => t::UINT8,
            NvValue::Int16(_) => t::INT16,
            NvValue::Uint16(_) => t::UINT16,
            NvValue::Int32(_) => t::INT32,
            NvValue::Uint32(_) => t::UINT32,
            NvValue::Int64(_) => t::INT64,
            NvValue::Uint64(_) => t::UINT64,
            NvValue::Hrtime(_) => t::HRTIME,
            NvValue::String(_) => t::STRING,
            NvValue::Uint64Array(_) => t::UINT64_ARRAY,
            NvValue::NvList(_) => t::NVLIST,
        }
    }

    fn nelem(&self) -> usize {
        match self {
            NvValue::Boolean => 0,
            NvValue::Uint64Array(v) => v.len(),
            _ => 1,
        }
    }
}

/// One named pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvPair {
    /// The pair's name (no interior NUL).
    pub name: String,
    /// The pair's value.
    pub value: NvValue,
}

/// An ordered list of pairs with unique names (`NV_UNIQUE_NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NvList {
    /// The pairs in encoding order.
    pub pairs: Vec<NvPair>,
}

impl NvList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pair, replacing (and moving to the end) any pair of that name,
    /// as `nvlist_add_*` does on an `NV_UNIQUE_NAME` list.
    pub fn add(&mut self, name: &str, value: NvValue) {
        self.pairs.retain(|p| p.name != name);
        self.pairs.push(NvPair {
            name: name.to_string(),
            value,
        });
    }

    /// The value of the pair named `name`.
    pub fn get(&self, name: &str) -> Option<&NvValue> {
        self.pairs.iter().find(|p| p.name == name).map(|p| &p.value)
    }

    /// True when a pair named `name` exists (of any type).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The `uint64` value named `name`.
    pub fn uint64(&self, name: &str) -> Option<u64> {
        match self.get(name) {
            Some(NvValue::Uint64(v)) => Some(*v),
            _ => None,
        }
    }

    /// The string value named `name`.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(NvValue::String(v)) => Some(v),
            _ => None,
        }
    }

    /// The `uint64` array named `name`.
    pub fn uint64_array(&self, name: &str) -> Option<&[u64]> {
        match self.get(name) {
            Some(NvValue::Uint64Array(v)) => Some(v),
            _ => None,
        }
    }
}

/// Renders the list the way libnvpair's `nvlist_print` does (what
/// `zfs send -nvt` prints after "resume token contents:"): a
/// `nvlist version: 0` line, then one tab-indented `name = value` line per
/// pair, with uint64 in `0x%llx`, booleans as `= 1`, strings bare.
impl std::fmt::Display for NvList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        print_list(self, f, 0)
    }
}

fn tabs(f: &mut std::fmt::Formatter<'_>, n: usize) -> std::fmt::Result {
    for _ in 0..n {
        f.write_str("\t")?;
    }
    Ok(())
}

fn print_list(list: &NvList, f: &mut std::fmt::Formatter<'_>, depth: usize) -> std::fmt::Result {
    tabs(f, depth)?;
    writeln!(f, "nvlist version: {NV_VERSION}")?;
    for p in &list.pairs {
        let n = &p.name;
        match &p.value {
            NvValue::Uint64Array(v) => {
                // An empty array prints only the end-of-member newline.
                for (i, x) in v.iter().enumerate() {
                    if i == 0 {
                        tabs(f, depth + 1)?;
                        write!(f, "{n} = ")?;
                    } else {
                        f.write_str(" ")?;
                    }
                    write!(f, "0x{x:x}")?;
                }
            }
            NvValue::NvList(inner) => {
                tabs(f, depth + 1)?;
                writeln!(f, "{n} = (embedded nvlist)")?;
                print_list(inner, f, depth + 1)?;
                tabs(f, depth + 1)?;
                writeln!(f, "(end {n})")?;
            }
            v => {
                tabs(f, depth + 1)?;
                write!(f, "{n} = ")?;
                match v {
                    NvValue::Boolean => f.write_str("1")?,
                    NvValue::BooleanValue(b) => write!(f, "{}", u8::from(*b))?,
                    NvValue::Byte(x) => write!(f, "0x{x:02x}")?,
                    NvValue::Int8(x) => write!(f, "{x}")?,
                    NvValue::Uint8(x) => write!(f, "0x{x:x}")?,
                    NvValue::Int16(x) => write!(f, "{x}")?,
                    NvValue::Uint16(x) => write!(f, "0x{x:x}")?,
                    NvValue::Int32(x) => write!(f, "{x}")?,
                    NvValue::Uint32(x) => write!(f, "0x{x:x}")?,
                    NvValue::Int64(x) => write!(f, "{x}")?,
                    NvValue::Uint64(x) => write!(f, "0x{x:x}")?,
                    NvValue::Hrtime(x) => write!(f, "0x{x:x}")?,
                    NvValue::String(x) => f.write_str(x)?,
                    NvValue::Uint64Array(_) | NvValue::NvList(_) => {}
                }
            }
        }
        writeln!(f)?;
    }
    Ok(())
}

fn align8(n: usize) -> usize {
    n.div_ceil(NV_ALIGN) * NV_ALIGN
}

/// Byte order of an encoded list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn pad_to_8(&mut self, start: usize) {
        let len = self.out.len() - start;
        self.out.resize(start + align8(len), 0);
    }

    fn list(&mut self, list: &NvList) {
        self.i32(NV_VERSION);
        self.u32(NV_UNIQUE_NAME);
        for pair in &list.pairs {
            self.pair(pair);
        }
        self.out.extend_from_slice(&[0; TERMINATOR_SIZE]);
    }

    fn pair(&mut self, pair: &NvPair) {
        let name_sz = pair.name.len() + 1;
        let start = self.out.len();
        // Placeholder for nvp_size, patched below.
        self.i32(0);
        self.out
            .extend_from_slice(&(i16::try_from(name_sz).unwrap_or(i16::MAX)).to_le_bytes());
        self.out.extend_from_slice(&0i16.to_le_bytes());
        self.i32(i32::try_from(pair.value.nelem()).unwrap_or(i32::MAX));
        self.i32(pair.value.type_code());
        self.out.extend_from_slice(pair.name.as_bytes());
        self.out.push(0);
        self.pad_to_8(start);
        let value_start = self.out.len();
        match &pair.value {
            NvValue::Boolean => {}
            NvValue::BooleanValue(b) => self.i32(i32::from(*b)),
            NvValue::Byte(v) | NvValue::Uint8(v) => self.out.push(*v),
            NvValue::Int8(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            NvValue::Int16(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            NvValue::Uint16(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            NvValue::Int32(v) => self.i32(*v),
            NvValue::Uint32(v) => self.u32(*v),
            NvValue::Int64(v) | NvValue::Hrtime(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            NvValue::Uint64(v) => self.out.extend_from_slice(&v.to_le_bytes()),
            NvValue::String(s) => {
                self.out.extend_from_slice(s.as_bytes());
                self.out.push(0);
            }
            NvValue::Uint64Array(v) => {
                for x in v {
                    self.out.extend_from_slice(&x.to_le_bytes());
                }
            }
            NvValue::NvList(_) => {
                // The nvlist_t image: version, nvflag, priv (zeroed), flag, pad.
                self.i32(NV_VERSION);
                self.u32(NV_UNIQUE_NAME);
                self.out.extend_from_slice(&[0; NVLIST_T_SIZE - 8]);
            }
        }
        self.pad_to_8(value_start);
        let size = i32::try_from(self.out.len() - start).unwrap_or(i32::MAX);
        self.out[start..start + 4].copy_from_slice(&size.to_le_bytes());
        if let NvValue::NvList(inner) = &pair.value {
            self.list(inner);
        }
    }
}

/// Packs a list with `NV_ENCODE_NATIVE` in little-endian order, byte for
/// byte as `fnvlist_pack` does on x86.
pub fn pack_native(list: &NvList) -> Vec<u8> {
    let mut w = Writer { out: Vec::new() };
    w.out
        .extend_from_slice(&[NV_ENCODE_NATIVE, NV_LITTLE_ENDIAN, 0, 0]);
    w.list(list);
    w.out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    order: Order,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NvListError> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(NvListError::Truncated {
                offset: self.pos,
                needed: n,
                have,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], NvListError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, NvListError> {
        let a = self.array::<2>()?;
        Ok(match self.order {
            Order::Little => u16::from_le_bytes(a),
            Order::Big => u16::from_be_bytes(a),
        })
    }
    fn u32(&mut self) -> Result<u32, NvListError> {
        let a = self.array::<4>()?;
        Ok(match self.order {
            Order::Little => u32::from_le_bytes(a),
            Order::Big => u32::from_be_bytes(a),
        })
    }
    fn peek_i32(&self) -> Result<i32, NvListError> {
        let have = self.buf.len() - self.pos;
        if have < 4 {
            return Err(NvListError::Truncated {
                offset: self.pos,
                needed: 4,
                have,
            });
        }
        let a = [
            self.buf[self.pos],
            self.buf[self.pos + 1],
            self.buf[self.pos + 2],
            self.buf[self.pos + 3],
        ];
        Ok(match self.order {
            Order::Little => i32::from_le_bytes(a),
            Order::Big => i32::from_be_bytes(a),
        })
    }

    fn list(&mut self, depth: usize) -> Result<NvList, NvListError> {
        if depth > MAX_RECURSION {
            return Err(NvListError::TooDeep);
        }
        let version = self.u32()? as i32;
        if version != NV_VERSION {
            return Err(NvListError::Version(version));
        }
        let flags = self.u32()?;
        let unique = flags & NV_UNIQUE_NAME != 0;
        let mut list = NvList::new();
        loop {
            let size = self.peek_i32()?;
            if size == 0 {
                self.pos += TERMINATOR_SIZE;
                return Ok(list);
            }
            let pair = self.pair(depth)?;
            if unique {
                list.add(&pair.name, pair.value);
            } else {
                list.pairs.push(pair);
            }
        }
    }

    fn pair(&mut self, depth: usize) -> Result<NvPair, NvListError> {
        let start = self.pos;
        let bad = |reason: String| NvListError::BadPair {
            offset: start,
            reason,
        };
        let size = self.u32()? as i32;
        let name_sz = self.u16()? as i16;
        let _reserved = self.u16()?;
        let nelem = self.u32()? as i32;
        let ty = self.u32()? as i32;
        let have = self.buf.len() - start;
        if size < 0 || (size as usize) < NVPAIR_SIZE || size as usize > have {
            return Err(bad(format!(
                "size {size} is out of range ({have} bytes left)"
            )));
        }
        let size = size as usize;
        if name_sz <= 0 {
            return Err(bad(format!("name size {name_sz} is not positive")));
        }
        let name_sz = name_sz as usize;
        let val_off = align8(NVPAIR_SIZE + name_sz);
        if val_off > size {
            return Err(bad(format!(
                "name size {name_sz} overruns pair size {size}"
            )));
        }
        if nelem < 0 {
            return Err(bad(format!("negative element count {nelem}")));
        }
        let nelem = nelem as usize;
        let name_bytes = &self.buf[start + NVPAIR_SIZE..start + NVPAIR_SIZE + name_sz];
        if name_bytes[name_sz - 1] != 0 || name_bytes[..name_sz - 1].contains(&0) {
            return Err(bad("name is not a NUL-terminated string of its size".into()));
        }
        let name = std::str::from_utf8(&name_bytes[..name_sz - 1])
            .map_err(|_| bad("name is not valid UTF-8".into()))?
            .to_string();
        let data = &self.buf[start + val_off..start + size];
        let data_len = size - val_off;
        let value = self.value(ty, nelem, data, &name).map_err(bad)?;
        // The exact-size rule of i_validate_nvpair.
        let value_sz = match &value {
            NvValue::String(s) => s.len() + 1,
            NvValue::NvList(_) => NVLIST_T_SIZE,
            other => fixed_size(other.type_code()).unwrap_or(0) * nelem,
        };
        if align8(value_sz) != data_len {
            return Err(bad(format!(
                "pair '{name}' has {data_len} value bytes, expected {}",
                align8(value_sz)
            )));
        }
        self.pos = start + size;
        let value = match value {
            NvValue::NvList(_) => NvValue::NvList(self.list(depth + 1)?),
            v => v,
        };
        Ok(NvPair { name, value })
    }

    fn value(&self, ty: i32, nelem: usize, data: &[u8], name: &str) -> Result<NvValue, String> {
        use data_type as t;
        let want_elems = |n: usize| {
            if nelem == n {
                Ok(())
            } else {
                Err(format!(
                    "pair '{name}' has {nelem} elements, type {ty} needs {n}"
                ))
            }
        };
        let short = || format!("pair '{name}' value is truncated");
        let get = |n: usize| -> Result<&[u8], String> { data.get(..n).ok_or_else(short) };
        let o = self.order;
        let u16v = |b: &[u8]| {
            let a = [b[0], b[1]];
            if o == Order::Little {
                u16::from_le_bytes(a)
            } else {
                u16::from_be_bytes(a)
            }
        };
        let u32v = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if o == Order::Little {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        };
        let u64v = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            if o == Order::Little {
                u64::from_le_bytes(a)
            } else {
                u64::from_be_bytes(a)
            }
        };
        Ok(match ty {
            t::BOOLEAN => {
                want_elems(0)?;
                NvValue::Boolean
            }
            t::BOOLEAN_VALUE => {
                want_elems(1)?;
                match u32v(get(4)?) {
                    0 => NvValue::BooleanValue(false),
                    1 => NvValue::BooleanValue(true),
                    v => return Err(format!("pair '{name}' boolean value {v} is not 0 or 1")),
                }
            }
            t::BYTE => {
                want_elems(1)?;
                NvValue::Byte(get(1)?[0])
            }
            t::UINT8 => {
                want_elems(1)?;
                NvValue::Uint8(get(1)?[0])
            }
            t::INT8 => {
                want_elems(1)?;
                NvValue::Int8(get(1)?[0] as i8)
            }
            t::INT16 => {
                want_elems(1)?;
                NvValue::Int16(u16v(get(2)?) as i16)
            }
            t::UINT16 => {
                want_elems(1)?;
                NvValue::Uint16(u16v(get(2)?))
            }
            t::INT32 => {
                want_elems(1)?;
                NvValue::Int32(u32v(get(4)?) as i32)
            }
            t::UINT32 => {
                want_elems(1)?;
                NvValue::Uint32(u32v(get(4)?))
            }
            t::INT64 => {
                want_elems(1)?;
                NvValue::Int64(u64v(get(8)?) as i64)
            }
            t::HRTIME => {
                want_elems(1)?;
                NvValue::Hrtime(u64v(get(8)?) as i64)
            }
            t::UINT64 => {
                want_elems(1)?;
                NvValue::Uint64(u64v(get(8)?))
            }
            t::STRING => {
                want_elems(1)?;
                let end = data
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| format!("pair '{name}' string is not NUL-terminated"))?;
                let s = std::str::from_utf8(&data[..end])
                    .map_err(|_| format!("pair '{name}' string is not valid UTF-8"))?;
                NvValue::String(s.to_string())
            }
            t::UINT64_ARRAY => {
                let bytes = nelem
                    .checked_mul(8)
                    .ok_or_else(|| format!("pair '{name}' element count {nelem} is too large"))?;
                let raw = get(bytes)?;
                NvValue::Uint64Array(raw.chunks_exact(8).map(u64v).collect())
            }
            t::NVLIST => {
                want_elems(1)?;
                get(NVLIST_T_SIZE)?;
                NvValue::NvList(NvList::new())
            }
            other => return Err(format!("pair '{name}' has unsupported data type {other}")),
        })
    }
}

fn fixed_size(ty: i32) -> Option<usize> {
    use data_type as t;
    Some(match ty {
        t::BOOLEAN => 0,
        t::BYTE | t::INT8 | t::UINT8 => 1,
        t::INT16 | t::UINT16 => 2,
        t::INT32 | t::UINT32 | t::BOOLEAN_VALUE => 4,
        t::INT64 | t::UINT64 | t::HRTIME | t::UINT64_ARRAY => 8,
        _ => return None,
    })
}

/// Unpacks a native-encoded nvlist of either byte order. Bytes after the
/// top-level terminator are ignored, as `nvlist_unpack` ignores them.
pub fn unpack_native(buf: &[u8]) -> Result<NvList, NvListError> {
    if buf.len() < HEADER_SIZE + NVL_HEADER_SIZE {
        return Err(NvListError::Truncated {
            offset: 0,
            needed: HEADER_SIZE + NVL_HEADER_SIZE,
            have: buf.len(),
        });
    }
    let order = match (buf[0], buf[1]) {
        (NV_ENCODE_NATIVE, NV_LITTLE_ENDIAN) => Order::Little,
        (NV_ENCODE_NATIVE, NV_BIG_ENDIAN) => Order::Big,
        (NV_ENCODE_NATIVE, e) => return Err(NvListError::Endian(e)),
        (enc, _) => return Err(NvListError::Encoding(enc)),
    };
    let mut r = Reader {
        buf,
        pos: HEADER_SIZE,
        order,
    };
    r.list(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The packed nvlist inside zrepl's "normal send (non-incremental)"
    /// test token (zrepl/zfs/resume_token_test.go), after zlib inflation.
    const ZREPL_PACKED: &str = "000100000000000001000000200000000700000001000000080000006f626a65637400000100000000000000200000000700000001000000080000006f666673657400000000000000000000200000000600000001000000080000006279746573000000000000000000000020000000070000000100000008000000746f677569640000abdd9daa819f5d5928000000070000000100000009000000746f6e616d650000706f6f6c312f7465737440610000000000000000";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn sample() -> NvList {
        let mut l = NvList::new();
        l.add("object", NvValue::Uint64(1));
        l.add("offset", NvValue::Uint64(0));
        l.add("bytes", NvValue::Uint64(0));
        l.add("toguid", NvValue::Uint64(0x595d_9f81_aa9d_ddab));
        l.add("toname", NvValue::String("pool1/test@a".into()));
        l
    }

    #[test]
    fn decodes_real_openzfs_bytes() {
        let l = unpack_native(&unhex(ZREPL_PACKED)).unwrap();
        assert_eq!(l, sample());
    }

    #[test]
    fn encodes_byte_identical_to_openzfs() {
        assert_eq!(pack_native(&sample()), unhex(ZREPL_PACKED));
    }

    #[test]
    fn boolean_and_nested_round_trip() {
        let mut inner = NvList::new();
        inner.add("x", NvValue::Uint64Array(vec![1, 2, 3]));
        let mut l = sample();
        l.add("embedok", NvValue::Boolean);
        l.add("nested", NvValue::NvList(inner));
        l.add("after", NvValue::BooleanValue(true));
        assert_eq!(unpack_native(&pack_native(&l)).unwrap(), l);
    }

    #[test]
    fn prints_like_nvlist_print() {
        let mut l = sample();
        l.add("embedok", NvValue::Boolean);
        l.add("redact_snaps", NvValue::Uint64Array(vec![1, 0xab]));
        let text = l.to_string();
        assert_eq!(
            text,
            "nvlist version: 0\n\tobject = 0x1\n\toffset = 0x0\n\tbytes = 0x0\n\ttoguid = 0x595d9f81aa9dddab\n\ttoname = pool1/test@a\n\tembedok = 1\n\tredact_snaps = 0x1 0xab\n"
        );
    }

    #[test]
    fn xdr_is_refused_clearly() {
        let mut b = pack_native(&sample());
        b[0] = NV_ENCODE_XDR;
        assert_eq!(unpack_native(&b), Err(NvListError::Encoding(1)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = pack_native(&sample());
        for cut in 0..b.len() {
            assert!(unpack_native(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut l = NvList::new();
        for _ in 0..(MAX_RECURSION + 2) {
            let mut outer = NvList::new();
            outer.add("n", NvValue::NvList(l));
            l = outer;
        }
        assert_eq!(unpack_native(&pack_native(&l)), Err(NvListError::TooDeep));
    }

    fn value_strategy() -> impl Strategy<Value = NvValue> {
        prop_oneof![
            Just(NvValue::Boolean),
            any::<bool>().prop_map(NvValue::BooleanValue),
            any::<u8>().prop_map(NvValue::Uint8),
            any::<i16>().prop_map(NvValue::Int16),
            any::<u32>().prop_map(NvValue::Uint32),
            any::<i64>().prop_map(NvValue::Int64),
            any::<u64>().prop_map(NvValue::Uint64),
            "[a-zA-Z0-9/@#_. -]{0,40}".prop_map(NvValue::String),
            proptest::collection::vec(any::<u64>(), 0..5).prop_map(NvValue::Uint64Array),
        ]
    }

    proptest! {
        #[test]
        fn pack_unpack_round_trip(pairs in proptest::collection::vec(("[a-z_]{1,20}", value_strategy()), 0..8)) {
            let mut l = NvList::new();
            for (n, v) in pairs {
                l.add(&n, v);
            }
            prop_assert_eq!(unpack_native(&pack_native(&l)).unwrap(), l);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = unpack_native(&data);
        }

        #[test]
        fn flipped_bytes_never_panic(idx in 0usize..200, byte in any::<u8>()) {
            let mut b = pack_native(&sample());
            let i = idx % b.len();
            b[i] = byte;
            let _ = unpack_native(&b);
        }
    }
}
