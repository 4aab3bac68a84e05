//! Fuzz target for the resume-token decoder (`zfs send -t`, `zrecv-wrap`
//! resume, serve mode's `-t TOKEN`): any string ends in a token or a usage
//! error (exit 1), never a panic or an allocation beyond the documented
//! bounds; a decoded token re-encodes to a string that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zpipe_core::exit::{classify, Exit};
use zsend_wrap::token::{decode, encode};

fuzz_target!(|data: &[u8]| {
    // Raw bytes as text, and the same bytes as the hex payload of a
    // well-formed frame (with its real checksum), so the fuzzer also
    // reaches zlib and the nvlist behind the framing.
    let text = String::from_utf8_lossy(data);
    check(&text);
    check(&framed(data));
});

fn check(s: &str) {
    match decode(s) {
        Ok(t) => {
            let again = decode(&encode(&t)).expect("an encoded token decodes");
            assert_eq!(again, t);
        }
        Err(e) => assert_eq!(classify(&e), Exit::Usage, "{e:#}"),
    }
}

/// `1-<fletcher4 word 0>-<declared length>-<hex>` around `data`, the
/// declared length taken from its first two bytes.
fn framed(data: &[u8]) -> String {
    let (len, payload) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let sum = zpipe_core::fletcher4::varsize(payload)[0];
    let mut s = format!("1-{sum:x}-{len:x}-");
    for b in payload {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
