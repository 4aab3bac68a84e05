//! examples/zfs-pull.sh and examples/restore-drill.sh, run unchanged with
//! hosts and datasets from the environment, against real zfs-fuse pools
//! and the kit's sshd with a forced-command serve key: ten runs whose
//! snapshot names spread over 40 days keep exactly the last 30 days plus
//! the newest common snapshot, identical by guid and content; the lock
//! skips an overlapping run; a failure logs one line and runs ALERT_CMD;
//! the restore drill matches checksums and catches a wrong snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use zpipe_tests::data::noise;
use zpipe_tests::{bin, bin_dir, path_with, require, shell_join, Pool, Sshd};

/// Seconds between runs: ten runs span 40 days.
const RUN_SPACING_SECS: i64 = 40 * 86_400 / 9;
/// The first run's time: 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

fn script(name: &str) -> PathBuf {
    zpipe_tests::bins::workspace_root()
        .join("examples")
        .join(name)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ssh_line(sshd: &Sshd, key: &Path) -> String {
    let mut argv = vec!["ssh".to_string()];
    argv.extend(sshd.ssh_options_with_key(key));
    shell_join(&argv)
}

/// The `zpipe-%Y%m%d-%H%M` name for epoch seconds `t` (UTC, as the tests run).
fn snap_name(t: i64) -> String {
    let days = t.div_euclid(DAY);
    let secs = t.rem_euclid(DAY);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "zpipe-{y:04}{m:02}{d:02}-{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// (short name, guid) of a dataset's snapshots, oldest first.
fn snaps(pool: &Pool, ds: &str) -> Vec<(String, u64)> {
    pool.snapshots(ds)
        .into_iter()
        .map(|(n, g, _)| (n.split_once('@').unwrap().1.to_string(), g))
        .collect()
}

struct Setup {
    src: Pool,
    dst: Pool,
    sshd: Sshd,
    ds: String,
    target: String,
    key: PathBuf,
    work: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let src = Pool::create().unwrap();
        let dst = Pool::create().unwrap();
        zpipe_tests::run_ok(Command::new(zpipe_tests::zfs::zfs_program()).args([
            "set",
            "atime=off",
            dst.name(),
        ]));
        let sshd = Sshd::start().unwrap();
        let ds = src.create_dataset("home");
        let target = dst.ds("backup");
        let key = sshd
            .add_key(&format!(
                "restrict,command=\"zsend-wrap --serve --allow {ds} --allow-snapshot --allow-prune\""
            ))
            .unwrap();
        let work = tempfile::tempdir().unwrap();
        Setup {
            src,
            dst,
            sshd,
            ds,
            target,
            key,
            work,
        }
    }

    /// Runs examples/zfs-pull.sh with the environment a cron line would set.
    fn pull(&self, env: &[(&str, String)]) -> Output {
        let mut c = Command::new("bash");
        c.arg(script("zfs-pull.sh"))
            .env("PATH", path_with(&[bin_dir()]))
            .env("SRC_HOST", self.sshd.destination())
            .env("SRC_DATASET", &self.ds)
            .env("DST_DATASET", &self.target)
            .env("SSH", ssh_line(&self.sshd, &self.key))
            .env("SNAP_FORMAT", "zpipe-%Y%m%d-%H%M")
            .env("KEEP", "30d")
            .env("LOCK_FILE", self.work.path().join("pull.lock"))
            .env("LOG_FILE", self.work.path().join("pull.log"))
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.work.path().join("pull.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn ten_runs_over_40_days_keep_the_last_30_days() {
    require!(zfs, sshd);
    let _ = bin("zrecv-wrap");
    let s = Setup::new();
    // Every snapshot's guid as the source made it (the source prunes too).
    let mut made: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = 0;
    for run in 0..10 {
        let t = T0 + run * RUN_SPACING_SECS;
        last = t;
        s.src
            .write_file(&s.ds, &format!("day-{run}"), &noise(run as u64, 60_000));
        let o = s.pull(&[
            ("SNAP_TIME", format!("@{t}")),
            ("KEEP_SOURCE", "10d".to_string()),
        ]);
        assert!(o.status.success(), "run {run}: {}", text(&o));
        for (n, g) in snaps(&s.src, &s.ds) {
            made.entry(n).or_insert(g);
        }
        assert_eq!(s.log().len(), run as usize + 1, "one log line per run");
    }
    let log = s.log();
    assert!(log.iter().all(|l| l.contains(": ok in ")), "{log:#?}");
    assert!(log[9].contains(&snap_name(last)), "{}", log[9]);

    let want: Vec<String> = (0..10)
        .map(|run| T0 + run * RUN_SPACING_SECS)
        .filter(|&t| t >= last - 30 * DAY)
        .map(snap_name)
        .collect();
    let got = snaps(&s.dst, &s.target);
    let names: Vec<String> = got.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, want, "destination keeps exactly the last 30 days");
    for (n, g) in &got {
        assert_eq!(made.get(n), Some(g), "{n} is the source's snapshot");
    }
    // The source keeps 10 days, and always the newest common snapshot.
    let src_names: Vec<String> = snaps(&s.src, &s.ds).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        src_names,
        [
            snap_name(last - RUN_SPACING_SECS * 2),
            snap_name(last - RUN_SPACING_SECS),
            snap_name(last)
        ]
    );
    for run in 0..10 {
        let f = format!("day-{run}");
        assert!(
            s.dst.read_file(&s.target, &f) == s.src.read_file(&s.ds, &f),
            "{f} differs"
        );
    }

    // The restore drill: clone, checksum both sides, compare, clean up.
    let drill = |src_ds: &str| {
        Command::new("bash")
            .arg(script("restore-drill.sh"))
            .env("PATH", path_with(&[bin_dir()]))
            .env("SRC_HOST", s.sshd.destination())
            .env("SRC_DATASET", src_ds)
            .env("DST_DATASET", &s.target)
            .env("SRC_SSH", ssh_line(&s.sshd, s.sshd.key()))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = drill(&s.ds);
    assert!(o.status.success(), "restore drill: {}", text(&o));
    assert!(
        text(&o).contains("10 files, checksums match"),
        "{}",
        text(&o)
    );
    // A same-named snapshot of another dataset is not the backup's source.
    let other = s.src.create_dataset("other");
    s.src.write_file(&other, "x", b"other");
    s.src.snapshot(&format!("{other}@{}", snap_name(last)));
    let o = drill(&other);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a copy"), "{}", text(&o));
    // No clone is left behind on either side.
    for pool in [&s.src, &s.dst] {
        let list = zpipe_tests::run_ok(Command::new(zpipe_tests::zfs::zfs_program()).args([
            "list",
            "-H",
            "-o",
            "name",
            "-r",
            pool.name(),
        ]));
        assert!(!list.contains("restore-drill"), "{list}");
    }
}

#[test]
fn overlapping_run_is_skipped_and_failure_alerts() {
    require!(zfs, sshd);
    let _ = bin("zrecv-wrap");
    let s = Setup::new();
    s.src.write_file(&s.ds, "f", b"data");
    let lock = std::fs::File::create(s.work.path().join("pull.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let o = s.pull(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(s.log()[0].contains("skipped"), "{:?}", s.log());
    assert!(
        s.src.snapshots(&s.ds).is_empty(),
        "a skipped run took a snapshot"
    );
    drop(lock);

    let alert = s.work.path().join("alert");
    let o = s.pull(&[
        ("SRC_DATASET", format!("{}/nonexistent", s.src.name())),
        (
            "ALERT_CMD",
            format!(
                "cat > {}; echo \"$ZFS_PULL_EXIT\" >> {}",
                alert.display(),
                alert.display()
            ),
        ),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log = s.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].contains("FAILED (exit 1)"), "{}", log[1]);
    assert!(log[1].contains("refused"), "{}", log[1]);
    let a = std::fs::read_to_string(&alert).unwrap();
    assert!(a.starts_with(&log[1]) && a.ends_with("1\n"), "{a}");
}
