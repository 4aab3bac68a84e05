//! Telling streams apart by their first bytes (zpipe-verify framing, zstd,
//! or a bare ZFS send stream), and naming the snapshot a receive must have
//! produced.

use zpipe_verify::zfs::format;

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

/// The snapshot whose guid proves a receive: of the substreams
/// `(toguid, toname)` a stream carried, the last one of the first dataset
/// (for `-I` the newest snapshot; for `-R` the top dataset's newest).
pub fn proof_snapshot(substreams: &[(u64, String)]) -> Option<(u64, &str)> {
    let (_, first) = substreams.first()?;
    let fs = first.split_once('@').map_or(first.as_str(), |(f, _)| f);
    substreams
        .iter()
        .rev()
        .find(|(_, n)| n.split_once('@').is_some_and(|(f, _)| f == fs))
        .map(|(g, n)| (*g, n.as_str()))
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

    #[test]
    fn proof_is_the_newest_snapshot_of_the_top_dataset() {
        let subs = vec![
            (1, "p/a@s1".to_string()),
            (2, "p/a/child@s1".to_string()),
            (3, "p/a@s2".to_string()),
            (4, "p/a/child@s2".to_string()),
        ];
        assert_eq!(proof_snapshot(&subs), Some((3, "p/a@s2")));
        assert_eq!(proof_snapshot(&subs[..1]), Some((1, "p/a@s1")));
        assert_eq!(proof_snapshot(&[]), None);
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
