//! Telling streams apart by their first bytes: zpipe-verify framing, zstd,
//! or a bare ZFS send stream; and reading the `DRR_BEGIN` record of a ZFS
//! stream for the snapshot it announces.

use zpipe_verify::zfs::format::{self, off};

/// What a stream is, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// zpipe-verify framing.
    Framed,
    /// zstd frames (zpipe-compress or plain zstd).
    Zstd,
    /// A bare ZFS send stream (not verified end to end).
    Zfs,
}

/// The most bytes [`kind`] needs to decide.
pub const SNIFF_LEN: usize = format::RECORD_SIZE;

/// Classifies a stream prefix; `None` when it is none of the three.
pub fn kind(prefix: &[u8]) -> Option<Kind> {
    if zpipe_verify::looks_like_framed(prefix) {
        Some(Kind::Framed)
    } else if zpipe_compress::looks_like_zstd(prefix) {
        Some(Kind::Zstd)
    } else if zpipe_verify::zfs::looks_like_zfs(prefix) {
        Some(Kind::Zfs)
    } else {
        None
    }
}

/// The snapshot a ZFS stream's `DRR_BEGIN` record announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// `drr_toguid`: the guid the received snapshot must have.
    pub toguid: u64,
    /// `drr_fromguid`: 0 for a full stream.
    pub fromguid: u64,
    /// `drr_toname`: `pool/fs@snap` on the sending side.
    pub toname: String,
}

/// Reads the `DRR_BEGIN` record at the start of `rec` (either byte order).
pub fn begin(rec: &[u8]) -> Option<Begin> {
    if rec.len() < format::RECORD_SIZE {
        return None;
    }
    let u = &rec[format::UNION_OFFSET..];
    let raw_magic = u64::from_le_bytes(u[off::BEGIN_MAGIC..off::BEGIN_MAGIC + 8].try_into().ok()?);
    let swap = if raw_magic == format::DMU_BACKUP_MAGIC {
        false
    } else if raw_magic.swap_bytes() == format::DMU_BACKUP_MAGIC {
        true
    } else {
        return None;
    };
    let u64_at = |o: usize| -> Option<u64> {
        let v = u64::from_le_bytes(u[o..o + 8].try_into().ok()?);
        Some(if swap { v.swap_bytes() } else { v })
    };
    let name = &u[off::BEGIN_TONAME..off::BEGIN_TONAME + format::MAXNAMELEN];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(Begin {
        toguid: u64_at(off::BEGIN_TOGUID)?,
        fromguid: u64_at(off::BEGIN_FROMGUID)?,
        toname: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

/// The snapshot `zfs recv [-d|-e] TARGET` creates from a stream whose
/// `drr_toname` is `toname`.
pub fn received_name(target: &str, toname: &str, strip_d: bool, strip_e: bool) -> Option<String> {
    let (fs, snap) = toname.split_once('@')?;
    if target.contains('@') {
        return Some(target.to_string());
    }
    let fs_part = if strip_d {
        fs.split_once('/').map(|(_, rest)| rest).unwrap_or("")
    } else if strip_e {
        fs.rsplit('/').next().unwrap_or(fs)
    } else {
        ""
    };
    Some(if fs_part.is_empty() {
        format!("{target}@{snap}")
    } else {
        format!("{target}/{fs_part}@{snap}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin_record(swap: bool) -> Vec<u8> {
        let mut r = vec![0u8; format::RECORD_SIZE];
        let put = |r: &mut Vec<u8>, o: usize, v: u64| {
            let v = if swap { v.swap_bytes() } else { v };
            r[format::UNION_OFFSET + o..format::UNION_OFFSET + o + 8]
                .copy_from_slice(&v.to_le_bytes());
        };
        put(&mut r, off::BEGIN_MAGIC, format::DMU_BACKUP_MAGIC);
        put(&mut r, off::BEGIN_TOGUID, 0x1234_5678_9abc_def0);
        put(&mut r, off::BEGIN_FROMGUID, 7);
        let name = b"tank/my ds@snap 1";
        let o = format::UNION_OFFSET + off::BEGIN_TONAME;
        r[o..o + name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn begin_in_both_byte_orders() {
        for swap in [false, true] {
            let b = begin(&begin_record(swap)).unwrap();
            assert_eq!(b.toguid, 0x1234_5678_9abc_def0);
            assert_eq!(b.fromguid, 7);
            assert_eq!(b.toname, "tank/my ds@snap 1");
        }
        assert!(begin(&[0u8; 10]).is_none());
        assert!(begin(&vec![0u8; format::RECORD_SIZE]).is_none());
    }

    #[test]
    fn received_names() {
        assert_eq!(
            received_name("b/x", "a/y/z@s", false, false).unwrap(),
            "b/x@s"
        );
        assert_eq!(
            received_name("b/x", "a/y/z@s", true, false).unwrap(),
            "b/x/y/z@s"
        );
        assert_eq!(
            received_name("b/x", "a/y/z@s", false, true).unwrap(),
            "b/x/z@s"
        );
        assert_eq!(
            received_name("b/x@t", "a/y@s", false, false).unwrap(),
            "b/x@t"
        );
        assert!(received_name("b/x", "nosnap", false, false).is_none());
    }
}
