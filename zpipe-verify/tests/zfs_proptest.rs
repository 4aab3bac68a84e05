//! Property tests: the ZFS checker and follower never panic on mutated
//! streams, every single-bit flip or cut of a real stream is rejected, and
//! whatever the checker accepts the follower sees as complete.

use proptest::prelude::*;
use zpipe_verify::zfs::{CheckOptions, Checker, Follower};

const FIXTURES: &[&str] = &[
    "fuse_empty.zfs",
    "fuse_incr_i.zfs",
    "fuse_repl_Ri.zfs",
    "fuse_dedup_D.zfs",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/zfs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs checker and follower over `data` cut into pieces at `splits`;
/// returns whether the checker accepted it.
fn run(data: &[u8], splits: &[usize]) -> bool {
    let mut c = Checker::new(CheckOptions::default());
    let mut f = Follower::new();
    let mut points: Vec<usize> = splits.iter().map(|s| s % (data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    let mut ok = true;
    for w in points.windows(2) {
        let piece = &data[w[0]..w[1]];
        f.feed(piece);
        if ok {
            ok = c.feed(piece).is_ok();
        }
    }
    let _ = f.describe_incomplete();
    let accepted = ok && c.finish().is_ok();
    if accepted {
        assert!(
            f.is_complete(),
            "checker accepted what the follower calls incomplete"
        );
    }
    accepted
}

/// One change to a stream.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Mutation::Set(p, v)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..400)
        )
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..700).prop_map(|(p, n)| Mutation::Remove(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len().max(1);
    match m {
        Mutation::Flip(p, b) => {
            if !data.is_empty() {
                data[p % len] ^= 1 << b;
            }
        }
        Mutation::Set(p, v) => {
            if !data.is_empty() {
                data[p % len] = *v;
            }
        }
        Mutation::Insert(p, v) => {
            let at = p % (data.len() + 1);
            data.splice(at..at, v.iter().copied());
        }
        Mutation::Remove(p, n) => {
            let at = p % len;
            let end = (at + n).min(data.len());
            data.drain(at..end);
        }
        Mutation::Truncate(p) => data.truncate(p % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_streams_never_panic(
        which in 0..FIXTURES.len(),
        muts in proptest::collection::vec(mutation(), 1..6),
        splits in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let original = fixture(FIXTURES[which]);
        let mut data = original.clone();
        for m in &muts {
            apply(&mut data, m);
        }
        let accepted = run(&data, &splits);
        if data != original {
            prop_assert!(!accepted, "mutations {muts:?} were accepted");
        }
    }

    #[test]
    fn any_single_bit_flip_is_rejected(which in 0..FIXTURES.len(), bit in any::<usize>()) {
        let mut data = fixture(FIXTURES[which]);
        let bit = bit % (data.len() * 8);
        data[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!run(&data, &[bit / 8]));
    }

    #[test]
    fn any_cut_is_rejected(which in 0..FIXTURES.len(), cut in any::<usize>(), split in any::<usize>()) {
        let data = fixture(FIXTURES[which]);
        let cut = cut % data.len();
        prop_assert!(!run(&data[..cut], &[split]));
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), split in any::<usize>()) {
        prop_assert!(!run(&data, &[split]));
    }

    #[test]
    fn random_records_after_a_real_begin_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..3000),
        split in any::<usize>(),
    ) {
        let mut data = fixture("fuse_empty.zfs")[..312].to_vec();
        data.extend(tail);
        prop_assert!(!run(&data, &[split]));
    }
}
