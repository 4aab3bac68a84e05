//! Faults at the two ends of a replication, against real zfs-fuse:
//!
//! - the sender's `zfs send` is killed, or fails half-way (through ssh):
//!   the stream ends with ABORT, the receiver reports the sender's error
//!   and exits 2, and no snapshot appears;
//! - the destination pool is full: a one-line error naming the cause;
//!   after space is freed the same command completes;
//! - the receiver's `zfs recv` is killed: zrecv-wrap fails naming it, no
//!   snapshot appears, and the rerun completes with identical data.

use rustix::process::Signal;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use zpipe_tests::data::noise;
use zpipe_tests::faults::{
    self, find_descendant, same_tree, standin_command, standin_token, wait_timeout, StderrLog,
};
use zpipe_tests::{bin, require, shell_quote, Pool, Sshd};

/// The dataset's big file.
const PAYLOAD: usize = 24 << 20;

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `zsend-wrap <send>` piped into `zrecv-wrap <recv>`, both in process
/// groups of their own; the sender's stderr is collected as a log.
/// zsend-wrap flags that keep a transfer going for a few seconds, so a
/// fault lands mid-stream.
const SLOW_SEND: [&str; 6] = ["--compress", "off", "--limit", "8M", "--interval", "100ms"];

fn spawn_pipe(send: &[&str], recv: &[&str]) -> (Child, StderrLog, Child) {
    let mut s = Command::new(bin("zsend-wrap"))
        .args(send)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let log = StderrLog::start(s.stderr.take().unwrap());
    let r = Command::new(bin("zrecv-wrap"))
        .args(recv)
        .stdin(s.stdout.take().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    (s, log, r)
}

fn snapshots_of(pool: &Pool) -> String {
    let out = zpipe_tests::zfs::zfs([
        "list",
        "-H",
        "-o",
        "name",
        "-t",
        "snapshot",
        "-r",
        pool.name(),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn zfs_send_killed_mid_way_aborts_the_stream_and_nothing_is_received() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", &noise(41, PAYLOAD));
    let snap = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds("copy");
    let (mut s, log, r) = spawn_pipe(
        &[&SLOW_SEND[..], &[snap.as_str()]].concat(),
        &["--quiet", &target],
    );
    assert!(log.wait_for_bytes(8 << 20, Duration::from_secs(60)));
    let zfs = find_descendant(s.id(), "zfs", Duration::from_secs(5)).expect("zfs send runs");
    faults::signal(zfs, Signal::KILL);
    let s_status = wait_timeout(&mut s, Duration::from_secs(30)).expect("zsend-wrap ends");
    let s_err = log.finish();
    let r = r.wait_with_output().unwrap();
    assert_eq!(s_status.code(), Some(4), "{s_err}");
    assert!(s_err.contains("killed by signal 9"), "{s_err}");
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("abort"), "{}", text(&r));
    assert!(
        text(&r).contains("killed by signal 9"),
        "the receiver does not carry the sender's error: {}",
        text(&r)
    );
    assert!(
        !snapshots_of(&dst).contains(&target),
        "{}",
        snapshots_of(&dst)
    );
}

#[test]
fn zfs_send_failing_mid_way_through_ssh_reports_its_error_at_both_ends() {
    require!(zfs, sshd);
    let src = Pool::create().unwrap();
    let dst = Pool::create().unwrap();
    let sshd = Sshd::start().unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", &noise(42, PAYLOAD));
    let snap = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds("copy");
    // A zfs whose send fails with an I/O error after 10 MB.
    let real = zpipe_tests::zfs::zfs_program().display().to_string();
    let script = src.dir().join("failing-zfs");
    zpipe_tests::write_script(
        &script,
        &format!(
            "#!/bin/sh\n\
             if [ \"$1\" = send ] && [ \"$#\" -gt 1 ]; then\n\
             \x20 {real} \"$@\" | head -c 10000000\n\
             \x20 echo \"cannot send $2: I/O error (injected fault)\" >&2\n\
             \x20 exit 1\n\
             fi\n\
             exec {real} \"$@\"\n",
            real = shell_quote(&real)
        ),
    )
    .unwrap();
    let o = Command::new(bin("zsend-wrap"))
        .args(["--quiet", "--zfs", script.to_str().unwrap()])
        .args(["--ssh", &faults::ssh_option_line(&sshd)])
        .arg("--remote-zrecv")
        .arg(bin("zrecv-wrap"))
        .arg("--recv-arg=--quiet")
        .arg(&snap)
        .arg("--to")
        .arg(format!("{}:{target}", sshd.destination()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    // Our own line and the remote receiver's both carry zfs's words.
    assert!(
        err.contains("zsend-wrap: ") && err.contains("injected fault"),
        "{err}"
    );
    let remote: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("zrecv-wrap: "))
        .collect();
    assert!(
        remote
            .iter()
            .any(|l| l.contains("abort") && l.contains("injected fault")),
        "the remote receiver did not report the sender's ABORT: {err}"
    );
    assert!(
        !snapshots_of(&dst).contains(&target),
        "{}",
        snapshots_of(&dst)
    );
}

#[test]
fn full_destination_pool_names_the_cause_and_the_rerun_completes() {
    require!(zfs);
    let src = Pool::create().unwrap();
    let dst = Pool::create_sized(128 << 20).unwrap();
    let ds = src.create_dataset("data");
    src.write_file(&ds, "f", &noise(43, PAYLOAD));
    let snap = src.snapshot(&format!("{ds}@s1"));
    let target = dst.ds("copy");
    // Leave about half the payload free on the destination.
    let avail = zpipe_tests::zfs::numeric_prop(dst.name(), "available");
    let filler_len = avail.saturating_sub(PAYLOAD as u64 / 2);
    let filler = dst.mountpoint().join("filler.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = noise(44, 1 << 20);
        let mut left = filler_len;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            if f.write_all(&block[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = f.sync_all();
    }
    let send = ["--quiet", "--compress", "off", snap.as_str()];
    let recv = ["--quiet", target.as_str()];
    let run = || {
        let (mut s, log, r) = spawn_pipe(&send, &recv);
        let r = r.wait_with_output().unwrap();
        let s_status = wait_timeout(&mut s, Duration::from_secs(30)).expect("zsend-wrap ends");
        (s_status, log.finish(), r)
    };
    let (s_status, s_err, r) = run();
    let err = text(&r);
    assert_eq!(r.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("out of space") || err.contains("No space left"),
        "the error does not name the cause: {err}"
    );
    // The sender's status is not judged: in a local pipe it may have
    // written the whole stream into the pipe and its buffers before zfs-fuse
    // reports the full pool (at a txg sync), and then it did succeed at
    // sending. The receiver's failure is what a pipeline with pipefail (or
    // `zsend-wrap --to`, which waits for the remote status) reports.
    let _ = (s_status, s_err);
    assert!(
        !snapshots_of(&dst).contains(&target),
        "{}",
        snapshots_of(&dst)
    );

    std::fs::remove_file(&filler).unwrap();
    let _ = zpipe_tests::zfs::zfs(["destroy", "-r", &target]);
    // zfs-fuse frees the blocks of a removed file a few txgs later.
    let freed = faults::wait_until(Duration::from_secs(30), || {
        zpipe_tests::zfs::numeric_prop(dst.name(), "available") > PAYLOAD as u64 * 2
    });
    assert!(freed, "space was not freed");
    let (s_status, s_err, r) = run();
    assert!(r.status.success(), "rerun: {}", text(&r));
    assert!(s_status.success(), "rerun: {s_err}");
    assert_eq!(dst.guid(&format!("{target}@s1")), src.guid(&snap));
    same_tree(
        &zpipe_tests::zfs::mountpoint_of(&ds),
        &zpipe_tests::zfs::mountpoint_of(&target),
    )
    .unwrap();
}

/// Two pools, a dataset with a big file and the stand-in `zfs` on both
/// sides: the setup of the tests that kill the receive.
struct RecvKill {
    src: Pool,
    dst: Pool,
    state: PathBuf,
    zfs: String,
    ds: String,
    snap: String,
    target: String,
}

impl RecvKill {
    fn new(seed: u64) -> RecvKill {
        let src = Pool::create().unwrap();
        let dst = Pool::create().unwrap();
        let state = dst.dir().join("standin-state");
        std::fs::create_dir_all(&state).unwrap();
        let zfs = standin_command(&state);
        let ds = src.create_dataset("data");
        src.write_file(&ds, "f", &noise(seed, PAYLOAD));
        src.write_file(&ds, "g", b"second file\n");
        let snap = src.snapshot(&format!("{ds}@s1"));
        let target = dst.ds("copy");
        RecvKill {
            src,
            dst,
            state,
            zfs,
            ds,
            snap,
            target,
        }
    }

    /// Runs `zsend-wrap | zrecv-wrap` at 8 MB/s, runs `kill` on
    /// zrecv-wrap's pid once 10 MiB were sent; returns zrecv-wrap's status
    /// and stderr, and whether the sender succeeded.
    fn kill_mid_way(
        &self,
        recv_quiet: bool,
        kill: impl FnOnce(u32),
    ) -> (Option<i32>, String, bool) {
        let mut recv = vec!["--zfs", &self.zfs, &self.target];
        if recv_quiet {
            recv.insert(0, "--quiet");
        }
        let send = [&["--zfs", &self.zfs], &SLOW_SEND[..], &[&self.snap]].concat();
        let (mut s, log, mut r) = spawn_pipe(&send, &recv);
        assert!(log.wait_for_bytes(10 << 20, Duration::from_secs(60)));
        kill(r.id());
        let r_status = wait_timeout(&mut r, Duration::from_secs(30)).expect("zrecv-wrap ends");
        let mut err = String::new();
        use std::io::Read;
        r.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let s_status = wait_timeout(&mut s, Duration::from_secs(30)).expect("zsend-wrap ends");
        drop(log);
        (r_status.code(), err, s_status.success())
    }

    /// A quiet `zsend-wrap SEND... | zrecv-wrap` that must succeed, then
    /// the received snapshot must equal the source.
    fn complete(&self, send: &[&str]) {
        let mut args = vec!["--quiet", "--zfs", &self.zfs, "--compress", "off"];
        args.extend_from_slice(send);
        let (mut s, log, r) = spawn_pipe(&args, &["--quiet", "--zfs", &self.zfs, &self.target]);
        let r = r.wait_with_output().unwrap();
        assert!(r.status.success(), "{send:?}: {}", text(&r));
        assert!(wait_timeout(&mut s, Duration::from_secs(30))
            .unwrap()
            .success());
        drop(log);
        assert_eq!(
            self.dst.guid(&format!("{}@s1", self.target)),
            self.src.guid(&self.snap)
        );
        same_tree(
            &zpipe_tests::zfs::mountpoint_of(&self.ds),
            &zpipe_tests::zfs::mountpoint_of(&self.target),
        )
        .unwrap();
        assert_eq!(standin_token(&self.state, &self.target), "-");
    }

    fn snapshot_absent(&self) -> bool {
        faults::wait_until(Duration::from_secs(20), || {
            !snapshots_of(&self.dst).contains(&self.target)
        })
    }
}

#[test]
fn zfs_recv_killed_keeps_resumable_state_and_the_resume_completes() {
    // The receive itself is killed mid-way: the real `zfs receive` under
    // the stand-in, which then keeps the received prefix as partial state
    // and dies by the same signal, as OpenZFS's kernel keeps a killed
    // `zfs recv -s`'s state (docs/STANDIN-ZFS.md). zrecv-wrap must report
    // the killed receive, print the resume command, and `zsend-wrap -t`
    // with that token must complete the snapshot identically.
    require!(zfs);
    let k = RecvKill::new(46);
    let (code, err, _) = k.kill_mid_way(false, |zrecv| {
        let standin = find_descendant(zrecv, "zfs-standin", Duration::from_secs(5))
            .expect("zrecv-wrap runs zfs recv");
        // The real `zfs receive` (the stand-in also runs short `zfs list`s).
        let mut real = None;
        faults::wait_until(Duration::from_secs(5), || {
            real = faults::descendants(standin).into_iter().find(|&p| {
                faults::comm(p) == "zfs"
                    && std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("receive"))
            });
            real.is_some()
        });
        faults::signal(
            real.expect("the stand-in runs the real zfs receive"),
            Signal::KILL,
        );
    });
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("receive") && err.contains("killed by signal 9"),
        "{err}"
    );
    assert!(err.contains("zsend-wrap -t"), "no resume command: {err}");
    assert!(k.snapshot_absent(), "{}", snapshots_of(&k.dst));
    let token = standin_token(&k.state, &k.target);
    assert!(token.starts_with("1-"), "no partial state kept: {token}");
    k.complete(&["-t", &token]);
}

#[test]
fn zfs_recv_killed_fails_with_its_status_and_the_rerun_completes() {
    // What zrecv-wrap runs as `zfs recv` (the stand-in process itself) is
    // killed mid-way, taking the state it would have saved with it: a zfs
    // that keeps no partial state. What matters then is a clear failure,
    // no snapshot, and a rerun that completes.
    require!(zfs);
    let k = RecvKill::new(45);
    let (code, err, sent) = k.kill_mid_way(true, |zrecv| {
        let recv = find_descendant(zrecv, "zfs-standin", Duration::from_secs(5))
            .expect("zrecv-wrap runs zfs recv");
        faults::signal(recv, Signal::KILL);
    });
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("receive") && err.contains("killed by signal 9"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!sent, "the sender reported success");
    assert!(k.snapshot_absent(), "{}", snapshots_of(&k.dst));
    let _ = zpipe_tests::zfs::zfs(["destroy", "-r", &k.target]);
    k.complete(&[&k.snap]);
}
