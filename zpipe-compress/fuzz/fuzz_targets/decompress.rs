//! Fuzz target: arbitrary bytes into the zpipe-compress decoder, cut at an
//! arbitrary block size. It must never panic, and any failure must be a
//! classified integrity or usage error (a panicking worker thread would
//! surface as an unclassified "cancelled").
#![no_main]

use libfuzzer_sys::fuzz_target;
use zpipe_compress::mem::decompress_bytes;
use zpipe_compress::DecompressConfig;
use zpipe_core::exit::{classify, Exit};

fuzz_target!(|data: &[u8]| {
    let (cut, input) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c) * 97 + 1, rest),
        None => (1, data),
    };
    let cfg = DecompressConfig {
        workers: 2,
        memory_limit: 64 << 20,
    };
    if let Err(e) = decompress_bytes(input, cut, cfg) {
        let code = classify(&e);
        assert!(code == Exit::Integrity || code == Exit::Usage, "{e:#}");
    }
});
