//! Synthetic ZFS send streams and the transport-only stand-in `zfs` that
//! sends one, for tests and benchmarks that time the wire, not a pool
//! (tests/tests/slow_link.rs, `cargo xtask bench` transport and slow-link
//! cases).

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use zpipe_verify::zfs::builder::{BeginFields, ObjectFields, StreamBuilder, WriteFields};
use zpipe_verify::zfs::ByteOrder;

/// Record size of the synthetic streams (one WRITE record each).
pub const RECORD: usize = 128 << 10;
/// Object number of the one file in a synthetic stream.
const FILE_OBJECT: u64 = 2;

/// Writes to `out` a valid full send stream of `snapshot` (guid `toguid`)
/// holding one file whose records `next` fills: it is handed a
/// [`RECORD`]-sized buffer and returns how many bytes it filled (0 ends
/// the file; a short record is zero-padded and ends it). Returns `out`.
pub fn one_file_stream<W: Write>(
    out: W,
    snapshot: &str,
    toguid: u64,
    mut next: impl FnMut(&mut [u8]) -> anyhow::Result<usize>,
) -> anyhow::Result<W> {
    let mut b = StreamBuilder::to_writer(out, ByteOrder::Little, true);
    b.begin(
        &BeginFields {
            toname: snapshot.into(),
            toguid,
            creation_time: 1_764_000_000,
            objset_type: 2,
            ..BeginFields::default()
        },
        &[],
    )?;
    b.object(
        &ObjectFields {
            object: FILE_OBJECT,
            blksz: RECORD as u32,
            ..ObjectFields::default()
        },
        &[],
    )?;
    let mut rec = vec![0u8; RECORD];
    let mut offset = 0u64;
    loop {
        let got = next(&mut rec)?.min(RECORD);
        if got == 0 {
            break;
        }
        rec[got..].fill(0);
        let w = WriteFields {
            object: FILE_OBJECT,
            offset,
            logical_size: RECORD as u64,
            ..WriteFields::default()
        };
        b.write(&w, &rec)?;
        offset += RECORD as u64;
        if got < RECORD {
            break;
        }
    }
    b.end()?;
    Ok(b.into_inner())
}

/// Writes a stand-in `zfs` into `dir` that moves `stream` and nothing
/// else: OpenZFS 2.x usage texts (the wrappers read capabilities from
/// them), `send -nvP` with the exact size, `send` cats `stream`, `receive`
/// writes the SHA-256 of its input to `received` (or drops it when
/// `None`), and `get` answers `toguid`. Returns the script's path.
pub fn transport_zfs(
    dir: &Path,
    stream: &Path,
    toguid: u64,
    received: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let bytes = std::fs::metadata(stream)
        .with_context(|| format!("{}", stream.display()))?
        .len();
    let q = |p: &Path| crate::shell_quote(&p.display().to_string());
    let receive = match received {
        Some(path) => format!("sha256sum >{}", q(path)),
        None => "cat >/dev/null".to_string(),
    };
    let script = format!(
        r#"#!/bin/sh
# stand-in zfs of the zpipe test kit (tests/kit/stream.rs): transport only
case "$1" in
send)
    if [ $# -eq 1 ]; then
        printf 'missing snapshot argument\nusage:\n\tsend [-DLPbcehnpsVvw] [-i|-I snapshot] <snapshot>\n\tsend [-nVvPe] -t <receive_resume_token>\n' >&2
        exit 2
    fi
    if [ "$2" = -nvP ]; then
        printf 'full\t%s\t{bytes}\nsize\t{bytes}\n' "$3"
        exit 0
    fi
    exec cat {stream} ;;
receive|recv)
    if [ $# -eq 1 ]; then
        printf 'missing snapshot argument\nusage:\n\treceive [-FhMnsuv] [-o <property=value>] ... [-x <property>] ... <filesystem|volume|snapshot>\n\treceive -A <filesystem|volume>\n' >&2
        exit 2
    fi
    exec {receive} ;;
get)
    echo {toguid} ;;
*)
    echo "stand-in zfs: unsupported: $*" >&2
    exit 1 ;;
esac
"#,
        stream = q(stream),
    );
    let path = dir.join("zfs");
    crate::write_script(&path, &script)?;
    Ok(path)
}
