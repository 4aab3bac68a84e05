//! A corpus of hand-made odd inputs for the decoder: skippable frames
//! anywhere, concatenations of frames from different producers, truncation
//! at every frame boundary and inside frames, and flipped bytes in headers
//! and payloads. Corruption must end in exit 2 with the bad frame's byte
//! offset, input that is not zstd in exit 1, and nothing may ever decode
//! "successfully" to the wrong bytes.

mod common;
use common::*;
use zpipe_compress::format::{self, SIZE_FRAME_LEN};
use zpipe_compress::mem::decompress_bytes;
use zpipe_compress::DecompressConfig;
use zpipe_core::exit::{classify, Exit};

fn skippable(magic_nibble: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (format::SKIPPABLE_MAGIC_MIN + magic_nibble)
        .to_le_bytes()
        .to_vec();
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Frames of a stream as (start, len, is_size_frame).
fn frames(z: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < z.len() {
        if format::read_size_frame(&z[at..]).is_some() {
            v.push((at, SIZE_FRAME_LEN, true));
            at += SIZE_FRAME_LEN;
        } else {
            let e = format::walk_frame(&z[at..]).unwrap();
            v.push((at, e.len, false));
            at += e.len;
        }
    }
    v
}

fn offset_in(msg: &str) -> u64 {
    let i = msg
        .find("byte offset ")
        .unwrap_or_else(|| panic!("no offset in: {msg}"))
        + 12;
    msg[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn offsets_in(msg: &str) -> Vec<u64> {
    msg.match_indices("byte offset ")
        .map(|(i, _)| {
            msg[i + 12..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn lib_decode(z: &[u8], cut: usize) -> anyhow::Result<Vec<u8>> {
    decompress_bytes(
        z,
        cut,
        DecompressConfig {
            workers: 2,
            ..DecompressConfig::default()
        },
    )
}

#[test]
fn skippable_frames_anywhere_are_skipped() {
    let data = text(20_000, 1);
    let z = zc_ok(&["--block-size", "4K"], &data);
    let f = frames(&z);
    let mid = f[4].0; // between two (size frame, frame) pairs
    let mut odd = skippable(14, b"hello");
    odd.extend_from_slice(&z[..mid]);
    odd.extend_from_slice(&skippable(0, b"six by")); // magic 0x184D2A50 but not a size frame
    odd.extend_from_slice(&skippable(3, b""));
    odd.extend_from_slice(&z[mid..]);
    odd.extend_from_slice(&skippable(15, &[7u8; 300]));
    assert_eq!(prog_ok("zstd", &["-d", "-q"], &odd), data);
    assert_eq!(zc_ok(&["-d"], &odd), data);
    for cut in [1, 5, 13, 4096] {
        assert_eq!(lib_decode(&odd, cut).unwrap(), data, "cut {cut}");
    }
}

#[test]
fn concatenations_of_producers_decode_as_zstd_does() {
    let parts = [
        text(9_000, 2),
        random(5_000, 3),
        text(30_000, 4),
        Vec::new(),
    ];
    let mut z = zc_ok(&["--block-size", "4K"], &parts[0]);
    z.extend(prog_ok("zstd", &["-q", "-c", "-5"], &parts[1]));
    z.extend(prog_ok("pzstd", &["-q", "-c", "-p2"], &parts[2]));
    z.extend(zc_ok(&[], &parts[3]));
    z.extend(zc_ok(&["--block-size", "4K"], &parts[0]));
    let want: Vec<u8> = [&parts[0][..], &parts[1], &parts[2], &parts[3], &parts[0]].concat();
    assert_eq!(prog_ok("zstd", &["-d", "-q"], &z), want);
    assert_eq!(zc_ok(&["-d"], &z), want);
    assert_eq!(lib_decode(&z, 777).unwrap(), want);
}

#[test]
fn truncation_at_every_frame_boundary_and_inside_frames() {
    let data = text(20_000, 5);
    let z = zc_ok(&["--block-size", "4K"], &data);
    let f = frames(&z);
    let mut cuts: Vec<usize> = Vec::new();
    for &(start, len, _) in &f {
        cuts.extend([
            start,
            start + 1,
            start + 4,
            start + len / 2,
            start + len - 1,
        ]);
    }
    cuts.retain(|&c| c > 0 && c < z.len());
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts {
        let t = &z[..c];
        // Which frame does the cut fall in?
        let pair_end = f.iter().any(|&(s, _, size)| size && s == c);
        let inside = f.iter().find(|&&(s, l, _)| s <= c && c < s + l).unwrap();
        let o = zc(&["-d"], t);
        if pair_end {
            assert_eq!(o.code, 0, "cut {c}: {}", o.stderr);
            assert!(data.starts_with(&o.stdout));
            continue;
        }
        assert_eq!(o.code, 2, "cut {c}: {}", o.stderr);
        assert!(o.stderr.contains("truncated"), "cut {c}: {}", o.stderr);
        assert_eq!(
            offset_in(&o.stderr),
            inside.0 as u64,
            "cut {c}: {}",
            o.stderr
        );
        assert!(data.starts_with(&o.stdout), "cut {c}: wrong bytes written");
    }
}

#[test]
fn truncated_single_frame_streams_exit_2_with_offset() {
    let data = text(400_000, 6);
    let mut z = prog_ok("zstd", &["-q", "-c", "-3"], &data);
    let first = z.len();
    z.extend(prog_ok("zstd", &["-q", "-c", "-3"], &data));
    for c in [
        5,
        100,
        first / 2,
        first - 1,
        first + 3,
        first + 1000,
        z.len() - 1,
    ] {
        let o = zc(&["-d"], &z[..c]);
        assert_eq!(o.code, 2, "cut {c}: {}", o.stderr);
        let want = if c < first { 0 } else { first as u64 };
        assert_eq!(offset_in(&o.stderr), want, "cut {c}: {}", o.stderr);
    }
}

fn check_flip(z: &[u8], data: &[u8], pos: usize, bit: u8, starts: &[usize]) {
    let mut bad = z.to_vec();
    bad[pos] ^= bit;
    match lib_decode(&bad, 1000) {
        // A benign flip (e.g. another skippable magic) must still give the data.
        Ok(out) => assert_eq!(out, data, "flip at {pos} decoded to wrong bytes"),
        Err(e) => {
            let msg = format!("{e:#}");
            let code = classify(&e);
            if pos < 4 && !format::looks_like_zstd(&bad) {
                assert_eq!(code, Exit::Usage, "flip at {pos}: {msg}");
                assert!(msg.contains("not zstd"), "{msg}");
                return;
            }
            assert_eq!(code, Exit::Integrity, "flip at {pos}: {msg}");
            // An offset in the message names the frame holding the flip
            // (or, for a size frame, the frame it announces; or, when the
            // flip changed a frame's length, the frame before the garbage).
            let holder = *starts.iter().filter(|&&s| s <= pos).max().unwrap();
            let ok = offsets_in(&msg).iter().any(|&off| {
                let off = off as usize;
                off >= holder.saturating_sub(SIZE_FRAME_LEN) && off <= holder + SIZE_FRAME_LEN
            });
            assert!(ok, "flip at {pos} (frame at {holder}): {msg}");
        }
    }
}

#[test]
fn every_flipped_byte_in_our_stream_is_caught() {
    let mut data = text(9_000, 7);
    data.extend(random(300_000, 8)); // raw frames too
    let z = zc_ok(&["--block-size", "128K", "--no-raw"], &data[..9_000]);
    let starts: Vec<usize> = frames(&z).iter().map(|f| f.0).collect();
    for pos in 0..z.len() {
        // Low and high bits alternately (each run spins up a pipeline).
        let bit = if pos % 2 == 0 { 0x01 } else { 0x80 };
        check_flip(&z, &data[..9_000], pos, bit, &starts);
    }
    // Raw frames: headers exhaustively, payload sampled.
    let z = zc_ok(&["--block-size", "128K"], &data[9_000..]);
    let starts: Vec<usize> = frames(&z).iter().map(|f| f.0).collect();
    let positions: Vec<usize> = (0..z.len())
        .filter(|p| p % 997 == 0 || starts.iter().any(|&s| *p >= s && *p < s + 24))
        .collect();
    for pos in positions {
        check_flip(&z, &data[9_000..], pos, 0x10, &starts);
    }
}

#[test]
fn every_flipped_byte_in_a_zstd_frame_is_caught() {
    let data = text(5_000, 9);
    let z = prog_ok("zstd", &["-q", "-c", "-3"], &data);
    for pos in 0..z.len() {
        check_flip(&z, &data, pos, 0x04, &[0]);
    }
}

#[test]
fn flipped_bytes_through_the_binary_exit_2_and_write_nothing_bad() {
    let data = text(20_000, 10);
    let z = zc_ok(&["--block-size", "4K"], &data);
    let f = frames(&z);
    let (start, len, _) = f[3]; // the second zstd frame
    for pos in [start + 4, start + len / 2, start + len - 2] {
        let mut bad = z.clone();
        bad[pos] ^= 0x20;
        let o = zc(&["-d"], &bad);
        assert_eq!(o.code, 2, "flip at {pos}: {}", o.stderr);
        assert_eq!(offset_in(&o.stderr), start as u64, "{}", o.stderr);
        // At most the frames before the bad one were written (the pipeline
        // may stop before its writer got to them), never a byte of the bad one.
        assert!(data[..4096].starts_with(&o.stdout), "flip at {pos}");
        let t = zc(&["-t"], &bad);
        assert_eq!(t.code, 2);
    }
    let mut garbage = z.clone();
    garbage.extend_from_slice(b"trailing garbage");
    let o = zc(&["-d"], &garbage);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert_eq!(offset_in(&o.stderr), z.len() as u64, "{}", o.stderr);
    assert!(data.starts_with(&o.stdout));
}
