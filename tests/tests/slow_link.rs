//! Slow links: `zsend-wrap --to` through a real sshd across a 100 Mbit veth
//! (two network namespaces, `tc … tbf`, from the kit's [`Netns`]).
//!
//! On such a link the wire is the bottleneck, so `--compress auto` must pay
//! off on compressible data (finish clearly faster than `--compress off`)
//! and cost next to nothing on incompressible data (its fast path stores
//! such blocks raw). `zfs` is a stand-in script: `send` cats a synthetic but
//! valid ZFS stream (built with zpipe-verify's `StreamBuilder`), `receive`
//! hashes what reaches it, so the test also proves the bytes arrived intact,
//! and the wire — not zfs-fuse's receive — is what gets timed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use zpipe_tests::{bin, require, shell_join, shell_quote, Netns, Sshd};
use zpipe_verify::zfs::builder::{BeginFields, ObjectFields, StreamBuilder, WriteFields};
use zpipe_verify::zfs::ByteOrder;

/// tc rate of the link.
const LINK_RATE: &str = "100mbit";
/// File data of the compressible stream: ~3.4 s on the wire uncompressed
/// (each test sends its stream four times).
const TEXT_BYTES: usize = 40 << 20;
/// File data of the incompressible stream: larger, so that the fixed costs
/// of a transfer (ssh start-up; with compression, the receiver verifying
/// each 4 MiB zstd frame whole before writing it, ~0.3 s at 100 Mbit) weigh
/// little against the allowed slowdown.
const RANDOM_BYTES: usize = 64 << 20;
/// The dataset's record size (one WRITE record each).
const RECORD: usize = 128 << 10;
/// The file's object number in the stream.
const FILE_OBJECT: u64 = 2;
/// `--compress auto` on compressible data must be at least this much faster.
const MIN_SPEEDUP: f64 = 1.3;
/// `--compress auto` on incompressible data may be at most this much slower.
const MAX_SLOWDOWN: f64 = 1.10;

/// A xorshift64* generator: deterministic test data without dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Text-like data: words from a small vocabulary, as logs and source trees
/// are (zstd -1 shrinks it about 3x).
fn text_record(rng: &mut Rng, out: &mut Vec<u8>) {
    const WORDS: [&str; 16] = [
        "zfs",
        "send",
        "receive",
        "snapshot",
        "pool",
        "dataset",
        "the",
        "of",
        "stream",
        "record",
        "checksum",
        "guid",
        "backup",
        "tank/home",
        "error",
        "2026-11-26",
    ];
    out.clear();
    while out.len() < RECORD {
        let r = rng.next();
        out.extend_from_slice(WORDS[(r & 15) as usize].as_bytes());
        out.push(if r >> 60 == 0 { b'\n' } else { b' ' });
        if r >> 56 & 7 == 0 {
            out.extend_from_slice(format!("{}", r >> 40 & 0xffff).as_bytes());
        }
    }
    out.truncate(RECORD);
}

/// Random bytes: an encrypted or already-compressed file.
fn random_record(rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    while out.len() < RECORD {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
}

/// Writes a full ZFS send stream of one file of `bytes` made by `fill` to
/// `path`; returns its toguid.
fn build_stream(path: &Path, seed: u64, bytes: usize, fill: fn(&mut Rng, &mut Vec<u8>)) -> u64 {
    let toguid = 0x5107_1111_0000_0000 | seed;
    let file = std::fs::File::create(path).unwrap();
    let mut b = StreamBuilder::to_writer(std::io::BufWriter::new(file), ByteOrder::Little, true);
    b.begin(
        &BeginFields {
            toname: "src/data@slow".into(),
            toguid,
            creation_time: 1_764_000_000,
            objset_type: 2,
            ..BeginFields::default()
        },
        &[],
    )
    .unwrap();
    b.object(
        &ObjectFields {
            object: FILE_OBJECT,
            blksz: RECORD as u32,
            ..ObjectFields::default()
        },
        &[],
    )
    .unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut rec = Vec::with_capacity(RECORD);
    for i in 0..bytes / RECORD {
        fill(&mut rng, &mut rec);
        let w = WriteFields {
            object: FILE_OBJECT,
            offset: (i * RECORD) as u64,
            logical_size: RECORD as u64,
            ..WriteFields::default()
        };
        b.write(&w, &rec).unwrap();
    }
    b.end().unwrap();
    b.into_inner().flush().unwrap();
    toguid
}

/// A stand-in `zfs` in `dir`: OpenZFS 2.x usage texts (the wrappers read
/// capabilities from them), `send -nvP` with the exact size, `send` cats
/// `stream`, `receive` writes the SHA-256 of its input to `received`, and
/// `get` answers the stream's toguid.
fn fake_zfs(dir: &Path, stream: &Path, toguid: u64, received: &Path) -> PathBuf {
    let bytes = std::fs::metadata(stream).unwrap().len();
    let script = format!(
        r#"#!/bin/sh
# stand-in zfs for tests/tests/slow_link.rs
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
    exec sha256sum >{received} ;;
get)
    echo {toguid} ;;
*)
    echo "stand-in zfs: unsupported: $*" >&2
    exit 1 ;;
esac
"#,
        stream = shell_quote(&stream.display().to_string()),
        received = shell_quote(&received.display().to_string()),
    );
    let path = dir.join("zfs");
    std::fs::write(&path, script).unwrap();
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).unwrap();
    path
}

/// One stream across the link, and the stand-in that sends and receives it.
struct Case {
    dir: tempfile::TempDir,
    stream: PathBuf,
    zfs: PathBuf,
    received: PathBuf,
}

impl Case {
    fn new(seed: u64, bytes: usize, fill: fn(&mut Rng, &mut Vec<u8>)) -> Case {
        let dir = tempfile::Builder::new()
            .prefix("zpipetest-slowlink-")
            .tempdir()
            .unwrap();
        let stream = dir.path().join("stream.zfs");
        let received = dir.path().join("received.sha256");
        let toguid = build_stream(&stream, seed, bytes, fill);
        let zfs = fake_zfs(dir.path(), &stream, toguid, &received);
        Case {
            dir,
            stream,
            zfs,
            received,
        }
    }

    /// `zsend-wrap --compress <compress> --to` through `sshd` with the ssh
    /// command `ssh_line`; returns the wall time after checking the run and
    /// the received bytes.
    fn send(&self, sshd: &Sshd, ssh_line: &str, compress: &str) -> Duration {
        let _ = std::fs::remove_file(&self.received);
        let zfs = self.zfs.display().to_string();
        // Before the clock starts: the first bin() call builds the binaries.
        let (zsend, zrecv) = (bin("zsend-wrap"), bin("zrecv-wrap"));
        let start = Instant::now();
        let out: Output = Command::new(zsend)
            .args(["--zfs", &zfs, "--compress", compress, "--quiet"])
            .arg("--to")
            .arg(format!("{}:pool/slow", sshd.destination()))
            .arg("--ssh")
            .arg(ssh_line)
            .arg("--remote-zrecv")
            .arg(zrecv)
            .arg(format!("--recv-arg=--zfs={zfs}"))
            .arg("--recv-arg=--quiet")
            .arg("src/data@slow")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "zsend-wrap --compress {compress} failed ({}): {}\nsshd log: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            sshd.log()
        );
        let got = std::fs::read_to_string(&self.received).unwrap_or_default();
        let want = zpipe_tests::run_ok({
            let mut c = Command::new("sha256sum");
            c.arg(&self.stream);
            c
        });
        assert_eq!(
            got.split_whitespace().next(),
            want.split_whitespace().next(),
            "zfs receive got other bytes than zfs send produced (--compress {compress})"
        );
        took
    }
}

/// Sends `case` with `--compress off` and `auto` over one shaped link, in
/// the order off, auto, auto, off (drift in the machine's load cancels);
/// returns the summed (off, auto) wall times.
fn off_and_auto(case: &Case) -> (Duration, Duration) {
    let netns = Netns::pair(LINK_RATE).unwrap();
    let sshd = Sshd::start_in(&netns).unwrap();
    // The client runs in namespace A, so the session crosses the shaped link.
    let mut ssh: Vec<String> = ["ip", "netns", "exec", netns.a(), "ssh"]
        .map(String::from)
        .to_vec();
    ssh.extend(sshd.ssh_options());
    let ssh_line = shell_join(&ssh);
    let mut off = case.send(&sshd, &ssh_line, "off");
    let mut auto = case.send(&sshd, &ssh_line, "auto");
    auto += case.send(&sshd, &ssh_line, "auto");
    off += case.send(&sshd, &ssh_line, "off");
    eprintln!(
        "{} over {LINK_RATE}: 2x off {off:.2?}, 2x auto {auto:.2?} (in {})",
        zpipe_tests::need::current_test(),
        case.dir.path().display()
    );
    (off, auto)
}

#[test]
fn compress_auto_beats_off_on_compressible_data_over_100mbit() {
    require!(netns, sshd);
    let case = Case::new(1, TEXT_BYTES, text_record);
    let (off, auto) = off_and_auto(&case);
    let speedup = off.as_secs_f64() / auto.as_secs_f64();
    assert!(
        speedup >= MIN_SPEEDUP,
        "--compress auto took {auto:.2?}, off {off:.2?}: speedup {speedup:.2} < {MIN_SPEEDUP}"
    );
}

#[test]
fn compress_auto_costs_little_on_incompressible_data_over_100mbit() {
    require!(netns, sshd);
    let case = Case::new(2, RANDOM_BYTES, random_record);
    let (off, auto) = off_and_auto(&case);
    let slowdown = auto.as_secs_f64() / off.as_secs_f64();
    assert!(
        slowdown <= MAX_SLOWDOWN,
        "--compress auto took {auto:.2?}, off {off:.2?}: {slowdown:.2}x > {MAX_SLOWDOWN}"
    );
}
