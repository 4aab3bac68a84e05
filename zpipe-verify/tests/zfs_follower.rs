//! Tests of the cheap ZFS record follower on real zfs-fuse streams: complete
//! streams are complete, every cut is not, and the cut is described.

use zpipe_verify::zfs::Follower;

const FIXTURES: &[&str] = &[
    "fuse_full.zfs",
    "fuse_incr_i.zfs",
    "fuse_incr_I.zfs",
    "fuse_empty.zfs",
    "fuse_dedup_D.zfs",
    "fuse_repl_R.zfs",
    "fuse_repl_Ri.zfs",
    "fuse_repl_RI.zfs",
];

/// Size of `dmu_replay_record_t`.
const RECORD: usize = 312;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/zfs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn follow(data: &[u8], piece: usize) -> Follower {
    let mut f = Follower::new();
    for chunk in data.chunks(piece.max(1)) {
        f.feed(chunk);
    }
    f
}

#[test]
fn real_streams_are_complete_in_any_pieces() {
    for name in FIXTURES {
        let data = fixture(name);
        for piece in [1, 7, 312, 4096, data.len()] {
            let f = follow(&data, piece);
            assert_eq!(f.is_zfs(), Some(true), "{name}");
            assert!(
                f.is_complete(),
                "{name} piece {piece}: {}",
                f.describe_incomplete()
            );
            assert_eq!(f.bytes(), data.len() as u64);
        }
    }
}

#[test]
fn every_cut_of_a_real_stream_is_incomplete() {
    for name in FIXTURES {
        let data = fixture(name);
        let step = (data.len() / 97).max(1);
        let mut cuts: Vec<usize> = (0..data.len()).step_by(step).collect();
        cuts.extend((0..data.len()).step_by(RECORD));
        cuts.extend([
            1,
            15,
            16,
            RECORD - 1,
            RECORD,
            data.len() - 1,
            data.len() - RECORD,
        ]);
        for cut in cuts {
            let f = follow(&data[..cut], 4096);
            assert!(!f.is_complete(), "{name} cut at {cut} seen as complete");
            let text = f.describe_incomplete();
            if cut >= 16 {
                assert_eq!(f.is_zfs(), Some(true), "{name} cut {cut}");
                assert!(text.contains(&format!("after {cut} bytes")), "{text}");
            } else {
                assert_eq!(f.is_zfs(), None, "{name} cut {cut}");
            }
        }
    }
}

#[test]
fn cut_inside_a_write_payload_names_the_record() {
    let data = fixture("fuse_full.zfs");
    let texts: Vec<String> = (RECORD..data.len())
        .step_by(1001)
        .map(|cut| follow(&data[..cut], 1000).describe_incomplete())
        .collect();
    let write = texts
        .iter()
        .find(|t| t.contains("inside a WRITE record payload (object "))
        .expect("some cut falls inside a WRITE payload");
    assert!(write.starts_with("ZFS stream ends after "), "{write}");
    assert!(write.contains(" offset "), "{write}");
    assert!(write.contains("payload bytes present"), "{write}");
    assert!(write.ends_with("; no final END record"), "{write}");
    assert!(texts
        .iter()
        .any(|t| t.contains("inside the header of record")));
}

#[test]
fn trailing_bytes_after_the_final_end_are_not_complete() {
    let mut data = fixture("fuse_repl_R.zfs");
    data.push(0);
    let f = follow(&data, 4096);
    assert!(!f.is_complete());
    assert!(f
        .describe_incomplete()
        .contains("1 bytes after its final END"));
}

#[test]
fn compound_stream_cut_after_a_substream_end_is_incomplete() {
    // Drop the last (final, all-zero) END record of a -R stream: every
    // substream is whole, but the package is not.
    let data = fixture("fuse_repl_R.zfs");
    let f = follow(&data[..data.len() - RECORD], 4096);
    assert!(!f.is_complete());
    let text = f.describe_incomplete();
    assert!(text.contains("compound"), "{text}");
}

#[test]
fn non_zfs_input_is_recognized_early() {
    let mut f = Follower::new();
    f.feed(b"hello, this is not a zfs stream at all");
    assert_eq!(f.is_zfs(), Some(false));
    assert!(!f.is_complete());
    let mut f = Follower::new();
    f.feed(&[0; 15]);
    assert_eq!(f.is_zfs(), None);
    assert!(Follower::new().describe_incomplete().contains("empty"));
}

#[test]
fn byte_swapped_magic_is_zfs() {
    let mut rec = [0u8; 16];
    rec[8..].copy_from_slice(&0x2_F5BA_CBACu64.to_be_bytes());
    let mut f = Follower::new();
    f.feed(&rec);
    assert_eq!(f.is_zfs(), Some(true));
}
