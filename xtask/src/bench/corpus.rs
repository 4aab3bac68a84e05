//! The benchmark corpus, made deterministically and cached.
//!
//! - The *mixed* file: real files from /usr/share and /usr/lib (text,
//!   binaries, already-compressed files) and generated pseudo-text, mixed
//!   in fixed shares and written in a fixed order. The choice is seeded:
//!   the tree is scanned in sorted order, each kind's list is shuffled with
//!   [`SEED`], and pieces are taken kind by kind so every prefix of the
//!   file has the same mix (the slow-link cases use prefixes). The same
//!   seed and the same installed files give the same bytes; a manifest
//!   (`.manifest.json`) lists every piece.
//! - The *random* file: seeded pseudo-random bytes (incompressible, like an
//!   encrypted send).
//! - ZFS send streams of a prefix of the mixed file (for the transport and
//!   slow-link cases), built with zpipe-verify's `StreamBuilder`.
//!
//! Files are written to `<name>.tmp` in 1 MiB writes and renamed, so a cut
//! run never leaves a short file under the final name; they are re-made
//! only when missing.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use zpipe_tests::data::{text as generated_text, Rng};

/// The default seed ("zpipe").
pub const SEED: u64 = 0x007a_7069_7065;
/// The largest piece taken from one file.
const MAX_PIECE: u64 = 16 << 20;
/// Files smaller than this are not taken (their pieces would be mostly
/// boundaries).
const MIN_FILE: u64 = 4 << 10;
/// Size of a generated pseudo-text piece.
const TEXT_PIECE: u64 = 2 << 20;
/// Write size.
const WRITE_BUF: usize = 1 << 20;

/// What a piece of the mixed file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A text file (docs, scripts, data).
    Text,
    /// A binary (shared objects, executables, fonts, databases).
    Binary,
    /// An already-compressed file (archives, images, compressed docs).
    Compressed,
    /// Generated pseudo-text (log-like lines).
    Generated,
}

/// Shares of the mix, in the order kinds are taken.
pub const SHARES: [(Kind, f64); 4] = [
    (Kind::Text, 0.30),
    (Kind::Binary, 0.30),
    (Kind::Compressed, 0.15),
    (Kind::Generated, 0.25),
];

/// One piece of the mixed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Source file, or `generated:<seed>`.
    pub source: String,
    /// Its kind.
    pub kind: Kind,
    /// Offset in the mixed file.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

/// The list of pieces of a mixed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The seed.
    pub seed: u64,
    /// Total bytes.
    pub bytes: u64,
    /// Pieces in file order.
    pub pieces: Vec<Piece>,
}

/// Kind of a file by its name and mode.
pub fn classify(path: &Path, executable: bool) -> Kind {
    const COMPRESSED: [&str; 22] = [
        "gz", "xz", "bz2", "zst", "lz4", "lzma", "zip", "jar", "png", "jpg", "jpeg", "gif", "webp",
        "woff", "woff2", "mp3", "ogg", "deb", "7z", "tgz", "br", "zstd",
    ];
    const BINARY: [&str; 15] = [
        "so", "a", "o", "bin", "mo", "ko", "pyc", "db", "cache", "dat", "ttf", "otf", "rlib",
        "wasm", "debug",
    ];
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if COMPRESSED.contains(&ext.as_str()) {
        Kind::Compressed
    } else if BINARY.contains(&ext.as_str()) || name.contains(".so.") || executable {
        Kind::Binary
    } else {
        Kind::Text
    }
}

/// Regular files (no symlinks) of at least [`MIN_FILE`] bytes under
/// `roots`, in sorted order, with size and kind.
pub fn scan(roots: &[PathBuf]) -> Vec<(PathBuf, u64, Kind)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = roots.iter().rev().cloned().collect();
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        let mut subdirs = Vec::new();
        for path in entries {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                subdirs.push(path);
            } else if meta.is_file() && meta.len() >= MIN_FILE {
                let exec = meta.permissions().mode() & 0o111 != 0;
                let kind = classify(&path, exec);
                out.push((path, meta.len(), kind));
            }
        }
        // Depth first, in sorted order.
        stack.extend(subdirs.into_iter().rev());
    }
    out
}

/// What to write: `(source, kind, len)` per piece, `source` `None` for
/// generated text (seeded by its index).
pub type Plan = Vec<(Option<PathBuf>, Kind, u64)>;

/// Chooses the pieces of a mixed file of `bytes` from `files` (see the
/// module docs). Kinds without files are left out of the mix.
pub fn plan(files: &[(PathBuf, u64, Kind)], bytes: u64, seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    // Per kind: its share, its shuffled files, the next index, bytes taken.
    type Lane = (Kind, f64, Vec<(PathBuf, u64)>, usize, u64);
    let mut lists: Vec<Lane> = Vec::new();
    for (kind, share) in SHARES {
        let mut list: Vec<(PathBuf, u64)> = files
            .iter()
            .filter(|f| f.2 == kind)
            .map(|f| (f.0.clone(), f.1))
            .collect();
        // Fisher-Yates with the seeded generator.
        for i in (1..list.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            list.swap(i, j);
        }
        if kind == Kind::Generated || !list.is_empty() {
            lists.push((kind, share, list, 0, 0));
        }
    }
    let mut plan = Vec::new();
    let mut total = 0u64;
    while total < bytes {
        // The kind furthest below its share goes next.
        let (lane_kind, _, list, next, written) = lists
            .iter_mut()
            .min_by(|a, b| (a.4 as f64 / a.1).total_cmp(&(b.4 as f64 / b.1)))
            .expect("generated text is always in the mix");
        let left = bytes - total;
        let (source, kind, len) = if list.is_empty() {
            (None, Kind::Generated, TEXT_PIECE.min(left))
        } else {
            let (path, size) = &list[*next % list.len()];
            *next += 1;
            (
                Some(path.clone()),
                *lane_kind,
                (*size).min(MAX_PIECE).min(left),
            )
        };
        *written += len;
        total += len;
        plan.push((source, kind, len));
    }
    plan
}

/// Writes the mixed file for `plan` to `path` (via `path.tmp`); returns
/// its manifest. A file that cannot be read (or became shorter) is
/// replaced by generated text of the same length, so the size holds.
pub fn write_mixed(plan: &Plan, seed: u64, path: &Path) -> anyhow::Result<Manifest> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(WRITE_BUF, file);
    let mut pieces = Vec::new();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for (i, (source, kind, len)) in plan.iter().enumerate() {
        buf.clear();
        let mut kind = *kind;
        let mut name = format!("generated:{i}");
        if let Some(path) = source {
            if File::open(path)
                .and_then(|f| f.take(*len).read_to_end(&mut buf))
                .is_ok()
                && buf.len() as u64 == *len
            {
                name = path.display().to_string();
            } else {
                buf.clear();
                kind = Kind::Generated;
            }
        }
        if buf.is_empty() {
            generated_text(
                seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
                *len as usize,
                &mut buf,
            );
        }
        out.write_all(&buf)?;
        pieces.push(Piece {
            source: name,
            kind,
            offset,
            len: *len,
        });
        offset += len;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(Manifest {
        seed,
        bytes: offset,
        pieces,
    })
}

/// Writes `bytes` seeded pseudo-random bytes to `path` (via `path.tmp`).
pub fn write_random(bytes: u64, seed: u64, path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(WRITE_BUF, file);
    let mut rng = Rng::new(seed ^ 0x5eed_5eed);
    let mut block = vec![0u8; WRITE_BUF];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let n = left.min(WRITE_BUF as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The corpus files of a run.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The mixed file.
    pub mixed: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The random file.
    pub random: PathBuf,
    /// The cache directory.
    pub dir: PathBuf,
}

/// Makes (when missing) and returns the corpus of `mixed_bytes` +
/// `random_bytes` in `dir`, scanning `roots` for real files.
pub fn ensure(
    dir: &Path,
    roots: &[PathBuf],
    mixed_bytes: u64,
    random_bytes: u64,
    seed: u64,
) -> anyhow::Result<Corpus> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mixed = dir.join(format!("mixed-{mixed_bytes}-{seed:x}.bin"));
    let manifest_path = dir.join(format!("mixed-{mixed_bytes}-{seed:x}.manifest.json"));
    let manifest = match (mixed.is_file(), std::fs::read(&manifest_path)) {
        (true, Ok(text)) => serde_json::from_slice(&text)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
        _ => {
            eprintln!(
                "bench: making the mixed corpus {} ({} MiB; once, then cached) ...",
                mixed.display(),
                mixed_bytes >> 20
            );
            let files = scan(roots);
            let manifest = write_mixed(&plan(&files, mixed_bytes, seed), seed, &mixed)?;
            std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
            manifest
        }
    };
    let random = dir.join(format!("random-{random_bytes}-{seed:x}.bin"));
    if !random.is_file() {
        eprintln!(
            "bench: making the random file {} ({} MiB) ...",
            random.display(),
            random_bytes >> 20
        );
        write_random(random_bytes, seed, &random)?;
    }
    Ok(Corpus {
        mixed,
        manifest,
        random,
        dir: dir.to_path_buf(),
    })
}

/// A ZFS send stream (one dataset, one file) of the first `bytes` of the
/// mixed file, cached as `stream-<bytes>.zfs`; returns its path, its
/// snapshot name and toguid.
pub fn ensure_stream(corpus: &Corpus, bytes: u64) -> anyhow::Result<(PathBuf, String, u64)> {
    const SNAPSHOT: &str = "bench/data@s1";
    let toguid = 0x2b1e_0000_0000_0000 | (bytes & 0xffff_ffff_ffff);
    let path = corpus.dir.join(format!("stream-{bytes}.zfs"));
    if path.is_file() {
        return Ok((path, SNAPSHOT.into(), toguid));
    }
    eprintln!("bench: making the ZFS stream {} ...", path.display());
    let tmp = path.with_extension("tmp");
    let out = BufWriter::with_capacity(WRITE_BUF, File::create(&tmp)?);
    let mut input = File::open(&corpus.mixed)?.take(bytes);
    let mut w = zpipe_tests::stream::one_file_stream(out, SNAPSHOT, toguid, |rec| {
        let mut got = 0;
        while got < rec.len() {
            match input.read(&mut rec[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    })?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok((path, SNAPSHOT.into(), toguid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("share/doc")).unwrap();
        std::fs::create_dir_all(d.join("lib/x")).unwrap();
        let mut rng = Rng::new(7);
        let mut text = Vec::new();
        generated_text(1, 20_000, &mut text);
        std::fs::write(d.join("share/doc/README"), &text).unwrap();
        std::fs::write(d.join("share/doc/notes.txt"), &text[..9000]).unwrap();
        std::fs::write(d.join("share/doc/small"), b"too small").unwrap();
        let noise: Vec<u8> = (0..30_000).map(|_| rng.next_u64() as u8).collect();
        std::fs::write(d.join("share/doc/changelog.gz"), &noise).unwrap();
        std::fs::write(d.join("lib/x/libfoo.so.1"), &noise[..12_000]).unwrap();
        std::fs::write(d.join("lib/x/tool"), &noise[..6000]).unwrap();
        std::fs::set_permissions(d.join("lib/x/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink(d.join("lib/x/tool"), d.join("lib/link")).unwrap();
        dir
    }

    #[test]
    fn scan_is_sorted_skips_small_files_and_symlinks_and_classifies() {
        let dir = fixture();
        let roots = vec![dir.path().join("share"), dir.path().join("lib")];
        let files = scan(&roots);
        let names: Vec<(String, Kind)> = files
            .iter()
            .map(|f| {
                (
                    f.0.strip_prefix(dir.path()).unwrap().display().to_string(),
                    f.2,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("share/doc/README".to_string(), Kind::Text),
                ("share/doc/changelog.gz".to_string(), Kind::Compressed),
                ("share/doc/notes.txt".to_string(), Kind::Text),
                ("lib/x/libfoo.so.1".to_string(), Kind::Binary),
                ("lib/x/tool".to_string(), Kind::Binary),
            ]
        );
    }

    #[test]
    fn the_mixed_corpus_is_deterministic_and_exactly_sized() {
        let dir = fixture();
        let roots = vec![dir.path().join("share"), dir.path().join("lib")];
        let bytes = 300_000;
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        let files = scan(&roots);
        let ma = write_mixed(&plan(&files, bytes, SEED), SEED, &a).unwrap();
        let mb = write_mixed(&plan(&scan(&roots), bytes, SEED), SEED, &b).unwrap();
        assert_eq!(ma, mb);
        let (da, db) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(da.len() as u64, bytes);
        assert_eq!(da, db);
        assert_eq!(ma.pieces.iter().map(|p| p.len).sum::<u64>(), bytes);
        // Every kind is in the mix, and pieces tile the file.
        for kind in [Kind::Text, Kind::Binary, Kind::Compressed, Kind::Generated] {
            assert!(ma.pieces.iter().any(|p| p.kind == kind), "{kind:?}");
        }
        let mut end = 0;
        for p in &ma.pieces {
            assert_eq!(p.offset, end);
            end += p.len;
        }
        // Another seed chooses differently.
        let c = dir.path().join("c.bin");
        write_mixed(&plan(&files, bytes, SEED + 1), SEED + 1, &c).unwrap();
        assert_ne!(std::fs::read(&c).unwrap(), da);
    }

    #[test]
    fn a_missing_file_becomes_generated_text_of_the_same_length() {
        let dir = fixture();
        let plan = vec![(Some(dir.path().join("gone")), Kind::Text, 5000)];
        let out = dir.path().join("m.bin");
        let m = write_mixed(&plan, 1, &out).unwrap();
        assert_eq!(m.pieces[0].kind, Kind::Generated);
        assert_eq!(std::fs::read(&out).unwrap().len(), 5000);
    }

    #[test]
    fn the_random_file_is_deterministic_and_does_not_compress() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_random(100_000, SEED, &a).unwrap();
        write_random(100_000, SEED, &b).unwrap();
        let data = std::fs::read(&a).unwrap();
        assert_eq!(data.len(), 100_000);
        assert_eq!(data, std::fs::read(&b).unwrap());
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        assert!(packed.len() > 99_000, "{}", packed.len());
    }

    #[test]
    fn generated_text_is_exact_and_compressible() {
        let mut a = Vec::new();
        generated_text(5, 200_000, &mut a);
        let mut b = Vec::new();
        generated_text(5, 200_000, &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), 200_000);
        let packed = zstd::bulk::compress(&a, 3).unwrap();
        assert!(packed.len() < a.len() / 2, "{}", packed.len());
    }
}
