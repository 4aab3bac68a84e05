//! The real binary: round trips, compatibility with the real zstd and pzstd
//! binaries both ways, exit codes and messages, --adapt, odd inputs.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BS: usize = 4096;

#[test]
fn round_trips_at_block_boundaries() {
    for n in [0, 1, BS - 1, BS, BS + 1, 2 * BS, 3 * BS + 7, 10 * BS - 1] {
        let data = text(n, n as u64);
        let z = zc_ok(&["--block-size", "4K", "-T3"], &data);
        assert_eq!(zc_ok(&["-d"], &z), data, "n={n}");
        assert_eq!(prog_ok("zstd", &["-d", "-q"], &z), data, "zstd -d, n={n}");
        assert_eq!(
            prog_ok("pzstd", &["-d", "-q", "-c"], &z),
            data,
            "pzstd -d, n={n}"
        );
    }
}

#[test]
fn empty_input_makes_valid_zstd_that_decodes_to_empty() {
    let z = zc_ok(&[], b"");
    assert!(!z.is_empty());
    assert!(prog_ok("zstd", &["-d", "-q"], &z).is_empty());
    assert!(prog_ok("pzstd", &["-d", "-q", "-c"], &z).is_empty());
    assert!(zc_ok(&["-d"], &z).is_empty());
}

#[test]
fn incompressible_blocks_are_stored_raw_and_still_decode() {
    // Blocks of 256 KiB: random ones are stored raw, text ones compressed.
    let mut data = random(3 * 256 * 1024 + 5, 1);
    data.extend_from_slice(&text(256 * 1024, 2));
    data.extend_from_slice(&random(100_000, 3));
    let o = zc(&["--block-size", "256K", "-v"], &data);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("(3 stored raw)"), "{}", o.stderr);
    let raw_part = 3 * 256 * 1024;
    assert!(o.stdout.len() < data.len(), "{}", o.stdout.len());
    assert!(o.stdout.len() > raw_part);
    assert_eq!(prog_ok("zstd", &["-d", "-q"], &o.stdout), data);
    assert_eq!(prog_ok("pzstd", &["-d", "-q", "-c"], &o.stdout), data);
    assert_eq!(zc_ok(&["-d"], &o.stdout), data);
    let r = random(1 << 20, 9);
    let z = zc_ok(&[], &r);
    assert!(z.len() as f64 <= r.len() as f64 * 1.001, "{}", z.len());
}

#[test]
fn decodes_what_zstd_and_pzstd_make() {
    let data = text(700_000, 5);
    let cases: &[(&str, &[&str])] = &[
        ("zstd", &["-3", "-q", "-c"]),
        ("zstd", &["-19", "-q", "-c"]),
        ("zstd", &["-T2", "-q", "-c", "-B300000"]),
        ("zstd", &["--no-check", "-q", "-c"]),
        ("pzstd", &["-p2", "-q", "-c"]),
        ("pzstd", &["-19", "-p2", "-q", "-c"]),
    ];
    for (prog, args) in cases {
        let z = prog_ok(prog, args, &data);
        assert_eq!(zc_ok(&["-d"], &z), data, "{prog} {args:?}");
        assert_eq!(zc_ok(&["-t"], &z), b"", "{prog} {args:?} -t");
    }
}

#[test]
fn levels_from_1_to_19_work_and_others_are_refused() {
    let data = text(50_000, 6);
    for l in ["-1", "-9", "-19", "--level=5"] {
        let z = zc_ok(&[l], &data);
        assert_eq!(prog_ok("zstd", &["-d", "-q"], &z), data, "{l}");
    }
    for bad in ["-20", "-0", "--level=22"] {
        let o = zc(&[bad], &data);
        assert_eq!(o.code, 1, "{bad}: {}", o.stderr);
        assert!(o.stderr.contains("--level"), "{bad}: {}", o.stderr);
        assert!(o.stderr.starts_with("zpipe-compress: "), "{}", o.stderr);
    }
}

#[test]
fn long_windows_need_enough_memory() {
    // From stdin zstd keeps the declared 256 MiB window in the header.
    let data = text(300_000, 7);
    let z = prog_ok("zstd", &["--long=28", "-q", "-c"], &data);
    let o = zc(&["-d"], &z);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("byte offset 0"), "{}", o.stderr);
    assert!(o.stderr.contains("--memory"), "{}", o.stderr);
    assert_eq!(zc_ok(&["-d", "--long=28"], &z), data);
    assert_eq!(zc_ok(&["-d", "--memory=256M"], &z), data);
}

#[test]
fn file_argument_and_test_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data = text(100_000, 8);
    let p = dir.path().join("in.bin");
    std::fs::write(&p, &data).unwrap();
    let z = zc_ok(&["-c", p.to_str().unwrap()], b"");
    let pz = dir.path().join("in.zst");
    std::fs::write(&pz, &z).unwrap();
    assert_eq!(zc_ok(&["-d", pz.to_str().unwrap()], b""), data);
    assert_eq!(zc_ok(&["-t", pz.to_str().unwrap()], b""), b"");
    let o = zc(&["-d", dir.path().join("missing").to_str().unwrap()], b"");
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("cannot open"), "{}", o.stderr);
}

#[test]
fn not_zstd_input_is_exit_1() {
    for input in [
        &b"hello world, not zstd at all"[..],
        b"\x1f\x8b\x08\x00gzip",
        b"ab",
        b"",
    ] {
        let o = zc(&["-d"], input);
        assert_eq!(o.code, 1, "{input:?}: {}", o.stderr);
        assert!(o.stderr.contains("not zstd"), "{}", o.stderr);
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn closed_output_is_an_io_error() {
    let data = text(8 << 20, 9);
    let mut child = Command::new(BIN)
        .args(["--block-size", "64K"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    feeder.join().unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
}

/// Reads `child`'s stdout at about `rate` bytes per second.
fn slow_drain(mut out: impl Read, rate: usize) -> usize {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    let start = Instant::now();
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
        let due = Duration::from_secs_f64(total as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Runs --adapt with stdout read at `rate` bytes/s, or (None) sent to
/// /dev/null, the fastest consumer there is.
fn adapt_run(input: Vec<u8>, rate: Option<usize>) -> String {
    adapt_run_at(input, rate, "3", "12")
}

fn adapt_run_at(input: Vec<u8>, rate: Option<usize>, level: &str, max: &str) -> String {
    let stdout = match rate {
        Some(_) => Stdio::piped(),
        None => Stdio::from(std::fs::File::create("/dev/null").unwrap()),
    };
    let mut child = Command::new(BIN)
        .args([
            "--adapt",
            "--level",
            level,
            "-v",
            "-T2",
            "--block-size",
            "64K",
            "--adapt-max",
            max,
        ])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || match (out, rate) {
        (Some(o), Some(r)) => slow_drain(o, r),
        _ => 0,
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    feeder.join().unwrap();
    reader.join().unwrap();
    err
}

fn level_after(summary: &str, key: &str) -> i32 {
    let i = summary.find(key).expect("summary has levels") + key.len();
    summary[i..]
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn max_level(summary: &str) -> i32 {
    level_after(summary, "max ")
}

#[test]
fn adapt_does_not_rise_when_the_cpu_is_the_bottleneck() {
    // Level 12 on two threads cannot keep up with a pipe from memory: the
    // output never waits, so the level must not rise. (How far it falls
    // depends on how the machine schedules the feeder against the workers;
    // the falling rule itself is unit-tested in adapt.rs,
    // busy_workers_lower_the_level_down_to_the_minimum.)
    let err = adapt_run_at(text(12 << 20, 12), None, "12", "19");
    assert!(max_level(&err) <= 12, "{err}");
}

#[test]
fn adapt_raises_the_level_behind_a_slow_reader() {
    // 4 MiB that compress to about 3 MiB at little CPU cost, read at 1 MiB/s
    // (beyond what the 1 MiB pipe absorbs): the output side is the
    // bottleneck and the level must rise above 3.
    let err = adapt_run(base64ish(4 << 20, 10), Some(1 << 20));
    assert!(max_level(&err) > 3, "{err}");
}

#[test]
fn adapt_never_rises_with_a_fast_reader() {
    let err = adapt_run(text(12 << 20, 11), None);
    assert!(max_level(&err) <= 3, "{err}");
}
