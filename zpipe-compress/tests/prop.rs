//! Property tests through the real stages (in memory, arbitrary cut points):
//! encode → decode is the identity for any input, block size, cut and worker
//! count; libzstd agrees with our decoder; and random or mutated bytes never
//! make the decoder panic or fail with anything but a classified error.

use proptest::prelude::*;
use zpipe_compress::mem::{compress_bytes, decompress_bytes};
use zpipe_compress::{CompressConfig, DecompressConfig};
use zpipe_core::exit::{classify, Exit};

/// Input made of text-like and random runs, so both raw and compressed
/// frames appear.
fn mixed() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40_000),
            (any::<u8>(), 0usize..50_000).prop_map(|(b, n)| vec![b; n]),
            (0u64..1000, 0usize..60_000).prop_map(|(seed, n)| {
                (0..n)
                    .map(|i| b"zfs send recv\n"[(i + seed as usize) % 14])
                    .collect()
            }),
        ],
        0..5,
    )
    .prop_map(|parts| parts.concat())
}

fn decode(z: &[u8], cut: usize, workers: usize) -> anyhow::Result<Vec<u8>> {
    decompress_bytes(
        z,
        cut,
        DecompressConfig {
            workers,
            ..DecompressConfig::default()
        },
    )
}

/// A decoder failure must be a classified integrity or usage error, never
/// a panic (a panicking worker would show up as "cancelled").
fn assert_classified(r: &anyhow::Result<Vec<u8>>) {
    if let Err(e) = r {
        let code = classify(e);
        assert!(
            code == Exit::Integrity || code == Exit::Usage,
            "unclassified error: {e:#}"
        );
        assert!(!format!("{e:#}").contains("cancelled"), "{e:#}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity(
        data in mixed(),
        bs_k in 4usize..160,
        cut_in in 1usize..100_000,
        cut_out in 1usize..100_000,
        workers in 1usize..4,
        level in 1i32..8,
    ) {
        let cfg = CompressConfig {
            level,
            workers,
            block_size: bs_k * 1024,
            ..CompressConfig::default()
        };
        let z = compress_bytes(&data, cut_in, cfg).unwrap();
        prop_assert_eq!(&zstd::stream::decode_all(&z[..]).unwrap(), &data);
        prop_assert_eq!(&decode(&z, cut_out, workers).unwrap(), &data);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        prefix in prop_oneof![
            Just(Vec::new()),
            Just(vec![0x28, 0xB5, 0x2F, 0xFD]),
            Just(vec![0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0]),
            Just(vec![0x5A, 0x2A, 0x4D, 0x18]),
        ],
        cut in 1usize..4000,
    ) {
        let input = [prefix, body].concat();
        assert_classified(&decode(&input, cut, 2));
    }

    #[test]
    fn mutated_streams_never_panic_or_decode_wrongly(
        data in mixed(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        cut in 1usize..5000,
    ) {
        let cfg = CompressConfig { block_size: 16 * 1024, ..CompressConfig::default() };
        let mut z = compress_bytes(&data, 1 << 16, cfg).unwrap();
        for (idx, byte, kind) in edits {
            if z.is_empty() { break; }
            let i = idx.index(z.len());
            match kind {
                0 => z[i] ^= byte | 1,
                1 => z.truncate(i),
                _ => z.insert(i, byte),
            }
        }
        let r = decode(&z, cut, 2);
        assert_classified(&r);
        if let Ok(out) = r {
            // Only an edit that kept the stream valid may succeed, and then
            // libzstd must agree byte for byte.
            prop_assert_eq!(Some(out), zstd::stream::decode_all(&z[..]).ok());
        }
    }
}
