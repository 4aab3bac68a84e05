//! `zrecv-wrap --from` (pull mode) against real zfs-fuse pools through the
//! kit's real sshd: guid-matched full and incremental runs, `--check`,
//! `--dry-run`, `--json`, a diverged destination refused and recovered
//! with `--force`, a source snapshot deleted between runs, restore back to
//! the source, the plain `zfs send` fallback, pruning that spares holds and
//! the newest common snapshot, resume of a cut transfer with the stand-in
//! zfs on both sides, and a stale partial receive discarded (`recv -A`).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use zpipe_tests::data::noise;
use zpipe_tests::{bin, require, shell_join, Pool, Sshd};

/// Size of the file whose transfer is cut: six 4 MiB compression blocks.
/// The decompressor hands a decoded block on only when it submits a later
/// one (and drops what it drains at a truncated end), so the cut must come
/// a few blocks in for zfs recv to have received something.
const BIG: usize = 24 << 20;
/// Where the link dies, in bytes of ssh output (inside the sixth block).
const CUT: usize = 22_000_000;

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}{}",
        o.status,
        text(o),
        stdout(o)
    );
}

/// Two pools and an sshd; the destination pool has atime off, so reading
/// received files does not count as a change.
struct Rig {
    src: Pool,
    dst: Pool,
    sshd: Sshd,
}

impl Rig {
    fn new() -> Rig {
        let src = Pool::create().unwrap();
        let dst = Pool::create().unwrap();
        zpipe_tests::run_ok(Command::new(zpipe_tests::zfs::zfs_program()).args([
            "set",
            "atime=off",
            dst.name(),
        ]));
        let sshd = Sshd::start().unwrap();
        Rig { src, dst, sshd }
    }

    /// `--ssh` value reaching the sshd with `key` (the default key if None).
    fn ssh(&self, key: Option<&Path>) -> String {
        let mut argv = vec!["ssh".to_string()];
        argv.extend(
            self.sshd
                .ssh_options_with_key(key.unwrap_or(self.sshd.key())),
        );
        shell_join(&argv)
    }

    fn from(&self, ds: &str) -> String {
        format!("{}:{ds}", self.sshd.destination())
    }

    /// `zrecv-wrap --quiet --ssh … --from HOST:src <extra> dst`.
    fn pull(&self, src: &str, dst: &str, extra: &[&str]) -> Output {
        self.pull_with(None, src, dst, extra)
    }

    fn pull_with(&self, key: Option<&Path>, src: &str, dst: &str, extra: &[&str]) -> Output {
        Command::new(bin("zrecv-wrap"))
            .args([
                "--quiet",
                "--ssh",
                &self.ssh(key),
                "--from",
                &self.from(src),
            ])
            .args(extra)
            .arg(dst)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// (short name, guid) of a dataset's snapshots, oldest first.
fn snaps(pool: &Pool, ds: &str) -> Vec<(String, u64)> {
    pool.snapshots(ds)
        .into_iter()
        .map(|(n, g, _)| (n.split_once('@').unwrap().1.to_string(), g))
        .collect()
}

fn names(pool: &Pool, ds: &str) -> Vec<String> {
    snaps(pool, ds).into_iter().map(|(n, _)| n).collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn pull_replicates_by_guid_and_check_alerts_when_behind() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let ds = rig.src.create_dataset("home");
    rig.src.write_file(&ds, "a", &noise(1, 300_000));
    rig.src.snapshot(&format!("{ds}@s1"));
    rig.src.write_file(&ds, "b", &noise(2, 200_000));
    rig.src.snapshot(&format!("{ds}@s2"));
    let dst = rig.dst.ds("backup/home");
    rig.dst.create_dataset("backup");

    let o = rig.pull(&ds, &dst, &[]);
    assert_ok("first pull", &o);
    assert_eq!(snaps(&rig.dst, &dst), snaps(&rig.src, &ds));

    let o = rig.pull(&ds, &dst, &["--check"]);
    assert_ok("check", &o);
    assert!(
        stdout(&o).contains("newest source snapshot s2"),
        "{}",
        stdout(&o)
    );

    rig.src.write_file(&ds, "c", &noise(3, 100_000));
    rig.src.snapshot(&format!("{ds}@s3"));
    let o = rig.pull(&ds, &dst, &["--check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("missing") && text(&o).contains("@s3"),
        "{}",
        text(&o)
    );

    let o = rig.pull(&ds, &dst, &["--dry-run"]);
    assert_ok("dry run", &o);
    assert!(
        stdout(&o).contains(&format!(
            "send incremental -i {ds}@s2 {ds}@s3 (size unknown)"
        )),
        "{}",
        stdout(&o)
    );
    assert_eq!(names(&rig.dst, &dst), ["s1", "s2"]);

    let report = rig.dst.dir().join("run.json");
    let o = rig.pull(&ds, &dst, &["--json", report.to_str().unwrap()]);
    assert_ok("second pull", &o);
    assert_eq!(snaps(&rig.dst, &dst), snaps(&rig.src, &ds));
    assert!(rig.dst.read_file(&dst, "c") == noise(3, 100_000));
    let j = json(&report);
    assert_eq!(j["result"], "success");
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["sends"][0]["kind"], "incremental");
    assert_eq!(j["sends"][0]["from"], format!("{ds}@s2"));
    assert_eq!(j["sends"][0]["to"], format!("{ds}@s3"));
    assert_eq!(j["sends"][0]["via"], "zsend-wrap");
    assert!(j["bytes"].as_u64().unwrap() > 100_000, "{j}");

    // Up to date: nothing to do, still success.
    let o = rig.pull(&ds, &dst, &[]);
    assert_ok("third pull", &o);

    // Restore: pull the backup back to the source side (the same tool in
    // the other direction) and compare data and guids.
    let restored = rig.src.ds("restored");
    let o = Command::new(bin("zrecv-wrap"))
        .args([
            "--quiet",
            "--ssh",
            &rig.ssh(None),
            "--from",
            &rig.from(&dst),
        ])
        .arg(&restored)
        .output()
        .unwrap();
    assert_ok("restore pull", &o);
    assert_eq!(snaps(&rig.src, &restored), snaps(&rig.src, &ds));
    for (f, seed, len) in [("a", 1, 300_000), ("b", 2, 200_000), ("c", 3, 100_000)] {
        assert!(rig.src.read_file(&restored, f) == noise(seed, len), "{f}");
    }
}

#[test]
fn diverged_destination_is_refused_and_force_recovers() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let ds = rig.src.create_dataset("data");
    rig.src.write_file(&ds, "f", &noise(5, 200_000));
    rig.src.snapshot(&format!("{ds}@s1"));
    let dst = rig.dst.ds("copy");
    assert_ok("first pull", &rig.pull(&ds, &dst, &[]));

    rig.dst.write_file(&dst, "stray", b"made on the backup");
    rig.dst.snapshot(&format!("{dst}@local"));
    rig.src.write_file(&ds, "g", &noise(6, 100_000));
    rig.src.snapshot(&format!("{ds}@s2"));

    let o = rig.pull(&ds, &dst, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    for word in ["diverged", "local", "s1", "--force"] {
        assert!(err.contains(word), "{word}: {err}");
    }
    assert_eq!(names(&rig.dst, &dst), ["s1", "local"]);

    let report = rig.dst.dir().join("force.json");
    let o = rig.pull(&ds, &dst, &["--force", "--json", report.to_str().unwrap()]);
    assert_ok("pull --force", &o);
    assert_eq!(snaps(&rig.dst, &dst), snaps(&rig.src, &ds));
    assert!(!rig.dst.mountpoint().join("copy/stray").exists());
    assert!(rig.dst.read_file(&dst, "g") == noise(6, 100_000));
    let j = json(&report);
    assert_eq!(j["discarded"][0], format!("{dst}@local"), "{j}");
}

#[test]
fn deleted_source_snapshot_replicates_from_an_older_common_one() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let ds = rig.src.create_dataset("data");
    rig.src.write_file(&ds, "f", &noise(7, 200_000));
    rig.src.snapshot(&format!("{ds}@s1"));
    rig.src.write_file(&ds, "g", &noise(8, 100_000));
    rig.src.snapshot(&format!("{ds}@s2"));
    let dst = rig.dst.ds("copy");
    assert_ok("first pull", &rig.pull(&ds, &dst, &[]));

    // s2, the newest common snapshot, goes away on the source; s3 comes.
    zpipe_tests::run_ok(
        Command::new(zpipe_tests::zfs::zfs_program()).args(["destroy", &format!("{ds}@s2")]),
    );
    rig.src.write_file(&ds, "h", &noise(9, 100_000));
    rig.src.snapshot(&format!("{ds}@s3"));

    // The source has no zsend-wrap by that name: plain zfs send is used.
    let report = rig.dst.dir().join("run.json");
    let o = rig.pull(
        &ds,
        &dst,
        &[
            "--remote-zsend",
            "no-such-zsend-wrap",
            "--json",
            report.to_str().unwrap(),
        ],
    );
    assert_ok("pull after the deletion", &o);
    assert_eq!(snaps(&rig.dst, &dst), snaps(&rig.src, &ds));
    assert_eq!(names(&rig.dst, &dst), ["s1", "s3"]);
    assert!(rig.dst.read_file(&dst, "h") == noise(9, 100_000));
    let j = json(&report);
    assert_eq!(j["common"], format!("{ds}@s1"), "{j}");
    assert_eq!(j["sends"][0]["from"], format!("{ds}@s1"), "{j}");
    assert_eq!(j["sends"][0]["via"], "zfs send", "{j}");
    assert_eq!(j["discarded"][0], format!("{dst}@s2"), "{j}");
}

#[test]
fn pruning_spares_holds_foreign_names_and_the_newest_common_snapshot() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let ds = rig.src.create_dataset("data");
    let fmt = "zpipe-%Y%m%d-%H%M";
    for (i, name) in [
        "zpipe-20260101-0000",
        "handmade",
        "zpipe-20260105-0000",
        "zpipe-20260110-0000",
    ]
    .iter()
    .enumerate()
    {
        rig.src
            .write_file(&ds, &format!("f{i}"), &noise(i as u64, 50_000));
        rig.src.snapshot(&format!("{ds}@{name}"));
    }
    let dst = rig.dst.ds("copy");
    assert_ok("first pull", &rig.pull(&ds, &dst, &[]));
    zpipe_tests::run_ok(Command::new(zpipe_tests::zfs::zfs_program()).args([
        "hold",
        "keep",
        &format!("{dst}@zpipe-20260105-0000"),
    ]));
    // Two months later every dated snapshot is older than 30 days.
    let prune = [
        "--prune-format",
        fmt,
        "--snapshot-time",
        "2026-03-10T00:00:00Z",
        "--prune-older-than",
        "30d",
        "--prune-source-older-than",
        "30d",
    ];
    let mut dry: Vec<&str> = prune.to_vec();
    dry.push("--dry-run");
    let o = rig.pull(&ds, &dst, &dry);
    assert_ok("dry run", &o);
    let plan = stdout(&o);
    assert!(
        plan.contains(&format!("destroy {dst}@zpipe-20260101-0000")),
        "{plan}"
    );
    assert!(plan.contains("keep") && plan.contains("hold"), "{plan}");
    assert!(plan.contains("newest common"), "{plan}");
    assert_eq!(names(&rig.dst, &dst).len(), 4);

    let report = rig.dst.dir().join("prune.json");
    let mut real: Vec<&str> = prune.to_vec();
    real.extend(["--json", report.to_str().unwrap()]);
    assert_ok("pull with pruning", &rig.pull(&ds, &dst, &real));
    assert_eq!(
        names(&rig.dst, &dst),
        ["handmade", "zpipe-20260105-0000", "zpipe-20260110-0000"]
    );
    assert_eq!(
        names(&rig.src, &ds),
        ["handmade", "zpipe-20260110-0000"],
        "the source has no hold on 0105"
    );
    let j = json(&report);
    assert_eq!(
        j["pruned_destination"][0],
        format!("{dst}@zpipe-20260101-0000")
    );
    assert_eq!(j["pruned_source"].as_array().unwrap().len(), 2, "{j}");
    zpipe_tests::run_ok(Command::new(zpipe_tests::zfs::zfs_program()).args([
        "release",
        "keep",
        &format!("{dst}@zpipe-20260105-0000"),
    ]));
}

#[test]
fn cut_pull_resumes_with_the_standin_zfs_on_both_sides() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let ds = rig.src.create_dataset("big");
    rig.src.write_file(&ds, "f", &noise(11, BIG));
    rig.src.snapshot(&format!("{ds}@s1"));
    rig.src.write_file(&ds, "g", &noise(12, 200_000));
    rig.src.snapshot(&format!("{ds}@s2"));
    let dst = rig.dst.ds("copy");
    let standin = bin("zfs-standin");
    let state = rig.dst.dir().join("standin-state");
    // The source side runs the stand-in through a forced-command serve key.
    let key = rig
        .sshd
        .add_key(&format!(
            "restrict,command=\"zsend-wrap --serve --allow {} --zfs {}\"",
            ds,
            standin.display()
        ))
        .unwrap();
    let run = |ssh: &str, extra: &[&str]| {
        Command::new(bin("zrecv-wrap"))
            .args(["--quiet", "--zfs", standin.to_str().unwrap(), "--ssh", ssh])
            .args(["--from", &rig.from(&ds)])
            .args(extra)
            .arg(&dst)
            .env("ZPIPE_REAL_ZFS", zpipe_tests::zfs::zfs_program())
            .env("ZPIPE_STANDIN_STATE", &state)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // A link that dies after CUT bytes: ssh's output is cut by `head -c`.
    // The end of input comes a moment later, as on a real dead link, so the
    // verified frames before the cut have reached zfs recv by then.
    let ssh = rig.ssh(Some(&key));
    let cut = format!("sh -c '{ssh} \"$@\" | head -c {CUT}; sleep 2' sh");
    let o = run(&cut, &[]);
    assert!(!o.status.success(), "the cut pull succeeded: {}", text(&o));
    let token = Command::new(&standin)
        .args(["get", "-H", "-o", "value", "receive_resume_token", &dst])
        .env("ZPIPE_STANDIN_STATE", &state)
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    assert!(
        token.len() > 10 && token != "-",
        "no token after the cut: {}",
        text(&o)
    );

    let o = run(&ssh, &["--dry-run"]);
    assert_ok("dry run after the cut", &o);
    let plan = stdout(&o);
    assert!(plan.contains("resume the partial receive"), "{plan}");
    assert!(
        plan.contains(&format!("send incremental -i {ds}@s1 {ds}@s2")) && !plan.contains("full"),
        "{plan}"
    );

    let report = rig.dst.dir().join("resume.json");
    let o = run(&ssh, &["--json", report.to_str().unwrap()]);
    assert_ok("resumed pull", &o);
    assert_eq!(snaps(&rig.dst, &dst), snaps(&rig.src, &ds));
    assert!(rig.dst.read_file(&dst, "f") == noise(11, BIG));
    let j = json(&report);
    assert_eq!(j["sends"][0]["kind"], "resume", "{j}");
    assert_eq!(j["sends"][0]["to"], format!("{ds}@s1"), "{j}");
    assert_eq!(j["sends"][1]["kind"], "incremental", "{j}");
}

#[test]
fn stale_resume_token_is_discarded_and_the_run_goes_on() {
    require!(zfs, sshd);
    let rig = Rig::new();
    let ds = rig.src.create_dataset("big");
    rig.src.write_file(&ds, "f", &noise(21, BIG));
    rig.src.snapshot(&format!("{ds}@s1"));
    let dst = rig.dst.ds("copy");
    let standin = bin("zfs-standin");
    let state = rig.dst.dir().join("standin-state");
    let run = |ssh: &str, extra: &[&str]| {
        Command::new(bin("zrecv-wrap"))
            .args(["--quiet", "--zfs", standin.to_str().unwrap(), "--ssh", ssh])
            .args(["--from", &rig.from(&ds)])
            .args(extra)
            .arg(&dst)
            .env("ZPIPE_REAL_ZFS", zpipe_tests::zfs::zfs_program())
            .env("ZPIPE_STANDIN_STATE", &state)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ssh = rig.ssh(None);
    let cut = format!("sh -c '{ssh} \"$@\" | head -c {CUT}; sleep 2' sh");
    let o = run(&cut, &[]);
    assert!(!o.status.success(), "the cut pull succeeded: {}", text(&o));
    // The token's snapshot disappears on the source; a new one comes.
    zpipe_tests::run_ok(
        Command::new(zpipe_tests::zfs::zfs_program()).args(["destroy", &format!("{ds}@s1")]),
    );
    rig.src.write_file(&ds, "g", &noise(22, 100_000));
    rig.src.snapshot(&format!("{ds}@s2"));
    let report = rig.dst.dir().join("abort.json");
    let o = run(&ssh, &["--json", report.to_str().unwrap()]);
    assert_ok("pull after the stale token", &o);
    let j = json(&report);
    assert_eq!(j["aborted_partial"], dst.as_str(), "{j}");
    assert_eq!(j["sends"][0]["kind"], "full", "{j}");
    assert_eq!(j["sends"][0]["to"], format!("{ds}@s2"), "{j}");
    assert_eq!(snaps(&rig.dst, &dst), snaps(&rig.src, &ds));
    assert!(rig.dst.read_file(&dst, "g") == noise(22, 100_000));
}
