//! SIGINT and SIGTERM mid-stream, to each tool and each wrapper: the exit
//! code is 130 or 143, the children (`zfs`, `ssh`) are stopped, nothing of
//! the tool's process group is left running, and nothing reports success:
//! the other end of the transfer fails and no snapshot appears.
//!
//! Every process under test runs in a process group of its own, so "no
//! orphan" is checked by listing the group after the tool exited; the
//! pids of its children, taken while it ran, must all be gone too.

use rustix::process::Signal;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use zpipe_tests::data::noise;
use zpipe_tests::faults::{self, descendants, feed, group_members, live, wait_timeout, Drain};
use zpipe_tests::{bin, require, Pool, Sshd};

/// How long a signalled tool may take to exit (SIGNAL_GRACE is 3 s).
const EXIT_WITHIN: Duration = Duration::from_secs(6);

fn code_for(sig: Signal) -> i32 {
    if sig == Signal::INT {
        130
    } else {
        143
    }
}

fn name(sig: Signal) -> &'static str {
    if sig == Signal::INT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

/// Signals `child` (running in its own process group) and checks the
/// exit code, the "stopped by" line, and that no process of its group or
/// of its tree (as listed before the signal) is left.
fn signal_and_check(what: &str, child: &mut Child, sig: Signal) -> String {
    let pid = child.id();
    let tree = descendants(pid);
    faults::signal(pid, sig);
    let status = wait_timeout(child, EXIT_WITHIN)
        .unwrap_or_else(|| panic!("{what}: still running {EXIT_WITHIN:?} after {}", name(sig)));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(
        status.code(),
        Some(code_for(sig)),
        "{what}: {} gave {status}: {err}",
        name(sig)
    );
    assert!(
        err.contains(&format!("stopped by {}", name(sig))),
        "{what}: {err}"
    );
    let left = || {
        let mut v: Vec<u32> = group_members(pid);
        v.extend(tree.iter().copied().filter(|&p| live(p)));
        v.sort_unstable();
        v.dedup();
        v
    };
    assert!(
        faults::wait_until(Duration::from_secs(3), || left().is_empty()),
        "{what}: left running after {}: {:?}",
        name(sig),
        left()
            .into_iter()
            .map(|p| format!("{p} {}", faults::comm(p)))
            .collect::<Vec<_>>()
    );
    err
}

/// Each filter, mid-stream between a fast producer and a slow consumer.
#[test]
fn filters_exit_130_or_143_mid_stream() {
    let cases: [(&str, &[&str]); 6] = [
        ("zpipe-meter", &["-q"]),
        ("zpipe-meter", &["-q", "-B", "8M"]),
        ("zpipe-compress", &["-3"]),
        ("zpipe-compress", &["-d"]),
        ("zpipe-verify", &[]),
        ("zpipe-verify", &["-d"]),
    ];
    for (i, (tool, args)) in cases.iter().enumerate() {
        for sig in [Signal::INT, Signal::TERM] {
            let what = format!("{tool} {}", args.join(" "));
            // `-d` needs an encoded input: make one with the same tool.
            let input = if args.contains(&"-d") {
                let encode: &[&str] = if *tool == "zpipe-compress" {
                    &["-1"]
                } else {
                    &[]
                };
                let mut c = Command::new(bin(tool))
                    .args(encode)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let f = feed(c.stdin.take().unwrap(), 3, 64 << 20);
                let o = c.wait_with_output().unwrap();
                f.join().unwrap();
                Some(o.stdout)
            } else {
                None
            };
            let mut child = Command::new(bin(tool))
                .args(*args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            let producer = match input {
                Some(data) => std::thread::spawn(move || {
                    use std::io::Write;
                    let mut s = stdin;
                    let _ = s.write_all(&data);
                    0
                }),
                None => feed(stdin, i as u64, u64::MAX),
            };
            let drain = Drain::start(
                child.stdout.take().unwrap(),
                64 << 10,
                Duration::from_millis(2),
            );
            assert!(
                drain.wait_for(4 << 20, Duration::from_secs(30)),
                "{what}: no data flowed"
            );
            let t = std::time::Instant::now();
            signal_and_check(&what, &mut child, sig);
            // At once, not after the signal watcher's 3 s grace: every wait
            // of the tools polls and looks at the signal.
            let took = t.elapsed();
            eprintln!("{what} {}: stopped in {took:.2?}", name(sig));
            assert!(took < Duration::from_millis(1500), "{what}: took {took:?}");
            drain.join();
            producer.join().unwrap();
        }
    }
}

/// Two pools with a dataset whose send takes a few seconds at `--limit 8M`.
struct Rig {
    src: Pool,
    dst: Pool,
    snap: String,
    target: String,
}

impl Rig {
    fn new() -> Rig {
        let src = Pool::create().unwrap();
        let dst = Pool::create().unwrap();
        let ds = src.create_dataset("data");
        src.write_file(&ds, "f", &noise(9, 32 << 20));
        let snap = src.snapshot(&format!("{ds}@s1"));
        let target = dst.ds("copy");
        Rig {
            src,
            dst,
            snap,
            target,
        }
    }

    /// No snapshot of the target exists (nothing was reported as received).
    fn assert_nothing_received(&self, what: &str) {
        let out = zpipe_tests::zfs::zfs([
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "snapshot",
            "-r",
            self.dst.name(),
        ]);
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !listed.contains(&format!("{}@", self.target)),
            "{what}: a snapshot appeared: {listed}"
        );
        let _ = zpipe_tests::zfs::zfs(["destroy", "-r", &self.target]);
    }
}

fn wait_for_child(pid: u32, comm: &str) -> bool {
    faults::wait_until(Duration::from_secs(20), || {
        descendants(pid)
            .into_iter()
            .any(|p| faults::comm(p) == comm)
    })
}

/// zsend-wrap | zrecv-wrap locally; each of them signalled in turn.
#[test]
fn local_wrappers_stop_zfs_and_report_no_success() {
    require!(zfs);
    let rig = Rig::new();
    for (victim, sig) in [
        ("zsend-wrap", Signal::INT),
        ("zrecv-wrap", Signal::TERM),
        ("zsend-wrap", Signal::TERM),
        ("zrecv-wrap", Signal::INT),
    ] {
        let what = format!("{victim} {}", name(sig));
        let mut s = Command::new(bin("zsend-wrap"))
            .args(["--quiet", "--compress", "off", "--limit", "8M", &rig.snap])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut r = Command::new(bin("zrecv-wrap"))
            .args(["--quiet", &rig.target])
            .stdin(s.stdout.take().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(wait_for_child(s.id(), "zfs") && wait_for_child(r.id(), "zfs"));
        std::thread::sleep(Duration::from_millis(1500));
        let (victim_child, other) = if victim == "zsend-wrap" {
            (&mut s, &mut r)
        } else {
            (&mut r, &mut s)
        };
        signal_and_check(&what, victim_child, sig);
        // The other side fails on its own, and stops its zfs too.
        let other_pid = other.id();
        let status = wait_timeout(other, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{what}: the other wrapper did not end"));
        assert!(!status.success(), "{what}: the other side reported success");
        assert!(
            faults::wait_until(Duration::from_secs(3), || group_members(other_pid)
                .is_empty()),
            "{what}: the other side left {:?}",
            group_members(other_pid)
        );
        rig.assert_nothing_received(&what);
    }
    drop(rig.src);
}

/// zsend-wrap --to and zrecv-wrap --from through the real sshd: the local
/// zfs and ssh are stopped, and the remote side winds down too.
#[test]
fn ssh_wrappers_stop_zfs_and_ssh_and_the_remote_side_ends() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let sshd = Sshd::start().unwrap();
    let ssh = faults::ssh_option_line(&sshd);
    let sshd_pid = faults::sshd_pid(&sshd);
    for (mode, sig) in [
        ("push", Signal::TERM),
        ("pull", Signal::INT),
        ("push", Signal::INT),
        ("pull", Signal::TERM),
    ] {
        let what = format!("{mode} {}", name(sig));
        let mut cmd = if mode == "push" {
            let mut c = Command::new(bin("zsend-wrap"));
            c.args([
                "--quiet",
                "--compress",
                "off",
                "--limit",
                "8M",
                "--ssh",
                &ssh,
            ])
            .arg("--remote-zrecv")
            .arg(bin("zrecv-wrap"))
            .arg("--recv-arg=--quiet")
            .arg(&rig.snap)
            .arg("--to")
            .arg(format!("{}:{}", sshd.destination(), rig.target));
            c
        } else {
            let mut c = Command::new(bin("zrecv-wrap"));
            c.args(["--quiet", "--limit", "8M", "--ssh", &ssh])
                .arg("--from")
                .arg(format!(
                    "{}:{}",
                    sshd.destination(),
                    rig.snap.split('@').next().unwrap()
                ))
                .arg(&rig.target);
            c
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        assert!(wait_for_child(child.id(), "ssh"), "{what}: no ssh child");
        // Mid-stream: both the local zfs and the remote tool run.
        assert!(wait_for_child(child.id(), "zfs"), "{what}: no zfs child");
        let remote = if mode == "push" {
            "zrecv-wrap"
        } else {
            "zsend-wrap"
        };
        assert!(
            wait_for_child(sshd_pid, remote),
            "{what}: no remote {remote}"
        );
        std::thread::sleep(Duration::from_millis(1500));
        signal_and_check(&what, &mut child, sig);
        // The remote session (its tool and its zfs) ends too.
        assert!(
            faults::wait_until(Duration::from_secs(15), || descendants(sshd_pid)
                .into_iter()
                .all(|p| !live(p) || faults::comm(p) == "sshd")),
            "{what}: remote processes left: {:?}",
            descendants(sshd_pid)
                .into_iter()
                .map(|p| format!("{p} {}", faults::comm(p)))
                .collect::<Vec<_>>()
        );
        rig.assert_nothing_received(&what);
    }
}
