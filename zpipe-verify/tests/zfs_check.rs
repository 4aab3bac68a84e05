//! Strict checker tests on real zfs-fuse streams: they pass in any pieces;
//! every cut and a sample of single-bit flips fail as integrity errors
//! (exit 2) with the byte offset and record index in the message.

use zpipe_core::exit::{classify, Exit};
use zpipe_verify::zfs::{
    check_stream, looks_like_zfs, CheckOptions, Checker, Follower, RecordType, Summary, ZfsError,
    ZfsErrorKind,
};

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

fn check(data: &[u8], piece: usize) -> Result<Summary, ZfsError> {
    let mut c = Checker::new(CheckOptions::default());
    for chunk in data.chunks(piece.max(1)) {
        c.feed(chunk)?;
    }
    c.finish()
}

/// Offsets of every record header, found with the cheap follower: its
/// record count goes up when a header is complete.
fn record_starts(data: &[u8]) -> Vec<usize> {
    let mut f = Follower::new();
    let mut starts = Vec::new();
    for (i, b) in data.iter().enumerate() {
        let before = f.records();
        f.feed(std::slice::from_ref(b));
        if f.records() > before {
            starts.push(i + 1 - RECORD);
        }
    }
    starts
}

/// A small deterministic generator for sampling positions.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % bound
    }
}

#[test]
fn real_zfs_fuse_streams_pass() {
    for name in FIXTURES {
        let data = fixture(name);
        for piece in [1, 5, 312, 4096, data.len()] {
            let s = check(&data, piece).unwrap_or_else(|e| panic!("{name} piece {piece}: {e}"));
            assert_eq!(s.bytes, data.len() as u64);
            assert!(s.end_checksums >= 1, "{name}");
            // zfs-fuse 0.7 writes no per-record checksums.
            assert_eq!(s.record_checksums, 0, "{name}");
        }
        let s = check_stream(&data[..]).unwrap();
        assert_eq!(s.record_count(), (s.records.iter().sum::<u64>()));
    }
}

#[test]
fn summary_of_a_full_stream_names_the_snapshot_and_guids() {
    let s = check(&fixture("fuse_full.zfs"), 4096).unwrap();
    assert_eq!(s.to_name(), "zchkA/fs@s1");
    assert!(s.compound.is_none());
    assert_eq!(s.substream_count, 1);
    let sub = &s.substreams[0];
    assert_eq!(sub.fromguid, 0);
    assert_ne!(sub.toguid, 0);
    assert_eq!(sub.records[RecordType::Begin as usize], 1);
    assert_eq!(sub.records[RecordType::End as usize], 1);
    assert!(sub.records[RecordType::Write as usize] >= 3);
    let text = s.to_string();
    for word in [
        "complete",
        "zchkA/fs@s1",
        "to-guid",
        "from-guid: 0",
        "WRITE",
        "END 1",
    ] {
        assert!(text.contains(word), "{word} missing in:\n{text}");
    }
}

#[test]
fn summary_of_a_compound_stream_lists_substreams() {
    let s = check(&fixture("fuse_repl_RI.zfs"), 4096).unwrap();
    let c = s.compound.as_ref().expect("compound");
    assert_eq!(c.toname, "zchkA/tree@t3");
    assert!(c.nvlist_bytes > 0);
    assert_eq!(s.substream_count, 6);
    // -I sends each intermediate snapshot, chained by guid per dataset.
    assert_eq!(s.substreams[1].fromguid, s.substreams[0].toguid);
    // 6 substream ENDs + the compound header's END are verified.
    assert_eq!(s.end_checksums, 7);
    assert!(s.to_string().contains("6 substreams"));
}

#[test]
fn dedup_stream_has_write_byref_records() {
    let s = check(&fixture("fuse_dedup_D.zfs"), 4096).unwrap();
    assert!(s.records[RecordType::WriteByref as usize] >= 2, "{s}");
}

#[test]
fn every_record_boundary_cut_is_truncation() {
    for name in FIXTURES {
        let data = fixture(name);
        let starts = record_starts(&data);
        assert!(starts.len() >= 5, "{name}: {starts:?}");
        assert_eq!(starts[0], 0);
        for &cut in &starts[1..] {
            let e = check(&data[..cut], 4096).unwrap_err();
            assert_eq!(e.kind, ZfsErrorKind::Truncated, "{name} cut {cut}: {e}");
            assert!(e.to_string().contains(&format!("after {cut} bytes")), "{e}");
        }
    }
}

#[test]
fn cuts_at_many_offsets_are_truncation() {
    for name in FIXTURES {
        let data = fixture(name);
        let mut rng = Lcg(data.len() as u64);
        let mut cuts: Vec<usize> = (0..200).map(|_| rng.next(data.len())).collect();
        cuts.extend([0, 1, 15, 16, 17, RECORD - 1, RECORD, RECORD + 1]);
        cuts.extend((1..=3).map(|k| data.len() - k));
        cuts.extend((1..=3).map(|k| data.len() - k * RECORD));
        for cut in cuts {
            let e = check(&data[..cut], 1000).unwrap_err();
            let expect = if cut == 0 {
                ZfsErrorKind::NotZfs
            } else {
                ZfsErrorKind::Truncated
            };
            assert_eq!(e.kind, expect, "{name} cut {cut}: {e}");
        }
    }
}

#[test]
fn truncation_maps_to_exit_2_with_offset_and_record() {
    let data = fixture("fuse_full.zfs");
    let err = check_stream(&data[..data.len() / 2]).unwrap_err();
    assert_eq!(classify(&err), Exit::Integrity);
    let text = format!("{err:#}");
    assert!(text.contains("truncated"), "{text}");
    assert!(text.contains("at byte"), "{text}");
    assert!(text.contains("record"), "{text}");
}

fn assert_flip_detected(name: &str, data: &[u8], bit: usize) {
    let mut bad = data.to_vec();
    bad[bit / 8] ^= 1 << (bit % 8);
    match check(&bad, 8192) {
        Ok(_) => panic!("{name}: flip of bit {bit} (byte {}) not detected", bit / 8),
        Err(e) => assert_ne!(e.kind, ZfsErrorKind::TrailingData, "{name} bit {bit}: {e}"),
    }
}

#[test]
fn every_bit_flip_in_a_small_stream_is_detected() {
    // The empty dataset's stream is small enough to flip every bit.
    let data = fixture("fuse_empty.zfs");
    for bit in 0..data.len() * 8 {
        assert_flip_detected("fuse_empty.zfs", &data, bit);
    }
}

#[test]
fn sampled_bit_flips_in_headers_and_payloads_are_detected() {
    for name in FIXTURES {
        let data = fixture(name);
        let mut rng = Lcg(7 + data.len() as u64);
        // Every bit of every record header, at a stride, plus random bits anywhere.
        let starts = record_starts(&data);
        let mut bits: Vec<usize> = Vec::new();
        for &s in &starts {
            bits.extend((s * 8..(s + RECORD) * 8).step_by(13));
        }
        bits.extend((0..400).map(|_| rng.next(data.len() * 8)));
        for bit in bits {
            assert_flip_detected(name, &data, bit);
        }
    }
}

#[test]
fn payload_flip_is_an_end_checksum_mismatch() {
    let data = fixture("fuse_full.zfs");
    let mut bad = data.clone();
    // Inside the first WRITE payload: well past the first few headers.
    let starts = record_starts(&data);
    let gap = starts
        .windows(2)
        .find(|w| w[1] - w[0] > 4 * RECORD)
        .expect("a record with a large payload");
    bad[gap[0] + RECORD + 100] ^= 0x10;
    let e = check(&bad, 4096).unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::Checksum, "{e}");
    assert!(e.message.contains("END checksum mismatch"), "{e}");
    let err = check_stream(&bad[..]).unwrap_err();
    assert_eq!(classify(&err), Exit::Integrity);
}

#[test]
fn trailing_bytes_after_the_final_end_fail() {
    for name in ["fuse_full.zfs", "fuse_repl_R.zfs"] {
        let mut data = fixture(name);
        data.extend_from_slice(&[0; 3]);
        let e = check(&data, 4096).unwrap_err();
        assert_eq!(e.kind, ZfsErrorKind::TrailingData, "{e}");
        assert_eq!(e.offset, data.len() as u64 - 3);
    }
}

#[test]
fn concatenated_streams_are_rejected() {
    let mut data = fixture("fuse_empty.zfs");
    data.extend(fixture("fuse_empty.zfs"));
    assert_eq!(
        check(&data, 4096).unwrap_err().kind,
        ZfsErrorKind::TrailingData
    );
}

#[test]
fn non_zfs_input_fails_with_exit_2() {
    let err = check_stream(&b"this is not a ZFS stream, just some text."[..]).unwrap_err();
    assert_eq!(classify(&err), Exit::Integrity);
    assert!(format!("{err:#}").contains("not a ZFS send stream"));
    let err = check_stream(&b""[..]).unwrap_err();
    assert_eq!(classify(&err), Exit::Integrity);
    assert!(looks_like_zfs(&fixture("fuse_full.zfs")));
    assert!(!looks_like_zfs(b"0123456789abcdefghij"));
}

#[test]
fn errors_are_sticky() {
    let data = fixture("fuse_full.zfs");
    let mut c = Checker::new(CheckOptions::default());
    let mut bad = data[..700].to_vec();
    bad[RECORD] = 0x77; // the second record's type
    let e = c.feed(&bad).unwrap_err();
    assert_eq!(e.record, 1);
    assert_eq!(e.offset, RECORD as u64);
    assert!(e.to_string().contains("unknown record type"), "{e}");
    assert_eq!(c.feed(&data[700..]).unwrap_err(), e);
    assert_eq!(c.finish().unwrap_err(), e);
}

#[test]
fn requiring_record_checksums_rejects_old_streams() {
    let data = fixture("fuse_full.zfs");
    let mut c = Checker::new(CheckOptions {
        require_record_checksums: true,
        ..CheckOptions::default()
    });
    let e = c.feed(&data).unwrap_err();
    assert!(e.message.contains("no per-record checksum"), "{e}");
}
