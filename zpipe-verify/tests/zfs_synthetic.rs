//! Checker tests on synthetic OpenZFS 2.x streams made with
//! `zfs::builder::StreamBuilder`: features zfs-fuse cannot produce
//! (compressed and raw WRITEs, SPILL, WRITE_EMBEDDED, OBJECT_RANGE, REDACT,
//! per-record checksums, big-endian senders, compound streams with
//! per-record checksums) pass, and their corruptions fail.

use std::io;

use zpipe_verify::zfs::builder::{
    BeginFields, EmbeddedFields, ObjectFields, SpillFields, StreamBuilder, WriteFields,
};
use zpipe_verify::zfs::format::feature;
use zpipe_verify::zfs::{
    ByteOrder, CheckOptions, Checker, Follower, RecordType, Summary, ZfsError, ZfsErrorKind,
};

/// Size of `dmu_replay_record_t`.
const RECORD: usize = 312;
/// `ZIO_COMPRESS_LZ4`.
const LZ4: u8 = 15;
/// `ZIO_COMPRESS_OFF`.
const COMPRESS_OFF: u8 = 2;
/// The features of a `zfs send -c -L -e` stream from OpenZFS 2.x.
const COMPRESSED_FEATURES: u64 = feature::COMPRESSED
    | feature::LZ4
    | feature::EMBED_DATA
    | feature::LARGE_BLOCKS
    | feature::SA_SPILL
    | feature::LARGE_DNODE
    | feature::DEDUP
    | feature::REDACTED;
/// The features of a `zfs send -w` (raw, encrypted) stream.
const RAW_FEATURES: u64 = feature::RAW
    | feature::COMPRESSED
    | feature::LZ4
    | feature::EMBED_DATA
    | feature::LARGE_BLOCKS
    | feature::SA_SPILL
    | feature::LARGE_DNODE;

/// A packed-nvlist stand-in: the 4-byte `nvs_header_t` (XDR, little) and zeros.
fn nvlist(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..4].copy_from_slice(&[1, 1, 0, 0]);
    v
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn begin(name: &str, toguid: u64, fromguid: u64, features: u64) -> BeginFields {
    BeginFields {
        toname: name.to_string(),
        toguid,
        fromguid,
        features,
        flags: 0,
        creation_time: 1_700_000_000,
        objset_type: 2,
    }
}

/// A compressed (-c -L -e) substream with one of every non-raw record type.
fn compressed_substream<W: io::Write>(b: &mut StreamBuilder<W>, toguid: u64) -> io::Result<()> {
    b.begin(
        &begin("tank/fs@snap2", toguid, 0x1111, COMPRESSED_FEATURES),
        &[],
    )?;
    b.object(
        &ObjectFields {
            object: 2,
            bonuslen: 168,
            ..ObjectFields::default()
        },
        &pattern(168, 1),
    )?;
    // bonuslen 13 → payload P2ROUNDUP(13, 8) = 16.
    b.object(
        &ObjectFields {
            object: 3,
            bonuslen: 13,
            blksz: 512,
            ..ObjectFields::default()
        },
        &pattern(16, 2),
    )?;
    b.free_objects(4, 28)?;
    b.write(
        &WriteFields {
            object: 2,
            offset: 0,
            logical_size: 4096,
            ..WriteFields::default()
        },
        &pattern(4096, 3),
    )?;
    // lz4-compressed 128 KiB block: payload is drr_compressed_size.
    b.write(
        &WriteFields {
            object: 2,
            offset: 131_072,
            logical_size: 131_072,
            compression: LZ4,
            compressed_size: 4608,
            ..WriteFields::default()
        },
        &pattern(4608, 4),
    )?;
    // A 1 MiB large block, compressed.
    b.write(
        &WriteFields {
            object: 2,
            offset: 1 << 20,
            logical_size: 1 << 20,
            compression: LZ4,
            compressed_size: 2048,
            ..WriteFields::default()
        },
        &pattern(2048, 5),
    )?;
    b.write_byref(2, 2 << 20, 131_072, 2, 131_072)?;
    b.spill(
        &SpillFields {
            object: 2,
            length: 512,
            object_type: 44,
            ..SpillFields::default()
        },
        &pattern(512, 6),
    )?;
    // psize 50 → payload 56.
    b.write_embedded(
        &EmbeddedFields {
            object: 3,
            offset: 0,
            length: 512,
            compression: LZ4,
            etype: 0,
            lsize: 512,
            psize: 50,
        },
        &pattern(56, 7),
    )?;
    b.free(2, 3 << 20, u64::MAX)?;
    b.redact(2, 4 << 20, 131_072)?;
    b.end()
}

/// A raw (-w) substream: raw bonus sizes, raw WRITE and SPILL sizes, OBJECT_RANGE.
fn raw_substream<W: io::Write>(b: &mut StreamBuilder<W>, toguid: u64) -> io::Result<()> {
    b.begin(
        &begin("tank/secret@raw", toguid, 0, RAW_FEATURES),
        &nvlist(96),
    )?;
    b.object_range(0, 32)?;
    // raw_bonuslen 320 is the payload, not P2ROUNDUP(bonuslen, 8).
    b.object(
        &ObjectFields {
            object: 2,
            bonuslen: 192,
            raw_bonuslen: 320,
            dn_slots: 2,
            ..ObjectFields::default()
        },
        &pattern(320, 8),
    )?;
    b.write(
        &WriteFields {
            object: 2,
            offset: 0,
            logical_size: 8192,
            compression: COMPRESS_OFF,
            compressed_size: 8192,
            crypt_params: true,
            ..WriteFields::default()
        },
        &pattern(8192, 9),
    )?;
    b.write(
        &WriteFields {
            object: 2,
            offset: 131_072,
            logical_size: 131_072,
            compression: LZ4,
            compressed_size: 1536,
            crypt_params: true,
            ..WriteFields::default()
        },
        &pattern(1536, 10),
    )?;
    b.spill(
        &SpillFields {
            object: 2,
            length: 1024,
            compression: LZ4,
            compressed_size: 512,
            object_type: 44,
        },
        &pattern(512, 11),
    )?;
    b.object_range(32, 32)?;
    b.end()
}

fn compressed_stream(order: ByteOrder, record_checksums: bool) -> Vec<u8> {
    let mut b = StreamBuilder::new(order, record_checksums);
    compressed_substream(&mut b, 0xC0FF_EE00_1234_5678).unwrap();
    b.into_inner()
}

fn raw_stream(order: ByteOrder, record_checksums: bool) -> Vec<u8> {
    let mut b = StreamBuilder::new(order, record_checksums);
    raw_substream(&mut b, 0x5EC2_E7AA_0000_0001).unwrap();
    b.into_inner()
}

/// An OpenZFS 2.x `zfs send -R` package: compound header, two substreams, final END.
fn compound_stream(order: ByteOrder) -> Vec<u8> {
    let mut b = StreamBuilder::new(order, true);
    b.compound_header(
        &BeginFields {
            objset_type: 0,
            ..begin("tank/fs@snap2", 0, 0, feature::SA_SPILL)
        },
        &nvlist(1620),
    )
    .unwrap();
    compressed_substream(&mut b, 0xAAAA).unwrap();
    raw_substream(&mut b, 0xBBBB).unwrap();
    b.final_end().unwrap();
    b.into_inner()
}

fn all_streams() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for order in [ByteOrder::Little, ByteOrder::Big] {
        for ck in [true, false] {
            v.push((
                format!("compressed {order:?} cksum={ck}"),
                compressed_stream(order, ck),
            ));
            v.push((format!("raw {order:?} cksum={ck}"), raw_stream(order, ck)));
        }
        v.push((format!("compound {order:?}"), compound_stream(order)));
    }
    v
}

fn check(data: &[u8], piece: usize) -> Result<Summary, ZfsError> {
    let mut c = Checker::new(CheckOptions::default());
    for chunk in data.chunks(piece.max(1)) {
        c.feed(chunk)?;
    }
    c.finish()
}

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

#[test]
fn synthetic_openzfs_streams_pass_in_both_byte_orders() {
    for (name, data) in all_streams() {
        for piece in [1, 313, 65536] {
            let s = check(&data, piece).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.bytes, data.len() as u64, "{name}");
        }
        let mut f = Follower::new();
        f.feed(&data);
        assert!(f.is_complete(), "{name}: {}", f.describe_incomplete());
    }
}

#[test]
fn byte_swapped_stream_is_reported_big_endian() {
    let data = compressed_stream(ByteOrder::Big, true);
    assert_eq!(&data[8..16], &0x2_F5BA_CBACu64.to_be_bytes());
    let s = check(&data, 4096).unwrap();
    assert_eq!(s.order, ByteOrder::Big);
    assert_eq!(s.substreams[0].toguid, 0xC0FF_EE00_1234_5678);
    assert!(s.to_string().contains("big-endian"));
}

#[test]
fn summary_counts_every_record_type_and_checksum() {
    let s = check(&compressed_stream(ByteOrder::Little, true), 4096).unwrap();
    let r = |t: RecordType| s.records[t as usize];
    assert_eq!(r(RecordType::Begin), 1);
    assert_eq!(r(RecordType::Object), 2);
    assert_eq!(r(RecordType::FreeObjects), 1);
    assert_eq!(r(RecordType::Write), 3);
    assert_eq!(r(RecordType::WriteByref), 1);
    assert_eq!(r(RecordType::Spill), 1);
    assert_eq!(r(RecordType::WriteEmbedded), 1);
    assert_eq!(r(RecordType::Free), 1);
    assert_eq!(r(RecordType::Redact), 1);
    assert_eq!(r(RecordType::End), 1);
    // Every record but BEGIN carries a verified per-record checksum.
    assert_eq!(s.record_checksums, s.record_count() - 1);
    assert_eq!(s.records_without_checksum, 0);
    assert_eq!(
        s.payload_bytes,
        168 + 16 + 4096 + 4608 + 2048 + 512 + 56,
        "payload sizes follow DRR_*_PAYLOAD_SIZE"
    );
    let text = s.to_string();
    for word in [
        "compressed",
        "lz4",
        "embed_data",
        "WRITE_EMBEDDED 1",
        "REDACT 1",
        "verified",
    ] {
        assert!(text.contains(word), "{word} missing in:\n{text}");
    }
    let raw = check(&raw_stream(ByteOrder::Little, true), 4096).unwrap();
    assert_eq!(raw.records[RecordType::ObjectRange as usize], 2);
    assert_eq!(raw.payload_bytes, 96 + 320 + 8192 + 1536 + 512);
}

#[test]
fn compound_stream_with_record_checksums_passes() {
    let s = check(&compound_stream(ByteOrder::Little), 4096).unwrap();
    assert_eq!(s.substream_count, 2);
    assert_eq!(s.compound.as_ref().unwrap().nvlist_bytes, 1620);
    assert_eq!(s.end_checksums, 3);
    assert_eq!(s.substreams[1].toname, "tank/secret@raw");
}

#[test]
fn every_cut_of_a_synthetic_stream_is_truncation() {
    for (name, data) in all_streams() {
        let mut cuts = record_starts(&data);
        cuts.remove(0);
        cuts.extend((1..data.len()).step_by(97));
        for cut in cuts {
            let e = check(&data[..cut], 4096).unwrap_err();
            assert_eq!(e.kind, ZfsErrorKind::Truncated, "{name} cut {cut}: {e}");
        }
    }
}

#[test]
fn every_header_bit_flip_is_detected() {
    for (name, data) in all_streams() {
        for start in record_starts(&data) {
            for bit in start * 8..(start + RECORD) * 8 {
                let mut bad = data.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    check(&bad, 8192).is_err(),
                    "{name}: header flip at byte {} (record at {start}) not detected",
                    bit / 8
                );
            }
        }
    }
}

#[test]
fn payload_bit_flips_are_caught_by_checksums() {
    for (name, data) in all_streams() {
        let starts = record_starts(&data);
        let mut payload_bytes = Vec::new();
        for w in starts.windows(2) {
            payload_bytes.extend((w[0] + RECORD..w[1]).step_by(41));
        }
        assert!(!payload_bytes.is_empty());
        for at in payload_bytes {
            let mut bad = data.clone();
            bad[at] ^= 0x04;
            let e = check(&bad, 8192)
                .err()
                .unwrap_or_else(|| panic!("{name}: payload flip at {at} not detected"));
            // Flips in a BEGIN nvlist's 4-byte header are caught before the
            // checksum, as a payload that is not an nvlist.
            assert!(
                e.kind == ZfsErrorKind::Checksum
                    || (e.kind == ZfsErrorKind::Corrupt && e.message.contains("nvlist")),
                "{name} at {at}: {e}"
            );
        }
    }
}

#[test]
fn per_record_checksum_catches_a_payload_flip_at_the_next_record() {
    let data = compressed_stream(ByteOrder::Little, true);
    let starts = record_starts(&data);
    // Flip a byte of the first OBJECT's bonus buffer (record 1's payload).
    let mut bad = data.clone();
    bad[starts[1] + RECORD + 5] ^= 1;
    let e = check(&bad, 4096).unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::Checksum);
    assert!(e.message.contains("per-record checksum"), "{e}");
    assert_eq!(e.record, 2, "caught at the record after the damage");
    assert_eq!(e.offset, starts[2] as u64);
}

/// Builds a stream with one odd record (valid checksums) and returns the check error.
fn odd(build: impl FnOnce(&mut StreamBuilder) -> io::Result<()>) -> ZfsError {
    let mut b = StreamBuilder::new(ByteOrder::Little, true);
    b.begin(&begin("tank/fs@x", 42, 0, COMPRESSED_FEATURES), &[])
        .unwrap();
    build(&mut b).unwrap();
    b.end().unwrap();
    let data = b.into_inner();
    let e = check(&data, 4096).unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::Corrupt, "{e}");
    e
}

#[test]
fn compressed_size_larger_than_logical_size_is_corrupt() {
    let e = odd(|b| {
        b.write(
            &WriteFields {
                logical_size: 4096,
                compression: LZ4,
                compressed_size: 8192,
                ..WriteFields::default()
            },
            &[0; 8192],
        )
    });
    assert!(e.message.contains("compressed size 8192"), "{e}");
}

#[test]
fn compressed_size_on_an_uncompressed_write_is_corrupt() {
    let e = odd(|b| {
        b.write(
            &WriteFields {
                logical_size: 4096,
                compressed_size: 512,
                ..WriteFields::default()
            },
            &[0; 4096],
        )
    });
    assert!(e.message.contains("uncompressed write"), "{e}");
}

#[test]
fn logical_size_that_is_not_a_block_size_is_corrupt() {
    let e = odd(|b| {
        b.write(
            &WriteFields {
                logical_size: 1000,
                ..WriteFields::default()
            },
            &[0; 1000],
        )
    });
    assert!(e.message.contains("not a block size"), "{e}");
}

#[test]
fn raw_records_without_the_raw_feature_are_corrupt() {
    let e = odd(|b| b.object_range(0, 32));
    assert!(e.message.contains("raw feature"), "{e}");
    let e = odd(|b| {
        b.object(
            &ObjectFields {
                raw_bonuslen: 64,
                ..ObjectFields::default()
            },
            &[0; 64],
        )
    });
    assert!(e.message.contains("raw feature"), "{e}");
    let e = odd(|b| {
        b.write(
            &WriteFields {
                logical_size: 4096,
                crypt_params: true,
                ..WriteFields::default()
            },
            &[0; 4096],
        )
    });
    assert!(e.message.contains("encryption parameters"), "{e}");
}

#[test]
fn object_range_must_cover_one_dnode_block() {
    let mut b = StreamBuilder::new(ByteOrder::Little, true);
    b.begin(&begin("tank/s@r", 9, 0, RAW_FEATURES), &[])
        .unwrap();
    b.object_range(16, 32).unwrap();
    b.end().unwrap();
    let e = check(&b.into_inner(), 4096).unwrap_err();
    assert!(e.message.contains("dnode block"), "{e}");
}

#[test]
fn embedded_payload_larger_than_a_block_pointer_is_corrupt() {
    let e = odd(|b| {
        b.write_embedded(
            &EmbeddedFields {
                object: 3,
                length: 512,
                lsize: 512,
                psize: 120,
                ..EmbeddedFields::default()
            },
            &[0; 120],
        )
    });
    assert!(e.message.contains("drr_psize 120 exceeds"), "{e}");
}

#[test]
fn spill_without_the_sa_spill_feature_is_corrupt() {
    let mut b = StreamBuilder::new(ByteOrder::Little, false);
    b.begin(&begin("tank/s@r", 9, 0, 0), &[]).unwrap();
    b.spill(
        &SpillFields {
            object: 1,
            length: 512,
            ..SpillFields::default()
        },
        &[0; 512],
    )
    .unwrap();
    b.end().unwrap();
    let e = check(&b.into_inner(), 4096).unwrap_err();
    assert!(e.message.contains("sa_spill"), "{e}");
}

#[test]
fn unknown_feature_flags_are_rejected() {
    let mut b = StreamBuilder::new(ByteOrder::Little, true);
    b.begin(&begin("tank/s@r", 9, 0, 1 << 29), &[]).unwrap();
    b.end().unwrap();
    let e = check(&b.into_inner(), 4096).unwrap_err();
    assert!(e.message.contains("unknown feature flags"), "{e}");
}

#[test]
fn missing_end_between_substreams_is_rejected() {
    let mut b = StreamBuilder::new(ByteOrder::Little, true);
    b.begin(&begin("tank/a@1", 1, 0, 0), &[]).unwrap();
    b.free_objects(0, 32).unwrap();
    b.begin(&begin("tank/b@1", 2, 0, 0), &[]).unwrap();
    b.end().unwrap();
    let e = check(&b.into_inner(), 4096).unwrap_err();
    assert!(e.message.contains("BEGIN record inside a substream"), "{e}");
    assert_eq!(e.record, 2);
}

#[test]
fn compound_stream_without_its_final_end_is_truncated() {
    let data = compound_stream(ByteOrder::Little);
    let e = check(&data[..data.len() - RECORD], 4096).unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::Truncated);
    assert!(e.message.contains("compound"), "{e}");
}

#[test]
fn nonzero_final_end_is_corrupt() {
    let mut data = compound_stream(ByteOrder::Little);
    let n = data.len();
    data[n - 1] = 1; // the final END's trailing checksum word
    let e = check(&data, 4096).unwrap_err();
    assert!(e.message.contains("not all zeros"), "{e}");
}

/// Writes the synthetic streams into the fuzz corpus
/// (`cargo test -p zpipe-verify --test zfs_synthetic -- --ignored`).
#[test]
#[ignore = "regenerates fuzz/corpus/zfs_check; run by hand"]
fn regenerate_fuzz_corpus() {
    let dir = format!("{}/fuzz/corpus/zfs_check", env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let streams = [
        (
            "synth_compressed_le",
            compressed_stream(ByteOrder::Little, true),
        ),
        (
            "synth_compressed_be_nocksum",
            compressed_stream(ByteOrder::Big, false),
        ),
        ("synth_raw_le", raw_stream(ByteOrder::Little, true)),
        ("synth_compound_be", compound_stream(ByteOrder::Big)),
    ];
    for (name, data) in streams {
        check(&data, 4096).unwrap();
        std::fs::write(format!("{dir}/{name}"), data).unwrap();
    }
}
