//! Tests of the `zpipe-verify` binary's framing: round trips, digest files,
//! every class of damage (exit 2, the error line naming frame and byte, and
//! not one damaged byte on stdout), ABORT, and ZFS-aware encoding.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_zpipe-verify");
const RECORD: usize = 64;

struct Run {
    code: i32,
    out: Vec<u8>,
    err: String,
}

fn run(args: &[&str], input: &[u8]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zpipe-verify");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        // The decoder may stop reading at the first error: ignore EPIPE.
        let _ = stdin.write_all(&data);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    feeder.join().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        out,
        err,
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 32) as u8
                ^ seed
        })
        .collect()
}

/// Frames `input` with the binary at frame size `fs`.
fn encode(input: &[u8], fs: usize) -> Vec<u8> {
    let r = run(&["--frame-size", &fs.to_string()], input);
    assert_eq!(r.code, 0, "{}", r.err);
    r.out
}

fn frame_at(k: usize, fs: usize) -> usize {
    RECORD + k * (RECORD + fs)
}

/// Asserts exit 2, the error words, and that stdout is exactly the payload
/// of the first `frames` frames.
fn assert_rejected(r: &Run, input: &[u8], fs: usize, frames: usize, words: &[&str]) {
    assert_eq!(r.code, 2, "stderr: {}", r.err);
    assert!(r.err.starts_with("zpipe-verify: "), "{}", r.err);
    assert_eq!(
        r.err.trim_end().lines().count(),
        1,
        "one error line: {}",
        r.err
    );
    for w in words {
        assert!(r.err.contains(w), "{:?} lacks {w:?}", r.err);
    }
    let want = &input[..(frames * fs).min(input.len())];
    assert!(
        r.out == want,
        "stdout has {} bytes, expected the {} bytes of {frames} verified frames",
        r.out.len(),
        want.len()
    );
}

/// Four full frames of 1000 bytes and a short fifth one.
fn sample() -> (Vec<u8>, Vec<u8>, usize) {
    let fs = 1000;
    let input = data(4 * fs + 321, 7);
    let stream = encode(&input, fs);
    (input, stream, fs)
}

#[test]
fn round_trip_and_digest_files_agree() {
    let dir = tempfile::tempdir().unwrap();
    for (len, fs) in [
        (0usize, 1usize << 20),
        (1, 1),
        (5000, 1000),
        (3 << 20, 1 << 20),
        (100_000, 4096),
    ] {
        let input = data(len, 3);
        let sent = dir.path().join("sent");
        let got = dir.path().join("got");
        let e = run(
            &[
                "-B",
                &fs.to_string(),
                "-T",
                "2",
                "--digest-file",
                sent.to_str().unwrap(),
            ],
            &input,
        );
        assert_eq!(e.code, 0, "{}", e.err);
        let d = run(&["-d", "--digest-file", got.to_str().unwrap()], &e.out);
        assert_eq!(d.code, 0, "{}", d.err);
        assert!(d.out == input, "len {len} fs {fs}");
        let a = std::fs::read_to_string(&sent).unwrap();
        let b = std::fs::read_to_string(&got).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("zpipe-verify v1 sha256-frames="), "{a}");
        assert!(a.contains(&format!("bytes={len}")), "{a}");
        let t = run(&["-t"], &e.out);
        assert_eq!((t.code, t.out.len()), (0, 0), "{}", t.err);
    }
}

#[test]
fn empty_stream_is_valid_and_empty_input_is_not() {
    let s = encode(&[], 1 << 20);
    assert_eq!(s.len(), 2 * RECORD);
    let r = run(&["-d"], &s);
    assert_eq!((r.code, r.out.len()), (0, 0), "{}", r.err);
    let r = run(&["-d"], &[]);
    assert_rejected(&r, &[], 1, 0, &["empty input", "no stream header"]);
}

#[test]
fn flipped_bit_in_stream_header_is_rejected() {
    let (input, stream, fs) = sample();
    for at in [0, 7, 8, 13, 17, 30, 60, 63] {
        let mut s = stream.clone();
        s[at] ^= 0x04;
        let r = run(&["-d"], &s);
        assert_rejected(&r, &input, fs, 0, &["stream header at byte 0"]);
    }
}

#[test]
fn flipped_bit_in_frame_header_is_rejected() {
    let (input, stream, fs) = sample();
    for k in 0..5 {
        // tag, length, sequence, offset, payload hash, check
        for field in [1, 5, 9, 17, 30, 60] {
            let mut s = stream.clone();
            s[frame_at(k, fs) + field] ^= 0x80;
            let r = run(&["-d", "-T", "2"], &s);
            let at = format!("frame {k} at byte {}", frame_at(k, fs));
            assert_rejected(&r, &input, fs, k, &[&at, "checksum mismatch"]);
        }
    }
}

#[test]
fn flipped_bit_in_payload_is_rejected() {
    let (input, stream, fs) = sample();
    for k in 0..5 {
        for off in [0, 1, 320] {
            let mut s = stream.clone();
            s[frame_at(k, fs) + RECORD + off] ^= 0x01;
            let r = run(&["-d", "-T", "3"], &s);
            let at = format!("frame {k} at byte {}", frame_at(k, fs));
            assert_rejected(&r, &input, fs, k, &[&at, "payload checksum mismatch"]);
        }
    }
}

#[test]
fn flipped_bit_in_trailer_is_rejected() {
    let (input, stream, fs) = sample();
    let t = stream.len() - RECORD;
    for off in [0, 4, 9, 17, 25, 56, 63] {
        let mut s = stream.clone();
        s[t + off] ^= 0x20;
        let r = run(&["-d"], &s);
        assert_rejected(&r, &input, fs, 5, &[&format!("at byte {t}")]);
    }
}

#[test]
fn truncation_at_and_between_frame_boundaries_is_rejected() {
    let (input, stream, fs) = sample();
    let mut cuts = vec![1, 63, 64];
    for k in 0..5 {
        let at = frame_at(k, fs);
        cuts.extend([at, at + 1, at + 63, at + 64, at + 65, at + 500]);
    }
    let t = stream.len() - RECORD;
    cuts.extend([t, t + 1, t + 63]);
    for cut in cuts.into_iter().filter(|&c| c < stream.len()) {
        let r = run(&["-d"], &stream[..cut]);
        let complete = (0..5)
            .take_while(|&k| frame_at(k, fs) + RECORD + fs.min(input.len() - k * fs) <= cut)
            .count();
        let word = if cut < RECORD {
            "stream header"
        } else {
            "truncated"
        };
        assert_rejected(&r, &input, fs, complete, &[word]);
        if cut >= RECORD {
            assert!(r.err.contains("missing END"), "{}", r.err);
        }
    }
}

fn split(stream: &[u8], fs: usize, frames: usize) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let mut v = Vec::new();
    for k in 0..frames {
        let end = (frame_at(k + 1, fs)).min(stream.len() - RECORD);
        v.push(stream[frame_at(k, fs)..end].to_vec());
    }
    (
        stream[..RECORD].to_vec(),
        v,
        stream[stream.len() - RECORD..].to_vec(),
    )
}

fn join(head: &[u8], frames: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
    let mut s = head.to_vec();
    frames.iter().for_each(|f| s.extend_from_slice(f));
    s.extend_from_slice(tail);
    s
}

#[test]
fn dropped_frame_is_rejected() {
    let (input, stream, fs) = sample();
    let (h, f, t) = split(&stream, fs, 5);
    let mut d = f.clone();
    d.remove(2);
    let r = run(&["-d"], &join(&h, &d, &t));
    assert_rejected(
        &r,
        &input,
        fs,
        2,
        &["frame 2 at byte", "out of sequence", "found frame 3"],
    );
    let mut d = f.clone();
    d.pop();
    let r = run(&["-d"], &join(&h, &d, &t));
    assert_rejected(
        &r,
        &input,
        fs,
        4,
        &["END trailer", "5 frames", "frames dropped"],
    );
}

#[test]
fn duplicated_frame_is_rejected() {
    let (input, stream, fs) = sample();
    let (h, f, t) = split(&stream, fs, 5);
    let mut d = f.clone();
    d.insert(3, f[3].clone());
    let r = run(&["-d"], &join(&h, &d, &t));
    assert_rejected(
        &r,
        &input,
        fs,
        4,
        &["frame 4", "out of sequence", "found frame 3", "repeated"],
    );
}

#[test]
fn swapped_frames_are_rejected() {
    let (input, stream, fs) = sample();
    let (h, f, t) = split(&stream, fs, 5);
    let mut d = f.clone();
    d.swap(1, 2);
    let r = run(&["-d"], &join(&h, &d, &t));
    assert_rejected(
        &r,
        &input,
        fs,
        1,
        &["frame 1 at byte", "out of sequence", "found frame 2"],
    );
}

#[test]
fn two_concatenated_streams_are_rejected() {
    let (input, stream, fs) = sample();
    let mut s = stream.clone();
    s.extend_from_slice(&stream);
    let r = run(&["-d"], &s);
    assert_rejected(&r, &input, fs, 5, &["two streams concatenated"]);
}

#[test]
fn trailing_garbage_is_rejected() {
    let (input, stream, fs) = sample();
    let mut s = stream.clone();
    s.extend_from_slice(b"garbage");
    let r = run(&["-d"], &s);
    assert_rejected(
        &r,
        &input,
        fs,
        5,
        &[
            "trailing data after the END trailer",
            &format!("byte {}", stream.len()),
        ],
    );
}

#[test]
fn unframed_input_is_named() {
    let mut drr = vec![0u8; 312];
    drr[8..16].copy_from_slice(&0x2_F5BA_CBACu64.to_le_bytes());
    let r = run(&["-d"], &drr);
    assert_rejected(
        &r,
        &[],
        1,
        0,
        &["not a zpipe-verify stream", "raw ZFS send stream"],
    );
    let r = run(&["-d"], &0xFD2F_B528u32.to_le_bytes().repeat(20));
    assert_rejected(&r, &[], 1, 0, &["zstd"]);
}

#[test]
fn abort_trailer_fails_with_the_senders_message() {
    let input = data(2500, 1);
    let mut stream = Vec::new();
    let mut e = zpipe_verify::Encoder::new(
        &mut stream,
        &zpipe_verify::VerifyConfig {
            frame_size: 1000,
            ..Default::default()
        },
    )
    .unwrap();
    e.write_all(&input).unwrap();
    e.abort("cannot send 'tank/fs@x': I/O error").unwrap();
    let r = run(&["-d"], &stream);
    // The last frame before an ABORT is held back: 2 of 3 frames.
    assert_rejected(
        &r,
        &input,
        1000,
        2,
        &[
            "sender aborted",
            "after 3 frames",
            "cannot send 'tank/fs@x': I/O error",
        ],
    );
}

/// A minimal DRR_BEGIN record built by hand: a `zfs send` that died after
/// its first record.
fn lone_drr_begin() -> Vec<u8> {
    let mut r = vec![0u8; 312];
    r[8..16].copy_from_slice(&0x2_F5BA_CBACu64.to_le_bytes()); // drr_magic
    r[16..24].copy_from_slice(&1u64.to_le_bytes()); // versioninfo: DMU_SUBSTREAM
    r
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/zfs")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn incomplete_zfs_stream_is_sent_with_abort() {
    let begin = lone_drr_begin();
    let e = run(&["-B", "100"], &begin);
    assert_eq!(e.code, 2, "{}", e.err);
    assert!(
        e.err.contains("incomplete") && e.err.contains("ABORT"),
        "{}",
        e.err
    );
    let r = run(&["-d"], &e.out);
    assert_rejected(&r, &begin, 100, 3, &["sender aborted", "incomplete"]);

    // A real zfs-fuse stream cut short, too.
    let full = fixture("fuse_full.zfs");
    let cut = &full[..full.len() / 2];
    let e = run(&[], cut);
    assert_eq!(e.code, 2, "{}", e.err);
    let r = run(&["-d"], &e.out);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("sender aborted"), "{}", r.err);
    assert!(cut.starts_with(&r.out) && r.out.len() < cut.len());

    // The whole stream ends with END; plain data is framed as is.
    let e = run(&[], &full);
    assert_eq!(e.code, 0, "{}", e.err);
    let r = run(&["-d"], &e.out);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out == full);
    let e = run(&["--no-follow-zfs"], &begin);
    assert_eq!(e.code, 0, "{}", e.err);
}

#[test]
fn bad_frame_size_is_a_usage_error() {
    for v in ["17M", "0", "abc"] {
        let r = run(&["--frame-size", v], b"x");
        assert_eq!(r.code, 1, "{v}: {}", r.err);
        assert!(r.err.contains("--frame-size"), "{}", r.err);
    }
}

#[test]
fn closed_stdout_is_an_io_error() {
    let input = data(8 << 20, 2);
    let mut child = Command::new(BIN)
        .args(["-B", "64K"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let status = child.wait().unwrap();
    feeder.join().unwrap();
    assert_eq!(status.code(), Some(3));
}

#[test]
fn zfs_flag_checks_raw_and_carried_streams() {
    let full = fixture("fuse_repl_R.zfs");
    let r = run(&["--zfs"], &full);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(String::from_utf8_lossy(&r.out).contains("complete"));
    let r = run(&["--zfs"], &full[..full.len() - 1]);
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains("truncated"), "{}", r.err);

    // Framing intact, carried ZFS stream damaged inside a record header:
    // -d --zfs fails with exit 2 and writes nothing from that record on.
    let mut bad = full.clone();
    bad[312 * 3] ^= 0x40;
    let framed = run(&["--no-follow-zfs"], &bad);
    assert_eq!(framed.code, 0, "{}", framed.err);
    let r = run(&["-d", "--zfs"], &framed.out);
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains("carried ZFS stream"), "{}", r.err);
    assert!(
        full.starts_with(&r.out) && r.out.len() <= 312 * 3,
        "{} bytes out",
        r.out.len()
    );
    let r = run(&["-d"], &framed.out);
    assert_eq!(
        r.code, 0,
        "without --zfs only the framing is checked: {}",
        r.err
    );

    let ok = run(&[], &full);
    let r = run(&["-t", "--zfs"], &ok.out);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(String::from_utf8_lossy(&r.out).contains("complete"));
}
