//! Property tests: encode → decode is the identity for any token, and no
//! input string, however mangled, makes the decoder panic.

use proptest::prelude::*;
use zrecv_wrap::token::{decode, encode, ResumeToken};

fn token_strategy() -> impl Strategy<Value = ResumeToken> {
    (
        (
            proptest::option::of(any::<u64>()),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        "[a-zA-Z0-9_.:/ -]{1,60}@[a-zA-Z0-9_.:-]{1,30}",
        proptest::collection::vec(any::<bool>(), 5),
        proptest::option::of(proptest::collection::vec(any::<u64>(), 0..4)),
    )
        .prop_map(
            |((fromguid, object, offset, bytes, toguid), toname, f, redact)| ResumeToken {
                fromguid,
                object,
                offset,
                bytes,
                toguid,
                toname,
                embedok: f[0],
                largeblockok: f[1],
                compressok: f[2],
                rawok: f[3],
                savedok: f[4],
                redact_snaps: redact,
                ..Default::default()
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trip(t in token_strategy()) {
        prop_assert_eq!(decode(&encode(&t)).unwrap(), t);
    }

    #[test]
    fn random_strings_never_panic(s in ".{0,300}") {
        let _ = decode(&s);
    }

    #[test]
    fn token_shaped_strings_never_panic(v in 0u32..3, c in "[0-9a-f]{0,17}", l in "[0-9a-f]{0,17}", p in "[0-9a-fA-F]{0,200}") {
        let _ = decode(&format!("{v}-{c}-{l}-{p}"));
    }

    #[test]
    fn any_changed_hex_digit_is_detected(t in token_strategy(), idx in any::<prop::sample::Index>(), digit in 0u8..16) {
        let s = encode(&t);
        let payload_start = s.match_indices('-').nth(2).unwrap().0 + 1;
        let i = payload_start + idx.index(s.len() - payload_start);
        let mut b = s.into_bytes();
        let new = b"0123456789abcdef"[digit as usize];
        let changed = b[i] != new;
        b[i] = new;
        let s = String::from_utf8(b).unwrap();
        // Fletcher word 0 catches a changed word; a change in the trailing
        // partial word (not summed) lands in zlib's Adler-32 trailer.
        if changed {
            prop_assert!(decode(&s).is_err(), "undetected change at {}", i);
        } else {
            prop_assert_eq!(decode(&s).unwrap(), t);
        }
    }

    #[test]
    fn any_cut_is_an_error(t in token_strategy(), cut in any::<prop::sample::Index>()) {
        let s = encode(&t);
        let payload_start = s.match_indices('-').nth(2).unwrap().0 + 1;
        let at = payload_start + cut.index(s.len() - payload_start);
        prop_assert!(decode(&s[..at]).is_err());
    }
}
