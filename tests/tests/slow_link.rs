//! Slow links: `zsend-wrap --to` through a real sshd across a 100 Mbit veth
//! (two network namespaces, `tc … tbf`, from the kit's [`Netns`]).
//!
//! On such a link the wire is the bottleneck, so `--compress auto` must pay
//! off on compressible data (finish clearly faster than `--compress off`)
//! and cost next to nothing on incompressible data (its fast path stores
//! such blocks raw). `zfs` is a stand-in script: `send` cats a synthetic but
//! valid ZFS stream (from the kit's `stream` module), `receive`
//! hashes what reaches it, so the test also proves the bytes arrived intact,
//! and the wire — not zfs-fuse's receive — is what gets timed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use zpipe_tests::data::Rng;
use zpipe_tests::stream::{one_file_stream, transport_zfs};
use zpipe_tests::{bin, require, shell_join, Netns, Sshd};

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
/// `--compress auto` on compressible data must be at least this much faster.
const MIN_SPEEDUP: f64 = 1.3;
/// `--compress auto` on incompressible data may be at most this much slower.
const MAX_SLOWDOWN: f64 = 1.10;

/// Text-like data: log lines (zstd -1 shrinks them about 3x).
fn text_record(rng: &mut Rng, out: &mut [u8]) {
    let mut text = Vec::with_capacity(out.len());
    zpipe_tests::data::text(rng.next_u64(), out.len(), &mut text);
    out.copy_from_slice(&text);
}

/// Random bytes: an encrypted or already-compressed file.
fn random_record(rng: &mut Rng, out: &mut [u8]) {
    rng.fill(out);
}

/// Writes a full ZFS send stream of one file of `bytes` made by `fill` to
/// `path`; returns its toguid.
fn build_stream(path: &Path, seed: u64, bytes: usize, fill: fn(&mut Rng, &mut [u8])) -> u64 {
    let toguid = 0x5107_1111_0000_0000 | seed;
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng::new(seed);
    let mut left = bytes;
    let out = one_file_stream(file, "src/data@slow", toguid, |rec| {
        let n = left.min(rec.len());
        fill(&mut rng, &mut rec[..n]);
        left -= n;
        Ok(n)
    })
    .unwrap();
    out.into_inner().unwrap().sync_all().unwrap();
    toguid
}

/// One stream across the link, and the stand-in that sends and receives it.
struct Case {
    dir: tempfile::TempDir,
    stream: PathBuf,
    zfs: PathBuf,
    received: PathBuf,
}

impl Case {
    fn new(seed: u64, bytes: usize, fill: fn(&mut Rng, &mut [u8])) -> Case {
        let dir = tempfile::Builder::new()
            .prefix("zpipetest-slowlink-")
            .tempdir()
            .unwrap();
        let stream = dir.path().join("stream.zfs");
        let received = dir.path().join("received.sha256");
        let toguid = build_stream(&stream, seed, bytes, fill);
        let zfs = transport_zfs(dir.path(), &stream, toguid, Some(&received)).unwrap();
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
