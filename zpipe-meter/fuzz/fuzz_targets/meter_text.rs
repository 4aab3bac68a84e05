//! Fuzz target for the meter's text inputs: `--limit-schedule`, the
//! contents of a `--limit-file`, `--size` and the contents of a
//! `--size-file`. Any text ends in a value or a message, never a panic;
//! accepted windows lie within the day and print back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zpipe_meter::config::{parse_size_estimate, size_arg, ABSURD_SIZE};
use zpipe_meter::schedule::{parse_limit_file, parse_schedule, parse_window, MINUTES_PER_DAY};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for sched in [parse_schedule(&text), parse_limit_file(&text)]
        .into_iter()
        .flatten()
    {
        for w in &sched.windows {
            assert!(
                w.start < MINUTES_PER_DAY && w.end < MINUTES_PER_DAY,
                "{w:?}"
            );
            assert_eq!(parse_window(&w.to_string()).as_ref(), Ok(w));
        }
        for minute in [0, 1, 719, 1439] {
            let _ = sched.limit_at(minute, Some(1));
        }
    }
    if let Some(n) = parse_size_estimate(&text) {
        assert!(n > 0 && n <= ABSURD_SIZE);
    }
    let _ = size_arg(&text);
});
