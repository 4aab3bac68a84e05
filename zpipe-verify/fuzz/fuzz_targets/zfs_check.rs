//! Fuzz target for the ZFS send stream checker and the cheap follower: no
//! input may panic either of them, splitting the input must not change the
//! checker's verdict, and whatever the checker accepts the follower must
//! see as a complete stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zpipe_verify::zfs::{CheckOptions, Checker, Follower};

/// Checks `data` fed in the given pieces; true if accepted.
fn check(pieces: &[&[u8]]) -> bool {
    let mut c = Checker::new(CheckOptions::default());
    for p in pieces {
        if c.feed(p).is_err() {
            return false;
        }
    }
    c.finish().is_ok()
}

fuzz_target!(|data: &[u8]| {
    // A split point taken from the data itself exercises incremental feeding.
    let cut = match data.first() {
        Some(&b) => usize::from(b) * 257 % (data.len() + 1),
        None => 0,
    };
    let whole = check(&[data]);
    let split = check(&[&data[..cut], &data[cut..]]);
    assert_eq!(whole, split, "verdict depends on how the input is cut");

    let mut f = Follower::new();
    f.feed(&data[..cut]);
    f.feed(&data[cut..]);
    let _ = f.is_zfs();
    let _ = f.describe_incomplete();
    if whole {
        assert!(f.is_complete(), "checker accepted an incomplete stream");
    }
});
