//! Runs the real `zpipe-meter` binary in pipelines: exact counts, the splice
//! path, exit codes and error lines, rate limit, progress output in every
//! mode, stall watchdog, signals, size estimates, buffer.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_zpipe-meter");
const MIB: u64 = 1 << 20;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 4099) as u8).collect()
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
    elapsed: Duration,
}

/// Runs the binary with `args`, feeding `input` from a thread.
fn run(args: &[&str], input: Vec<u8>) -> Run {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

fn sh(script: &str) -> Run {
    let start = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("M", BIN)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Parses a log line into (prefix, fields); panics if it is not one.
fn parse_log(line: &str) -> (String, Vec<(String, String)>) {
    let mut parts = line.split(' ');
    let ts = parts.next().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "timestamp in {line:?}"
    );
    let prefix = parts.next().unwrap();
    assert!(
        prefix.starts_with("zpipe-meter") && prefix.ends_with(':'),
        "{line:?}"
    );
    let fields = parts
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{kv:?} in {line:?}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    (prefix.trim_end_matches(':').to_string(), fields)
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn counts_are_exact_around_block_and_pipe_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let js = j.to_str().unwrap();
    let sizes = [
        0,
        1,
        65535,
        65536,
        65537,
        MIB as usize - 1,
        MIB as usize,
        MIB as usize + 1,
        100 * MIB as usize,
    ];
    for &n in &sizes {
        let data = pattern(n);
        for extra in [&[][..], &["--no-splice"][..], &["-B", "2M"][..]] {
            if n == 100 * MIB as usize && !extra.is_empty() {
                continue;
            }
            let mut args = vec!["-q", "--json", js];
            args.extend_from_slice(extra);
            let r = run(&args, data.clone());
            assert_eq!(r.code, 0, "{n} {extra:?}: {}", r.stderr);
            assert_eq!(r.stdout.len(), n, "{n} {extra:?}");
            assert!(r.stdout == data, "{n} {extra:?}: bytes differ");
            assert_eq!(json(&j)["bytes"], n as u64, "{n} {extra:?}");
            assert_eq!(r.stderr, "", "-q prints nothing");
        }
    }
}

#[test]
fn two_gib_of_zeros_move_by_splice() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let r = sh(&format!(
        "set -o pipefail; head -c 2G /dev/zero | \"$M\" -q --json {} | cat >/dev/null",
        j.display()
    ));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&j);
    assert_eq!(v["bytes"], 2u64 << 30);
    assert_eq!(v["spliced_bytes"], 2u64 << 30, "splice moved every byte");
    assert_eq!(v["exit"], "success");
    assert!(r.elapsed < Duration::from_secs(30), "{:?}", r.elapsed);
}

#[test]
fn closed_stdout_is_exit_3_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![7u8; 16 << 20]).unwrap();
    let r = sh(&format!(
        "\"$M\" -q < {} | head -c1 >/dev/null; exit ${{PIPESTATUS[0]}}",
        big.display()
    ));
    assert_eq!(r.code, 3, "{}", r.stderr);
    let l = lines(&r.stderr);
    assert_eq!(l.len(), 1, "{:?}", r.stderr);
    assert!(l[0].starts_with("zpipe-meter:"), "{}", l[0]);
    assert!(l[0].contains("Broken pipe"), "{}", l[0]);
}

#[test]
fn closed_stdout_without_quiet_is_still_one_line() {
    let r = sh("head -c 64M /dev/zero | \"$M\" -B 4M | head -c1 >/dev/null; exit ${PIPESTATUS[1]}");
    assert_eq!(r.code, 3, "{}", r.stderr);
    let l = lines(&r.stderr);
    assert_eq!(l.len(), 1, "{:?}", r.stderr);
    assert!(l[0].starts_with("zpipe-meter:"), "{}", l[0]);
}

#[test]
fn bad_limit_names_the_flag() {
    for args in [&["--limit=abc"][..], &["-L", "abc"][..], &["-s", "12Q"][..]] {
        let r = run(args, Vec::new());
        assert_eq!(r.code, 1, "{args:?}");
        let l = lines(&r.stderr);
        assert_eq!(l.len(), 1, "{:?}", r.stderr);
        assert!(l[0].starts_with("zpipe-meter:"));
        let flag = if args[0].starts_with("-s") {
            "--size"
        } else {
            "--limit"
        };
        assert!(l[0].contains(flag), "{}", l[0]);
    }
    let r = run(&["--limit-schedule", "8-99=1M"], Vec::new());
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--limit-schedule"), "{}", r.stderr);
}

#[test]
fn limit_keeps_the_rate() {
    // 12 MiB at 4 MiB/s: 3 s. Generous bounds for loaded CI machines.
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let r = run(
        &["-q", "-L", "4M", "--json", j.to_str().unwrap()],
        vec![0u8; 12 * MIB as usize],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let secs = r.elapsed.as_secs_f64();
    assert!((2.8..4.5).contains(&secs), "took {secs}s");
    let v = json(&j);
    let avg = v["average_rate"].as_f64().unwrap();
    assert!((avg / (4 * MIB) as f64 - 1.0).abs() < 0.07, "avg {avg}");
    assert_eq!(v["limit"], 4 * MIB);
}

#[test]
fn log_lines_are_present_and_parseable() {
    let r = run(
        &["-L", "8M", "-i", "200ms", "-N", "tank/fs", "-s", "4M"],
        vec![1u8; 6 * MIB as usize],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let l = lines(&r.stderr);
    assert!(l.len() >= 4, "{:?}", r.stderr);
    let mut saw_eta = false;
    for line in &l[..l.len() - 1] {
        let (prefix, f) = parse_log(line);
        assert_eq!(prefix, "zpipe-meter[tank/fs]");
        for key in ["bytes", "rate", "avg", "elapsed", "size", "pct", "limit"] {
            let v = field(&f, key).unwrap_or_else(|| panic!("{key} missing in {line}"));
            assert!(v.parse::<f64>().is_ok(), "{key}={v}");
        }
        let pct: u64 = field(&f, "pct").unwrap().parse().unwrap();
        assert!(pct <= 100, "{line}");
        saw_eta |= field(&f, "eta").is_some();
        if field(&f, "bytes").unwrap().parse::<u64>().unwrap() > 4 * MIB {
            assert_eq!(pct, 100);
            assert!(field(&f, "over").is_some(), "{line}");
            assert!(field(&f, "eta").is_none(), "{line}");
        }
    }
    assert!(saw_eta, "{:?}", r.stderr);
    let (_, f) = parse_log(l[l.len() - 1]);
    assert_eq!(field(&f, "status"), Some("done"));
    assert_eq!(field(&f, "bytes"), Some(&*(6 * MIB).to_string()));
    assert_eq!(field(&f, "exit"), Some("success"));
}

#[test]
fn tty_mode_shows_a_progress_line() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) from util-linux is missing");
        return;
    }
    let r = sh(
        "script -qec \"head -c 6M /dev/zero | '$M' -L 8M -s 6M -N ttytest >/dev/null\" /dev/null",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("ttytest: "), "{text}");
    assert!(text.contains("MiB/s"), "{text}");
    assert!(text.contains('%') && text.contains("ETA"), "{text}");
    assert!(text.contains("[="), "a bar: {text}");
    // The summary line, human-readable.
    assert!(
        text.contains("zpipe-meter[ttytest]: 6291456 bytes"),
        "{text}"
    );
    assert!(
        !text.contains("bytes="),
        "no log lines on a terminal: {text}"
    );
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn stall_with_silent_upstream_names_the_input() {
    for extra in [&[][..], &["-B", "4M"][..]] {
        let mut args = vec!["-q", "--stall-timeout", "1s"];
        args.extend_from_slice(extra);
        let mut child = spawn(&args);
        let _stdin = child.stdin.take(); // kept open, never written
        let start = Instant::now();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{extra:?} {err}");
        assert!(err.contains("no input"), "{err}");
        assert_eq!(lines(&err).len(), 1, "{err}");
        assert!(start.elapsed() < Duration::from_secs(6));
    }
}

#[test]
fn stall_with_blocked_downstream_names_the_output() {
    for extra in [&[][..], &["-B", "4M"][..]] {
        let mut args = vec!["-q", "--stall-timeout", "1s"];
        args.extend_from_slice(extra);
        let mut child = spawn(&args);
        let mut stdin = child.stdin.take().unwrap();
        let _stdout = child.stdout.take(); // kept open, never read
        let feeder = std::thread::spawn(move || {
            let block = vec![0u8; 1 << 16];
            while stdin.write_all(&block).is_ok() {}
        });
        let start = Instant::now();
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(3), "{extra:?} {err}");
        assert!(err.contains("downstream not reading"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(6));
        feeder.join().unwrap();
    }
}

#[test]
fn sigusr1_prints_the_status_at_once() {
    let mut child = spawn(&["-q", "-N", "usr1"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[5u8; 1000]).unwrap();
    let _out = child.stdout.take();
    let rx = stderr_lines(&mut child);
    std::thread::sleep(Duration::from_millis(400));
    signal(&child, "-USR1");
    let line = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("a status line");
    let (prefix, f) = parse_log(&line);
    assert_eq!(prefix, "zpipe-meter[usr1]");
    assert_eq!(field(&f, "bytes"), Some("1000"), "{line}");
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn sigterm_stops_with_143() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let mut child = spawn(&["-q", "--json", j.to_str().unwrap()]);
    let _stdin = child.stdin.take();
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-TERM");
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let v = json(&j);
    assert_eq!(v["exit"], "terminated");
    assert_eq!(v["exit_code"], 143);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn json_holds_the_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let r = run(
        &[
            "-q",
            "-N",
            "j",
            "-s",
            "3M",
            "-L",
            "16M",
            "--json",
            j.to_str().unwrap(),
        ],
        pattern(3 * MIB as usize),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&j);
    assert_eq!(v["name"], "j");
    assert_eq!(v["bytes"], 3 * MIB);
    assert_eq!(v["size"], 3 * MIB);
    assert_eq!(v["limit"], 16 * MIB);
    assert_eq!(v["exit"], "success");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stalls"], 0);
    assert!(v["seconds"].as_f64().unwrap() > 0.1);
    let avg = v["average_rate"].as_f64().unwrap();
    let peak = v["peak_rate"].as_f64().unwrap();
    assert!(avg > 0.0 && peak >= avg, "{v}");
    assert!(v["spliced_bytes"].as_u64().unwrap() <= 3 * MIB);
    assert!(v["buffer"].is_null());
}

#[test]
fn json_records_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let mut child = spawn(&[
        "-q",
        "--stall-timeout",
        "500ms",
        "--json",
        j.to_str().unwrap(),
    ]);
    let _stdin = child.stdin.take();
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let v = json(&j);
    assert_eq!(v["exit"], "io");
    assert_eq!(v["exit_code"], 3);
    assert!(v["reason"].as_str().unwrap().contains("no input"), "{v}");
}

#[test]
fn absurd_zero_and_missing_sizes_show_no_eta() {
    let dir = tempfile::tempdir().unwrap();
    let est = dir.path().join("est");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-s".into(), "0".into()], ""),
        (vec!["-s".into(), "18446744073709551615".into()], ""),
        (
            vec!["--size-file".into(), est.display().to_string()],
            "full\tp/fs@s\t18446744073709551615\nsize\t18446744073709551615\n",
        ),
        (
            vec!["--size-file".into(), est.display().to_string()],
            "size\t1152921504606846977\n",
        ),
        (
            vec!["--size-file".into(), est.display().to_string()],
            "size\t0\n",
        ),
        (
            vec!["--size-file".into(), est.display().to_string()],
            "full\tp/fs@s\n",
        ),
    ];
    for (flags, text) in cases {
        std::fs::write(&est, text).unwrap();
        let mut args: Vec<&str> = vec!["-L", "8M", "-i", "150ms"];
        args.extend(flags.iter().map(String::as_str));
        let r = run(&args, vec![0u8; 2 * MIB as usize]);
        assert_eq!(r.code, 0, "{flags:?} {}", r.stderr);
        assert!(lines(&r.stderr).len() >= 2, "{}", r.stderr);
        for key in ["eta=", "size=", "pct="] {
            assert!(!r.stderr.contains(key), "{flags:?} {text:?}: {}", r.stderr);
        }
    }
    // A real estimate gives an ETA.
    std::fs::write(&est, "full\tp/fs@s\t4194304\nsize\t4194304\n").unwrap();
    let r = run(
        &[
            "-L",
            "8M",
            "-i",
            "150ms",
            "--size-file",
            est.to_str().unwrap(),
        ],
        vec![0u8; 2 * MIB as usize],
    );
    assert!(r.stderr.contains("size=4194304"), "{}", r.stderr);
    assert!(r.stderr.contains("eta="), "{}", r.stderr);
}

#[test]
fn numeric_mode_prints_percentages() {
    let r = run(
        &["-n", "-s", "2M", "-L", "8M", "-i", "100ms"],
        vec![0u8; 3 * MIB as usize],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let l = lines(&r.stderr);
    assert!(l.len() >= 3, "{:?}", r.stderr);
    let nums: Vec<u64> = l.iter().map(|s| s.parse().unwrap()).collect();
    assert!(nums.iter().all(|&n| n <= 100), "{nums:?}");
    assert_eq!(*nums.last().unwrap(), 100);
    assert!(nums.windows(2).all(|w| w[0] <= w[1]), "{nums:?}");
}

#[test]
fn buffer_with_fill_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let data = pattern(20 * MIB as usize + 12345);
    let r = run(
        &[
            "-q",
            "-B",
            "4M",
            "--fill",
            "75",
            "--json",
            j.to_str().unwrap(),
        ],
        data.clone(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout == data, "bytes differ");
    let v = json(&j);
    assert_eq!(v["buffer"], 4 * MIB);
    assert!(v["peak_fill"].as_u64().unwrap() <= 4 * MIB);
    assert_eq!(v["spliced_bytes"], 0);
}

#[test]
fn buffer_waits_for_the_fill_level() {
    // 3 MiB arrive, then a pause: with --fill 50 of 8M nothing may come out
    // before the input ends.
    let mut child = spawn(&["-q", "-B", "8M", "--fill", "50"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(&vec![1u8; 3 * MIB as usize]).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        let n = stdout.read(&mut buf).unwrap();
        let _ = tx.send(n);
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).unwrap();
        let _ = tx.send(rest.len() + n);
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "wrote before the fill level"
    );
    drop(stdin);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        3 * MIB as usize
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn sigusr2_rereads_the_limit_file() {
    let dir = tempfile::tempdir().unwrap();
    let lf = dir.path().join("limits");
    std::fs::write(&lf, "# slow at first\n1M\n").unwrap();
    let mut child = spawn(&["--limit-file", lf.to_str().unwrap(), "-i", "30s"]);
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&vec![0u8; 10 * MIB as usize]);
    });
    let mut stdout = child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v.len()
    });
    let rx = stderr_lines(&mut child);
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(&lf, "00:00-00:00=unlimited\n").unwrap();
    signal(&child, "-USR2");
    let line = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("reload line");
    assert!(line.contains("reloaded --limit-file"), "{line}");
    assert!(line.contains("limit=unlimited"), "{line}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // At 1 MiB/s the 10 MiB would take 10 s.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(drain.join().unwrap(), 10 * MIB as usize);
    feeder.join().unwrap();
}

#[test]
fn bad_limit_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let lf = dir.path().join("limits");
    std::fs::write(&lf, "08:00-09:00=fast\n").unwrap();
    let r = run(&["--limit-file", lf.to_str().unwrap()], Vec::new());
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--limit-file"), "{}", r.stderr);
    let r = run(&["--limit-file", "/nonexistent/limits"], Vec::new());
    assert_eq!(r.code, 1, "{}", r.stderr);
}

#[test]
fn help_mentions_pv_and_mbuffer() {
    let r = run(&["--help"], Vec::new());
    assert_eq!(r.code, 0);
    let text = String::from_utf8_lossy(&r.stdout);
    for s in [
        "-s, --size",
        "-L, --limit",
        "-q, --quiet",
        "-n, --numeric",
        "-N, --name",
        "-B, --buffer",
        "pv",
        "mbuffer",
    ] {
        assert!(text.contains(s), "{s} in --help");
    }
}

#[test]
fn sigint_stops_with_130_after_a_summary() {
    let mut child = spawn(&["-N", "int"]);
    let _stdin = child.stdin.take();
    let rx = stderr_lines(&mut child);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-INT");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let lines: Vec<String> = rx.iter().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (_, f) = parse_log(&lines[0]);
    assert_eq!(field(&f, "exit"), Some("interrupted"), "{lines:?}");
    assert_eq!(lines[1], "zpipe-meter: stopped by SIGINT");
}

#[test]
fn schedule_window_limits_the_rate() {
    // A window covering the whole day applies whatever the local time.
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("s.json");
    let r = run(
        &[
            "-q",
            "--limit-schedule",
            "00:00-00:00=4M",
            "--json",
            j.to_str().unwrap(),
        ],
        vec![0u8; 6 * MIB as usize],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let secs = r.elapsed.as_secs_f64();
    assert!((1.3..3.0).contains(&secs), "took {secs}s");
    assert_eq!(json(&j)["limit"], 4 * MIB);
}
