//! `zpipe-verify --zfs` end to end through the real binary: complete
//! streams exit 0 and print the summary on stdout; cut, flipped, padded or
//! foreign input exits 2 with one `zpipe-verify:` error line.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_zpipe-verify");
/// Size of `dmu_replay_record_t`.
const RECORD: usize = 312;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/zfs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `zpipe-verify --zfs` with `input` on stdin, fed from a thread.
fn run_zfs(input: Vec<u8>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--zfs")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zpipe-verify");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // The checker may stop reading early on a failure: EPIPE is fine here.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    feeder.join().unwrap();
    out
}

fn assert_integrity_failure(out: &Output, words: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(out.stdout.is_empty(), "no summary on failure");
    assert!(err.starts_with("zpipe-verify: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for w in words {
        assert!(err.contains(w), "{w:?} missing in {err}");
    }
}

#[test]
fn complete_streams_exit_0_with_a_summary() {
    for name in [
        "fuse_full.zfs",
        "fuse_incr_i.zfs",
        "fuse_incr_I.zfs",
        "fuse_repl_R.zfs",
        "fuse_dedup_D.zfs",
    ] {
        let out = run_zfs(fixture(name));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("complete and consistent"), "{text}");
        assert!(text.contains("to-guid"), "{text}");
    }
}

#[test]
fn truncated_stream_exits_2() {
    let data = fixture("fuse_full.zfs");
    for cut in [
        1,
        RECORD,
        RECORD * 3 + 7,
        data.len() / 2,
        data.len() - RECORD,
        data.len() - 1,
    ] {
        let out = run_zfs(data[..cut].to_vec());
        if cut < 16 {
            assert_integrity_failure(&out, &["stream ends after"]);
        } else {
            assert_integrity_failure(&out, &["truncated", "at byte", "record"]);
        }
    }
}

#[test]
fn flipped_bits_exit_2() {
    let data = fixture("fuse_repl_R.zfs");
    for at in [
        9,
        RECORD + 1,
        2000,
        data.len() / 3,
        data.len() - 2 * RECORD + 12,
        data.len() - 1,
    ] {
        let mut bad = data.clone();
        bad[at] ^= 0x20;
        let out = run_zfs(bad);
        assert_integrity_failure(&out, &["at byte", "record"]);
    }
}

#[test]
fn trailing_garbage_exits_2() {
    let mut data = fixture("fuse_empty.zfs");
    data.extend_from_slice(b"junk");
    assert_integrity_failure(&run_zfs(data), &["trailing data", "final END"]);
}

#[test]
fn non_zfs_input_exits_2() {
    assert_integrity_failure(
        &run_zfs(b"plain text that is certainly not a ZFS send stream".to_vec()),
        &["not a ZFS send stream"],
    );
    assert_integrity_failure(&run_zfs(Vec::new()), &["empty input"]);
}
