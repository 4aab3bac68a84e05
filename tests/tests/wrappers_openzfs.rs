//! The wrappers against an OpenZFS 2.x `zfs` (the stand-in on top of real
//! zfs-fuse): raw and compressed sends are accepted and not recompressed,
//! size estimates reach the meter; and process hygiene: a broken downstream
//! or SIGTERM stops the `zfs send` child.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zpipe_tests::data::noise;
use zpipe_tests::{bin, require, shell_join, Pool};

fn standin(state: &std::path::Path) -> String {
    shell_join(&[
        "env".to_string(),
        format!("ZPIPE_STANDIN_STATE={}", state.display()),
        bin("zfs-standin").display().to_string(),
    ])
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn raw_send_is_framed_not_compressed_and_estimate_reaches_the_meter() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let state = dst.dir().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let zfs = standin(&state);
    let ds = src.create_dataset("secret");
    src.write_file(&ds, "f", &noise(7, 3 << 20));
    let snap = src.snapshot(&format!("{ds}@s1"));
    let json = src.dir().join("stats.json");

    let send = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--zfs", &zfs, "-w", "-L", "-e", "-c", "--json"])
        .arg(&json)
        .arg(&snap)
        .output()
        .unwrap();
    assert!(
        send.status.success(),
        "{}",
        String::from_utf8_lossy(&send.stderr)
    );
    // -w/-c sends are not recompressed: the stream starts with the framing magic.
    assert!(zpipe_verify::looks_like_framed(&send.stdout));
    assert!(!zpipe_compress::looks_like_zstd(&send.stdout));
    // The size came from `zfs send -nvP` and is the raw stream's length.
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let size = stats["size"]
        .as_u64()
        .expect("size known from the estimate");
    assert_eq!(stats["bytes"].as_u64(), Some(size), "{stats}");

    let mut recv = Command::new(bin("zrecv-wrap"))
        .args(["--quiet", "--zfs", &zfs, &dst.ds("copy")])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        recv.stdin.take().unwrap().write_all(&send.stdout).unwrap();
    }
    let out = recv.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dst.guid(&dst.ds("copy@s1")), src.guid(&snap));
}

#[test]
fn broken_downstream_exits_3_and_stops_zfs_send() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", &noise(3, 40 << 20));
    let snap = src.snapshot(&format!("{ds}@s1"));
    let mut send = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--compress", "off", &snap])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut out = send.stdout.take().unwrap();
        let mut first = [0u8; 1000];
        out.read_exact(&mut first).unwrap();
        // Dropping the read end: the downstream is gone.
    }
    let out = send.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("zsend-wrap: "), "{err}");
    assert!(
        processes_mentioning(src.name()).is_empty(),
        "zfs send left running"
    );
}

#[test]
fn sigterm_stops_zfs_send_and_exits_143() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", &noise(5, 40 << 20));
    let snap = src.snapshot(&format!("{ds}@s1"));
    let mut send = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--compress", "off", "--limit", "1M", &snap])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = send.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        use std::io::Read;
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    Command::new("kill")
        .args(["-TERM", &send.id().to_string()])
        .status()
        .unwrap();
    let o = send.wait_with_output().unwrap();
    drain.join().unwrap();
    assert_eq!(
        o.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        processes_mentioning(src.name()).is_empty(),
        "zfs send left running"
    );
}
