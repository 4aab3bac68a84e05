//! Partial receive state of the stand-in's `recv -s`.
//!
//! The bytes of an interrupted stream, cut back to the last complete
//! record, are kept in a file in the state directory (env
//! `ZPIPE_STANDIN_STATE`, default `/var/tmp/zpipe-standin`). The target
//! dataset carries the user property `zpipe.standin:partial` =
//! `full:<path>`, `over:<path>` or `incr:<path>`; for an interrupted full receive the
//! stand-in creates the (empty) target dataset to hold it, as OpenZFS keeps
//! the inconsistent new dataset. The resume token is computed from the
//! prefix file each time it is asked for.

use crate::stream::{self, Begin, Next, RecordReader};
use crate::{run_real, zfs_fail};
use std::path::{Path, PathBuf};
use zrecv_wrap::token::{self, ResumeToken};

/// The user property marking a dataset with partial state.
pub const PARTIAL_PROP: &str = "zpipe.standin:partial";
/// Env var naming the state directory.
pub const STATE_DIR_ENV: &str = "ZPIPE_STANDIN_STATE";
/// The state directory when the env var is unset.
pub const DEFAULT_STATE_DIR: &str = "/var/tmp/zpipe-standin";

/// Whether the interrupted receive created a new filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A full (new filesystem) stream; the target is a stand-in placeholder.
    Full,
    /// A full stream onto an existing filesystem (`recv -F`); resuming needs -F.
    Overwrite,
    /// An incremental stream onto an existing filesystem.
    Incremental,
}

/// Partial state recorded on a dataset.
#[derive(Debug, Clone)]
pub struct Partial {
    /// Full or incremental.
    pub kind: Kind,
    /// The prefix file.
    pub path: PathBuf,
}

impl Partial {
    /// The property value.
    pub fn to_prop(&self) -> String {
        let k = match self.kind {
            Kind::Full => "full",
            Kind::Overwrite => "over",
            Kind::Incremental => "incr",
        };
        format!("{k}:{}", self.path.display())
    }

    /// Reads a property value; `-` or anything unknown means none.
    pub fn parse(v: &str) -> Option<Partial> {
        let (k, p) = v.trim().split_once(':')?;
        let kind = match k {
            "full" => Kind::Full,
            "over" => Kind::Overwrite,
            "incr" => Kind::Incremental,
            _ => return None,
        };
        Some(Partial {
            kind,
            path: PathBuf::from(p),
        })
    }
}

/// The partial state of `ds`, if any.
pub fn lookup(ds: &str) -> Option<Partial> {
    let c = run_real(&["get", "-H", "-o", "value", PARTIAL_PROP, ds]).ok()?;
    if !c.ok() {
        return None;
    }
    Partial::parse(c.stdout.trim())
}

/// Records partial state on `ds`.
pub fn save(ds: &str, p: &Partial) -> anyhow::Result<()> {
    let c = run_real(&["set", &format!("{PARTIAL_PROP}={}", p.to_prop()), ds])?;
    if !c.ok() {
        return Err(zfs_fail(c.stderr.trim_end().to_string()));
    }
    Ok(())
}

/// Removes the partial-state mark from `ds`.
pub fn clear(ds: &str) -> anyhow::Result<()> {
    let c = run_real(&["inherit", PARTIAL_PROP, ds])?;
    if !c.ok() {
        return Err(zfs_fail(c.stderr.trim_end().to_string()));
    }
    Ok(())
}

/// The state directory, created if needed.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os(STATE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create state dir {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A fresh prefix-file path for `target`.
pub fn new_spool_path(target: &str) -> anyhow::Result<PathBuf> {
    let safe: String = target
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(state_dir()?.join(format!("{safe}-{}-{nanos}.partial", std::process::id())))
}

/// What a prefix file holds.
pub struct PrefixInfo {
    /// Its BEGIN record.
    pub begin: Begin,
    /// Position of its last complete record.
    pub last: (u64, u64),
    /// Its length in bytes.
    pub len: u64,
}

/// Reads a prefix file's BEGIN and its last record position.
pub fn scan_prefix(path: &Path) -> anyhow::Result<PrefixInfo> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("partial state {} is unreadable: {e}", path.display()))?;
    let mut r = RecordReader::new(std::io::BufReader::new(f));
    let mut buf = vec![0u8; crate::BUF_SIZE];
    let Next::Record(h) = r.header()? else {
        anyhow::bail!("partial state {} has no BEGIN record", path.display());
    };
    let begin = Begin::parse(&h)?;
    let features = begin.features();
    let n = h.payload_len(features)?;
    r.payload(n, &mut buf, &mut |_| Ok(()))?;
    let mut last = (0, 0);
    loop {
        match r.header()? {
            Next::Record(h) => {
                let n = h.payload_len(features)?;
                if r.payload(n, &mut buf, &mut |_| Ok(()))? < n {
                    anyhow::bail!("partial state {} ends inside a record", path.display());
                }
                last = h.position();
            }
            Next::Eof => break,
            Next::Cut => anyhow::bail!("partial state {} ends inside a header", path.display()),
        }
    }
    Ok(PrefixInfo {
        begin,
        last,
        len: r.pos,
    })
}

/// The resume token describing a prefix, as OpenZFS would report it.
pub fn token_of(info: &PrefixInfo) -> ResumeToken {
    let f = info.begin.features();
    ResumeToken {
        fromguid: (info.begin.fromguid != 0).then_some(info.begin.fromguid),
        object: info.last.0,
        offset: info.last.1,
        bytes: info.len,
        toguid: info.begin.toguid,
        toname: info.begin.toname.clone(),
        embedok: f & stream::F_EMBED != 0,
        largeblockok: f & stream::F_LARGE_BLOCKS != 0,
        compressok: f & stream::F_COMPRESSED != 0,
        rawok: f & stream::F_RAW != 0,
        ..Default::default()
    }
}

/// The encoded token for partial state `p`.
pub fn token_string(p: &Partial) -> anyhow::Result<String> {
    Ok(token::encode(&token_of(&scan_prefix(&p.path)?)))
}
