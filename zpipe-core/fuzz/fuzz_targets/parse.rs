//! Fuzz target for the flag value parsers every tool shares: sizes, rates,
//! durations and percentages. Any string ends in a value within the
//! documented bounds or a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zpipe_core::parse;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(n) = parse::size(&s) {
        assert!(n <= parse::MAX_SIZE, "{s:?} -> {n}");
        let _ = parse::human_bytes(n);
    }
    if let Ok(n) = parse::nonzero_size(&s) {
        assert!(n > 0 && n <= parse::MAX_SIZE, "{s:?} -> {n}");
    }
    if let Ok(n) = parse::rate(&s) {
        assert!(n > 0 && n <= parse::MAX_SIZE, "{s:?} -> {n}");
    }
    if let Ok(d) = parse::duration(&s) {
        let _ = parse::human_duration(d);
    }
    if let Ok(p) = parse::percent(&s) {
        assert!(p <= 100);
    }
});
