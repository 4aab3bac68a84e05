//! A fast producer and a slow consumer: memory stays bounded. Each tool
//! (meter with and without `-B`, compress, verify) and the wrappers move
//! far more data than they may hold while /proc is sampled for their
//! resident memory: the peak stays under a fixed bound well below the
//! data size, and the second half of the run uses no more than the first.
//!
//! The wrappers run with the fake `zfs` of `cargo xtask soak` (`xtask soak
//! fake-zfs`): its send streams a valid ZFS stream generated on the fly,
//! its receive reads at a throttled rate and tallies what it got.

use std::process::{Command, Stdio};
use std::time::Duration;
use zpipe_tests::faults::{feed, rss_summary, Drain, RssSampler};
use zpipe_tests::{bin, shell_join};

/// Data pushed through each filter.
const DATA: u64 = 160 << 20;
/// The slow consumer: pause after each 64 KiB read (at most ~60 MB/s).
const PAUSE: Duration = Duration::from_millis(1);

/// Checks the samples: enough of them, a peak under `bound`, and no growth
/// from the first half to the second (25 % + 4 MiB of slack for noise).
fn check(what: &str, samples: &[(Duration, u64)], bound: u64) {
    assert!(samples.len() >= 6, "{what}: too few samples: {samples:?}");
    let (peak, first, second) = rss_summary(samples);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "{what}: RSS peak {:.1} MiB, median {:.1} then {:.1} MiB ({} samples)",
        mib(peak),
        mib(first),
        mib(second),
        samples.len()
    );
    assert!(
        peak < bound,
        "{what}: RSS peak {:.1} MiB over the bound {:.1} MiB",
        mib(peak),
        mib(bound)
    );
    assert!(
        second <= first + first / 4 + (4 << 20),
        "{what}: RSS grew from {:.1} to {:.1} MiB",
        mib(first),
        mib(second)
    );
}

#[test]
fn filters_hold_bounded_memory_between_a_fast_producer_and_a_slow_consumer() {
    let cases: [(&str, &[&str], u64); 5] = [
        ("zpipe-meter", &["-q"], 24 << 20),
        ("zpipe-meter", &["-q", "--no-splice"], 24 << 20),
        ("zpipe-meter", &["-q", "-B", "32M"], (32 + 24) << 20),
        ("zpipe-compress", &["-3"], 96 << 20),
        ("zpipe-verify", &[], 48 << 20),
    ];
    for (tool, args, bound) in cases {
        let what = format!("{tool} {}", args.join(" "));
        let mut child = Command::new(bin(tool))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let producer = feed(child.stdin.take().unwrap(), 5, DATA);
        let sampler = RssSampler::start(child.id(), Duration::from_millis(50), false, &[]);
        let drain = Drain::start(child.stdout.take().unwrap(), 64 << 10, PAUSE);
        let got = drain.join();
        let out = child.wait_with_output().unwrap();
        let samples = sampler.finish();
        assert_eq!(producer.join().unwrap(), DATA, "{what}");
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(got > DATA / 4, "{what}: only {got} bytes came out");
        check(&what, &samples, bound);
    }
}

#[test]
fn wrappers_hold_bounded_memory_in_front_of_a_slow_zfs_recv() {
    let dir = tempfile::Builder::new()
        .prefix("zpipetest-load-")
        .tempdir()
        .unwrap();
    let zfs = shell_join(&[
        "env".to_string(),
        format!("ZPIPE_FAKE_DIR={}", dir.path().display()),
        format!("ZPIPE_FAKE_BYTES={DATA}"),
        "ZPIPE_FAKE_RECV_RATE=50000000".to_string(),
        bin("xtask").display().to_string(),
        "soak".into(),
        "fake-zfs".into(),
    ]);
    for compress in ["off", "auto"] {
        let mut s = Command::new(bin("zsend-wrap"))
            .args(["--quiet", "--zfs", &zfs, "--compress", compress])
            .arg("soak/data@soak")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let r = Command::new(bin("zrecv-wrap"))
            .args(["--quiet", "--zfs", &zfs, "dst/soak"])
            .stdin(s.stdout.take().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let s_samples = RssSampler::start(s.id(), Duration::from_millis(50), false, &[]);
        let r_samples = RssSampler::start(r.id(), Duration::from_millis(50), false, &[]);
        let r_out = r.wait_with_output().unwrap();
        let s_out = s.wait_with_output().unwrap();
        let (s_samples, r_samples) = (s_samples.finish(), r_samples.finish());
        assert!(
            r_out.status.success() && s_out.status.success(),
            "--compress {compress}: {} / {}",
            String::from_utf8_lossy(&s_out.stderr),
            String::from_utf8_lossy(&r_out.stderr)
        );
        let sent = std::fs::read_to_string(dir.path().join("sent")).unwrap();
        let received = std::fs::read_to_string(dir.path().join("received")).unwrap();
        assert_eq!(sent, received, "--compress {compress}: the streams differ");
        check(
            &format!("zsend-wrap --compress {compress}"),
            &s_samples,
            128 << 20,
        );
        check(
            &format!("zrecv-wrap (from --compress {compress})"),
            &r_samples,
            128 << 20,
        );
    }
}
