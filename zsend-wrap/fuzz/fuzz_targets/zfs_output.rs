//! Fuzz target for what zsend-wrap and zrecv-wrap read back from `zfs`
//! (possibly a remote one in pull mode): the snapshot listing, the `send
//! -nvP` estimate and the usage text capabilities are read from. Any text
//! ends in a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zsend_wrap::zfs::{parse_estimate, parse_snapshot_props, Caps};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(snaps) = parse_snapshot_props(&text) {
        for s in &snaps {
            assert!(s.name.contains('@'));
            let _ = s.short_name();
        }
    }
    if let Some(n) = parse_estimate(&text) {
        assert!(n > 0 && n <= zpipe_core::parse::MAX_SIZE);
    }
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid -= 1;
    }
    let (a, b) = text.split_at(mid);
    let caps = Caps::from_usage(a, b);
    let _ = (
        caps.estimate(),
        caps.resumable(),
        caps.send('w'),
        caps.recv('s'),
    );
});
