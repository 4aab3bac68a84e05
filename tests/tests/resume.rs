//! Resuming an interrupted transfer end to end: zsend-wrap --to over the
//! real sshd into zrecv-wrap, both driving the stand-in `zfs` (OpenZFS 2.x
//! resume behaviour on top of real zfs-fuse). The ssh carrying a 500 MiB
//! send is killed half-way; the partial receive publishes a resume token;
//! `zsend-wrap -t TOKEN` completes it; the result is identical to the source.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use zpipe_tests::data::noise;
use zpipe_tests::faults::{children, comm, ssh_option_line, standin_command, standin_token};
use zpipe_tests::{bin, require, Pool, Sshd};

/// Size of the dataset's payload.
const PAYLOAD: usize = 500 << 20;
/// Pools big enough for the payload plus partial state.
const POOL_BYTES: u64 = 2 << 30;

fn send_cmd(sshd: &Sshd, zfs: &str, target: &str, send: &[&str]) -> Command {
    let mut c = Command::new(bin("zsend-wrap"));
    c.args([
        "--compress",
        "off",
        "--zfs",
        zfs,
        "--ssh",
        &ssh_option_line(sshd),
    ])
    .arg("--remote-zrecv")
    .arg(bin("zrecv-wrap"))
    .arg(format!("--recv-arg=--zfs={zfs}"))
    .arg("--recv-arg=--quiet")
    .args(send)
    .arg("--to")
    .arg(format!("{}:{target}", sshd.destination()))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ssh_killed_half_way_then_resume_completes_identically() {
    require!(zfs, sshd);
    let src = Pool::create_sized(POOL_BYTES).unwrap();
    let dst = Pool::create_sized(POOL_BYTES).unwrap();
    let sshd = Sshd::start().unwrap();
    let state = dst.dir().join("standin-state");
    std::fs::create_dir_all(&state).unwrap();
    let zfs = standin_command(&state);

    let ds = src.create_dataset("big data");
    let payload = noise(1, PAYLOAD);
    src.write_file(&ds, "payload.bin", &payload);
    let snap = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds("copy");

    // Throttled, with progress lines every 200 ms, so the cut lands in the
    // middle: once the meter reports 150 MiB sent, ssh is killed.
    let mut first = send_cmd(&sshd, &zfs, &target, &["--limit", "100M", &snap])
        .args(["--interval", "200ms"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    let stderr = first.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no progress: {log:?}"));
        let bytes = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes="))
            .and_then(|v| v.parse::<u64>().ok());
        log.push(line);
        if bytes.is_some_and(|b| b >= 150 << 20) {
            break;
        }
    }
    let ssh = children(first.id())
        .into_iter()
        .find(|&p| comm(p) == "ssh")
        .expect("zsend-wrap runs ssh");
    Command::new("kill")
        .args(["-9", &ssh.to_string()])
        .status()
        .unwrap();
    let status = first.wait().unwrap();
    let rest: Vec<String> = rx.iter().collect();
    let out = Output {
        status,
        stdout: Vec::new(),
        stderr: rest.join("\n").into_bytes(),
    };
    assert!(start.elapsed() < Duration::from_secs(120));
    assert!(!out.status.success(), "a cut transfer must not succeed");
    assert!(
        text(&out).contains("zsend-wrap: remote side"),
        "{}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // The receiving side winds down on its own after losing its sender;
    // then its partial receive shows a token in OpenZFS's format.
    let token_of = || standin_token(&state, &target);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut token = token_of();
    while !token.starts_with("1-") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        token = token_of();
    }
    assert!(token.starts_with("1-"), "no resume token: {token:?}");
    let decoded = zrecv_wrap::token::decode(&token).unwrap();
    assert_eq!(decoded.toname, snap);
    assert!(
        decoded.bytes > 100 << 20 && decoded.bytes < PAYLOAD as u64,
        "{}",
        decoded.bytes
    );

    // zrecv-wrap shows it decoded.
    let show = Command::new(bin("zrecv-wrap"))
        .args(["--zfs", &zfs, "--resume-token", &target])
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", text(&show));
    assert!(String::from_utf8_lossy(&show.stdout).contains(&format!("toname = {snap}")));

    // Resume: only the remainder travels, and the result is identical.
    let out = send_cmd(&sshd, &zfs, &target, &["--quiet", "-t", &token])
        .output()
        .unwrap();
    assert!(out.status.success(), "resume failed: {}", text(&out));
    assert_eq!(dst.guid(&format!("{target}@s1")), src.guid(&snap));
    assert!(
        dst.read_file(&target, "payload.bin") == payload,
        "data differs after resume"
    );
    assert_eq!(standin_token(&state, &target), "-");
}

#[test]
fn stale_token_is_refused_with_advice_and_abort_partial_clears_it() {
    require!(zfs, sshd);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let sshd = Sshd::start().unwrap();
    let state = dst.dir().join("standin-state");
    std::fs::create_dir_all(&state).unwrap();
    let zfs = standin_command(&state);
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", &noise(1, 20 << 20));
    let snap = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds("copy");

    // Cut the stream by hand: half of a real zsend-wrap stream into zrecv-wrap.
    let full = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--compress", "off", "--zfs", &zfs, &snap])
        .output()
        .unwrap();
    assert!(full.status.success(), "{}", text(&full));
    let half = &full.stdout[..full.stdout.len() / 2];
    let mut recv = Command::new(bin("zrecv-wrap"))
        .args(["--quiet", "--zfs", &zfs, &target])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = recv.stdin.take().unwrap();
        stdin.write_all(half).unwrap();
    }
    let out = recv.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("resume with: zsend-wrap -t "),
        "{}",
        text(&out)
    );
    let token = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("zrecv-wrap: resume token: "))
        .expect("token line")
        .to_string();

    // The source snapshot goes away: resuming is refused, saying what to do.
    zpipe_tests::zfs::zfs_ok(["destroy", &snap]);
    let out = send_cmd(&sshd, &zfs, &target, &["--quiet", "-t", &token])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no longer exists"), "{}", text(&out));
    assert!(text(&out).contains("--abort-partial"), "{}", text(&out));

    let out = Command::new(bin("zrecv-wrap"))
        .args(["--zfs", &zfs, "--abort-partial", &target])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(bin("zrecv-wrap"))
        .args(["--zfs", &zfs, "--resume-token", &target])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
