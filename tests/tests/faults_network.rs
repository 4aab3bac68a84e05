//! The network fails mid-stream, push (`zsend-wrap --to`) and pull
//! (`zrecv-wrap --from`), through the kit's real sshd, with the stand-in
//! `zfs` (OpenZFS 2.x resume behaviour over real zfs-fuse) on both sides:
//!
//! - the ssh client is killed (SIGKILL);
//! - sshd's session process is killed (SIGKILL), push and pull;
//! - the link stalls: a process on the path is paused (SIGSTOP) and
//!   `--stall-timeout` fires.
//!
//! Each time the wrapper exits with the documented code (4 for a dead
//! ssh, 3 for a stall), says how to resume, leaves no process behind, and
//! the next run resumes the partial receive and completes with the same
//! guid and the same file bytes as the source.

use rustix::process::Signal;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use zpipe_tests::data::noise;
use zpipe_tests::faults::{
    self, find_descendant, group_members, same_tree, standin_command, standin_token, wait_timeout,
    StderrLog,
};
use zpipe_tests::{bin, require, Pool, Sshd};

/// The dataset's big file: the cut comes about half-way.
const PAYLOAD: usize = 32 << 20;
/// Rate limit that keeps the transfer going for a few seconds.
const LIMIT: &str = "8M";
/// Where the fault is injected (bytes of the ZFS stream sent).
const FAULT_AT: u64 = 14 << 20;

struct Rig {
    src: Pool,
    dst: Pool,
    sshd: Sshd,
    state: PathBuf,
    zfs: String,
    ds: String,
    snap: String,
    target: String,
}

impl Rig {
    fn new() -> Rig {
        let src = Pool::create().unwrap();
        let dst = Pool::create().unwrap();
        let sshd = Sshd::start().unwrap();
        let state = dst.dir().join("standin-state");
        std::fs::create_dir_all(&state).unwrap();
        let zfs = standin_command(&state);
        let ds = src.create_dataset("data");
        src.write_file(&ds, "big.bin", &noise(31, PAYLOAD));
        src.write_file(&ds, "dir/small.txt", b"small file\n");
        let snap = src.snapshot(&format!("{ds}@s1"));
        let target = dst.ds("copy");
        Rig {
            src,
            dst,
            sshd,
            state,
            zfs,
            ds,
            snap,
            target,
        }
    }

    fn ssh(&self) -> String {
        faults::ssh_option_line(&self.sshd)
    }

    /// `zsend-wrap --to` with the stand-in on both sides; `send` is the
    /// snapshot or `-t TOKEN`.
    fn push(&self, send: &[&str], extra: &[&str]) -> Command {
        let mut c = Command::new(bin("zsend-wrap"));
        c.args([
            "--compress",
            "off",
            "--zfs",
            &self.zfs,
            "--ssh",
            &self.ssh(),
        ])
        .arg("--remote-zrecv")
        .arg(bin("zrecv-wrap"))
        .arg(format!("--recv-arg=--zfs={}", self.zfs))
        .arg("--recv-arg=--quiet")
        .args(extra)
        .args(send)
        .arg("--to")
        .arg(format!("{}:{}", self.sshd.destination(), self.target))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
        c
    }

    /// `zrecv-wrap --from` with the stand-in on both sides, through `ssh`.
    fn pull(&self, ssh: &str, extra: &[&str]) -> Command {
        let remote_zfs = standin_command(&self.state);
        let mut c = Command::new(bin("zrecv-wrap"));
        c.args(["--zfs", &self.zfs, "--ssh", ssh])
            .args(["--remote-zfs", &remote_zfs])
            .arg("--remote-zsend")
            .arg(bin("zsend-wrap"))
            .arg("--from")
            .arg(format!("{}:{}", self.sshd.destination(), self.ds))
            .args(extra)
            .arg(&self.target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        c
    }

    /// The partial receive's token, once the receiving side has wound down.
    fn token(&self) -> String {
        let mut token = String::new();
        let got = faults::wait_until(Duration::from_secs(60), || {
            token = standin_token(&self.state, &self.target);
            token.starts_with("1-")
        });
        assert!(got, "no resume token on {}: {token:?}", self.target);
        token
    }

    /// The destination is the source: guid and every file's bytes.
    fn assert_identical(&self) {
        assert_eq!(
            self.dst.guid(&format!("{}@s1", self.target)),
            self.src.guid(&self.snap)
        );
        let a = zpipe_tests::zfs::mountpoint_of(&self.ds);
        let b = zpipe_tests::zfs::mountpoint_of(&self.target);
        same_tree(&a, &b).unwrap_or_else(|e| panic!("data differs after resume: {e}"));
        assert_eq!(standin_token(&self.state, &self.target), "-");
    }

    /// No process of the wrapper's group is left, and no remote session.
    fn assert_no_leftovers(&self, what: &str, pgid: u32) {
        assert!(
            faults::wait_until(Duration::from_secs(5), || group_members(pgid).is_empty()),
            "{what}: left running: {:?}",
            named(&group_members(pgid))
        );
        let sshd = faults::sshd_pid(&self.sshd);
        let remote = || {
            faults::descendants(sshd)
                .into_iter()
                .filter(|&p| faults::live(p) && faults::comm(p) != "sshd")
                .collect::<Vec<_>>()
        };
        assert!(
            faults::wait_until(Duration::from_secs(20), || remote().is_empty()),
            "{what}: remote processes left: {:?}",
            named(&remote())
        );
    }
}

fn named(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .map(|&p| format!("{p} {}", faults::comm(p)))
        .collect()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a push to its fault: starts it with progress lines, waits for
/// [`FAULT_AT`] bytes, calls `fault(wrapper pid)`, and returns the exit
/// code and the non-progress stderr.
fn push_with_fault(rig: &Rig, extra: &[&str], fault: impl FnOnce(u32)) -> (Option<i32>, String) {
    let mut args = vec!["--limit", LIMIT, "--interval", "100ms"];
    args.extend_from_slice(extra);
    let mut child = rig.push(&[&rig.snap], &args).spawn().unwrap();
    let log = StderrLog::start(child.stderr.take().unwrap());
    assert!(
        log.wait_for_bytes(FAULT_AT, Duration::from_secs(60)),
        "no progress"
    );
    let pid = child.id();
    fault(pid);
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let status = match status {
        Some(s) => s,
        None => {
            let left = named(&faults::descendants(pid));
            let _ = child.kill();
            panic!("the wrapper hangs after the fault; its children: {left:?}");
        }
    };
    let err = log.finish();
    rig.assert_no_leftovers("push", pid);
    (status.code(), err)
}

/// Kills (SIGKILL) the sshd session process serving the remote `command`
/// under the listener `sshd`: the nearest sshd above it.
fn kill_session_of(sshd: u32, command: &str) {
    let remote = find_descendant(sshd, command, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the remote {command}"));
    let mut p = faults::parent(remote);
    while faults::comm(p) != "sshd" {
        p = faults::parent(p);
    }
    assert_ne!(p, sshd, "the listener is not the session");
    faults::signal(p, Signal::KILL);
}

/// Resumes a push with the token and checks the result.
fn resume_push(rig: &Rig, err: &str) {
    assert!(
        err.contains("zsend-wrap -t") && err.contains("receive_resume_token"),
        "no resume command: {err}"
    );
    let token = rig.token();
    let o = rig.push(&["-t", &token], &["--quiet"]).output().unwrap();
    assert!(o.status.success(), "resume failed: {}", text(&o));
    rig.assert_identical();
}

#[test]
fn push_ssh_client_killed_exits_4_and_resumes_identically() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let (code, err) = push_with_fault(&rig, &[], |pid| {
        let ssh = find_descendant(pid, "ssh", Duration::from_secs(5)).expect("ssh child");
        faults::signal(ssh, Signal::KILL);
    });
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("zsend-wrap: remote side"), "{err}");
    resume_push(&rig, &err);
}

#[test]
fn push_sshd_session_killed_exits_4_and_resumes_identically() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let sshd = faults::sshd_pid(&rig.sshd);
    let (code, err) = push_with_fault(&rig, &[], |_| kill_session_of(sshd, "zrecv-wrap"));
    assert_eq!(code, Some(4), "{err}");
    resume_push(&rig, &err);
}

#[test]
fn push_stalled_link_times_out_with_exit_3_and_resumes_identically() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let mut paused = 0;
    let (code, err) = push_with_fault(&rig, &["--stall-timeout", "2s"], |pid| {
        // The ssh client stops reading: the link is stalled.
        paused = find_descendant(pid, "ssh", Duration::from_secs(5)).expect("ssh child");
        faults::signal(paused, Signal::STOP);
    });
    assert!(!faults::live(paused), "the paused ssh was left behind");
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("stall"), "{err}");
    resume_push(&rig, &err);
}

/// Runs a pull to its fault; returns the exit code and stderr.
fn pull_with_fault(rig: &Rig, extra: &[&str], fault: impl FnOnce(u32)) -> (Option<i32>, String) {
    // The wire itself is slow (pv in the ssh command): zrecv-wrap holds
    // several MiB in its stages, so a limit on its own meter would let the
    // remote sender finish long before the fault.
    let mut args = vec!["--interval", "100ms"];
    args.extend_from_slice(extra);
    let slow = format!("sh -c '{} \"$@\" | pv -q -L {LIMIT}' sh", rig.ssh());
    let mut child = rig.pull(&slow, &args).spawn().unwrap();
    let log = StderrLog::start(child.stderr.take().unwrap());
    assert!(
        log.wait_for_bytes(FAULT_AT / 2, Duration::from_secs(60)),
        "no progress: {}",
        log.finish()
    );
    let pid = child.id();
    eprintln!(
        "pull at the fault: local {:?}, remote {:?}",
        named(&faults::descendants(pid)),
        named(&faults::descendants(faults::sshd_pid(&rig.sshd)))
    );
    fault(pid);
    let status = match wait_timeout(&mut child, Duration::from_secs(60)) {
        Some(s) => s,
        None => {
            let left = named(&faults::descendants(pid));
            let _ = child.kill();
            panic!("the pull hangs after the fault; its children: {left:?}");
        }
    };
    let err = log.finish();
    rig.assert_no_leftovers("pull", pid);
    (status.code(), err)
}

/// The next pull resumes (json: first send is a resume) and completes.
fn resume_pull(rig: &Rig, err: &str) {
    assert!(err.contains("resum"), "no word on resuming: {err}");
    assert!(rig.token().starts_with("1-"));
    let report = rig.dst.dir().join("resume.json");
    let o = rig
        .pull(&rig.ssh(), &["--quiet", "--json", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "resumed pull failed: {}", text(&o));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(j["sends"][0]["kind"], "resume", "{j}");
    rig.assert_identical();
}

#[test]
fn pull_ssh_client_killed_reports_the_cut_and_the_next_run_resumes() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let (code, err) = pull_with_fault(&rig, &[], |pid| {
        let ssh = find_descendant(pid, "ssh", Duration::from_secs(5)).expect("ssh child");
        faults::signal(ssh, Signal::KILL);
    });
    // The stream was cut (2); a bare ssh also fails itself (its words are
    // added), here the ssh command is a pipe through pv that ends cleanly.
    assert!(matches!(code, Some(2) | Some(4)), "{err}");
    assert!(err.contains("truncated"), "{err}");
    resume_pull(&rig, &err);
}

#[test]
fn pull_sshd_session_killed_reports_the_cut_and_the_next_run_resumes() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let sshd = faults::sshd_pid(&rig.sshd);
    let (code, err) = pull_with_fault(&rig, &[], |_| kill_session_of(sshd, "zsend-wrap"));
    // As with a killed client: the stream is cut (2), or ssh's own failure
    // is reported (4).
    assert!(matches!(code, Some(2) | Some(4)), "{err}");
    assert!(err.contains("truncated") || err.contains("ssh"), "{err}");
    resume_pull(&rig, &err);
}

#[test]
fn pull_stalled_sender_times_out_with_exit_3_and_the_next_run_resumes() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let sshd = faults::sshd_pid(&rig.sshd);
    let mut paused = 0;
    let (code, err) = pull_with_fault(&rig, &["--stall-timeout", "2s"], |_| {
        paused = find_descendant(sshd, "zsend-wrap", Duration::from_secs(5))
            .expect("the remote zsend-wrap");
        faults::signal(paused, Signal::STOP);
        // Once the wrapper gave up, the paused sender is let go, as a hung
        // host that recovers: it must find its reader gone and end.
        let p = paused;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(6));
            faults::signal(p, Signal::CONT);
        });
    });
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("stall"), "{err}");
    resume_pull(&rig, &err);
}
