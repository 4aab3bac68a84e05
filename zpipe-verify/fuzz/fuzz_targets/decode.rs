//! Fuzz target for the framing decoder: any input must end in a verified
//! stream or an integrity error (exit 2), never a panic, a hang or a huge
//! allocation; output only ever comes from frames that verified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zpipe_core::exit::{classify, Exit};
use zpipe_verify::{Decoder, VerifyConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = VerifyConfig {
        workers: 1,
        ..Default::default()
    };
    let mut out = Vec::new();
    match Decoder::new(data, &cfg).decode_to(&mut out) {
        Ok(d) => assert_eq!(d.bytes, out.len() as u64),
        Err(e) => {
            assert_eq!(classify(&e), Exit::Integrity, "{e:#}");
            // Whatever was written is whole, verified frames: never more
            // than the input carried.
            assert!(out.len() <= data.len());
        }
    }
});
