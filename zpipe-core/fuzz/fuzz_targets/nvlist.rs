//! Fuzz target for the packed nvlist decoder (resume tokens, resumed BEGIN
//! payloads): any bytes end in a list or an error, never a panic or an
//! allocation larger than the input; a decoded list packs and decodes back
//! to itself, and prints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zpipe_core::nvlist::{pack_native, unpack_native};

fuzz_target!(|data: &[u8]| {
    let Ok(list) = unpack_native(data) else {
        return;
    };
    let _ = list.to_string();
    // A decoded list may repeat names (no NV_UNIQUE_NAME flag); packing
    // writes a unique-name list, so compare after one normalising trip.
    let once = unpack_native(&pack_native(&list)).expect("a packed list decodes");
    let twice = unpack_native(&pack_native(&once)).expect("a packed list decodes");
    assert_eq!(once, twice);
});
