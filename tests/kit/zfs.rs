//! Real ZFS for tests: the zfs-fuse daemon, file-backed pools with unique
//! names, and helpers over the real `zfs`/`zpool` programs.
//!
//! - The daemon is shared by the whole machine. [`ensure_daemon`] starts
//!   `zfs-fuse --no-daemon` (detached in its own process group, log in
//!   [`DAEMON_LOG`]) only when no `zfs-fuse` process runs, and waits until
//!   `zpool list` answers. It is never stopped by the kit: other test
//!   processes may use it at the same time.
//! - A [`Pool`] lives on a sparse file in its own temp dir and is mounted
//!   under that dir. Its name is `zpipetest-<pid>-<counter>`, unique across
//!   threads and processes. Dropping it (also while a test panics) runs
//!   `zpool destroy -f`, retried while the pool is busy. Before the first
//!   pool of a process, [`sweep_stale_pools`] destroys kit pools left by
//!   dead processes or whose backing files are gone.
//! - Pool creation and destruction hold the machine-wide lock
//!   [`LOCK_PATH`]: zfs-fuse answers "pool is busy" when they overlap.
//! - zfs-fuse 0.7 has no `zfs list -p`; exact numbers come from
//!   `zfs get -Hp -o name,property,value … -r`.
//! - The kit always runs the real programs by absolute path, so a test that
//!   puts a stand-in `zfs` first on `PATH` does not change the kit.
//!
//! Dataset arguments of [`Pool`] methods may be full names (`<pool>/a@s`) or
//! relative to the pool (`a@s`, or `""` for the pool's root dataset); the
//! free functions take full names.

use anyhow::{bail, Context};
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Prefix of every pool the kit creates.
pub const POOL_PREFIX: &str = "zpipetest";
/// Size of a pool's sparse backing file.
pub const POOL_FILE_SIZE: u64 = 256 << 20;
/// Machine-wide lock file serializing daemon start, pool create and destroy.
pub const LOCK_PATH: &str = "/tmp/zpipe-tests-zfs.lock";
/// Log of a zfs-fuse daemon started by the kit.
pub const DAEMON_LOG: &str = "/tmp/zpipe-tests-zfs-fuse.log";
/// Parent of zfs-fuse's lock file (`/run/lock/zfs/zfs_lock`).
const LOCK_DIR: &str = "/run/lock";
/// How long to wait for a started daemon to answer `zpool list`.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to keep retrying `zpool destroy` while the pool is busy.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(100);

fn program(name: &str) -> PathBuf {
    crate::find_program(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Absolute path of the real `zfs` program.
pub fn zfs_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| program("zfs"))
}

/// Absolute path of the real `zpool` program.
pub fn zpool_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| program("zpool"))
}

/// Runs the real `zfs` with `args` and returns its output, whatever the
/// exit status.
pub fn zfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(zfs_program());
    cmd.args(args).stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs the real `zpool` with `args` and returns its output.
pub fn zpool<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(zpool_program());
    cmd.args(args).stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs the real `zfs` with `args`; panics with its stderr unless it
/// succeeds; returns stdout.
pub fn zfs_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    crate::run_ok(Command::new(zfs_program()).args(args).stdin(Stdio::null()))
}

/// Holds the machine-wide kit lock ([`LOCK_PATH`]) while alive.
struct MachineLock(#[allow(dead_code)] File);

impl MachineLock {
    fn take() -> anyhow::Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(LOCK_PATH)
            .with_context(|| format!("opening {LOCK_PATH}"))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {LOCK_PATH}"))?;
        Ok(Self(file))
    }
}

/// Whether a process named `zfs-fuse` runs (what `pgrep -x zfs-fuse` says).
pub fn daemon_process_running() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "zfs-fuse")
    })
}

fn daemon_answers() -> bool {
    Command::new(zpool_program())
        .arg("list")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure a zfs-fuse daemon runs and answers (see the module docs);
/// checked once per process.
pub fn ensure_daemon() -> anyhow::Result<()> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| start_daemon().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn start_daemon() -> anyhow::Result<()> {
    let _lock = MachineLock::take()?;
    if !daemon_process_running() {
        use std::os::unix::process::CommandExt;
        // zfs-fuse exits at once, silently, without its lock directory.
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let log = File::create(DAEMON_LOG).with_context(|| format!("creating {DAEMON_LOG}"))?;
        let mut child = Command::new(program("zfs-fuse"))
            .arg("--no-daemon")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("spawning zfs-fuse --no-daemon")?;
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        while !daemon_answers() {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(DAEMON_LOG).unwrap_or_default();
                bail!("zfs-fuse exited at start ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("zfs-fuse started but `zpool list` did not answer within {DAEMON_START_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        }
        return Ok(());
    }
    let deadline = Instant::now() + DAEMON_START_TIMEOUT;
    while !daemon_answers() {
        if Instant::now() > deadline {
            bail!("a zfs-fuse process runs but `zpool list` does not answer");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Names of all imported pools.
pub fn pools() -> Vec<String> {
    let out = zpool(["list", "-H", "-o", "name"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Backing files of `pool` as `zpool status` lists them.
pub fn pool_files(pool: &str) -> Vec<PathBuf> {
    let out = zpool(["status", pool]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

fn destroy_pool_locked(name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + DESTROY_TIMEOUT;
    loop {
        let out = {
            let _lock = MachineLock::take()?;
            zpool(["destroy", "-f", name])
        };
        if out.status.success() || !pools().iter().any(|p| p == name) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "zpool destroy -f {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Destroys kit pools (prefix [`POOL_PREFIX`]) left behind: those whose
/// creating process is gone or whose backing files are gone. Returns the
/// names destroyed. Pools of live kit processes are left alone.
pub fn sweep_stale_pools() -> Vec<String> {
    let me = std::process::id();
    let mut swept = Vec::new();
    for name in pools() {
        let Some(pid) = crate::owner_pid(POOL_PREFIX, &name) else {
            continue;
        };
        let files = pool_files(&name);
        // No file listed means `zpool status` could not tell: not evidence.
        let files_gone = !files.is_empty() && files.iter().any(|f| !f.exists());
        let owner_gone = pid != me && !crate::pid_alive(pid);
        if files_gone || owner_gone {
            match destroy_pool_locked(&name) {
                Ok(()) => swept.push(name),
                Err(e) => eprintln!("zpipe-tests: cannot sweep stale pool: {e:#}"),
            }
        }
    }
    swept
}

/// A file-backed zfs-fuse pool that is destroyed on drop.
#[derive(Debug)]
pub struct Pool {
    name: String,
    mountpoint: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Pool {
    /// Creates a pool of [`POOL_FILE_SIZE`] with a unique name, mounted in
    /// a fresh temp dir (starts the daemon if needed).
    pub fn create() -> anyhow::Result<Pool> {
        Self::create_sized(POOL_FILE_SIZE)
    }

    /// Creates a pool on a sparse file of `bytes` (zfs-fuse wants ≥ 64 MiB).
    pub fn create_sized(bytes: u64) -> anyhow::Result<Pool> {
        static SWEPT: OnceLock<()> = OnceLock::new();
        ensure_daemon()?;
        SWEPT.get_or_init(|| {
            sweep_stale_pools();
        });
        let dir = tempfile::Builder::new()
            .prefix("zpipetest-pool-")
            .tempdir()
            .context("creating the pool's temp dir")?;
        let image = dir.path().join("pool.img");
        let mountpoint = dir.path().join("mnt");
        File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .with_context(|| format!("creating {}", image.display()))?;
        let name = crate::unique_name(POOL_PREFIX);
        let out = {
            let _lock = MachineLock::take()?;
            Command::new(zpool_program())
                .args(["create", "-m"])
                .arg(&mountpoint)
                .arg(&name)
                .arg(&image)
                .stdin(Stdio::null())
                .output()
                .context("running zpool create")?
        };
        if !out.status.success() {
            bail!(
                "zpool create {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Pool {
            name,
            mountpoint,
            dir: Some(dir),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the pool's root dataset is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The pool's temp dir (holds the image and the mountpoint; free for
    /// scratch files of the test).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("pool dir").path()
    }

    /// The full name of `name`: unchanged when it already is in this pool,
    /// else `<pool>/<name>` (`<pool>` for `""`, `<pool>@s` for `@s`).
    pub fn ds(&self, name: &str) -> String {
        let p = &self.name;
        if name == p || name.starts_with(&format!("{p}/")) || name.starts_with(&format!("{p}@")) {
            name.to_string()
        } else if name.is_empty() {
            p.clone()
        } else if name.starts_with('@') {
            format!("{p}{name}")
        } else {
            format!("{p}/{name}")
        }
    }

    /// Runs the real `zfs` with `args` (names are not rewritten).
    pub fn zfs<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        zfs(args)
    }

    /// Runs the real `zpool` with `args`.
    pub fn zpool<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        zpool(args)
    }

    /// Creates dataset `name` (and its parents); returns its full name.
    pub fn create_dataset(&self, name: &str) -> String {
        let full = self.ds(name);
        create_dataset(&full);
        full
    }

    /// Takes snapshot `name` (`ds@snap`); returns its full name.
    pub fn snapshot(&self, name: &str) -> String {
        let full = self.ds(name);
        snapshot(&full);
        full
    }

    /// Exact guid of a dataset or snapshot.
    pub fn guid(&self, name: &str) -> u64 {
        guid(&self.ds(name))
    }

    /// Writes `bytes` to `relpath` inside mounted `dataset` (parents made,
    /// synced to disk).
    pub fn write_file(&self, dataset: &str, relpath: &str, bytes: &[u8]) {
        write_file(&self.ds(dataset), relpath, bytes)
    }

    /// Reads `relpath` inside mounted `dataset`.
    pub fn read_file(&self, dataset: &str, relpath: &str) -> Vec<u8> {
        read_file(&self.ds(dataset), relpath)
    }

    /// Snapshots of `dataset` itself as (full name, guid, createtxg), oldest
    /// first.
    pub fn snapshots(&self, dataset: &str) -> Vec<(String, u64, u64)> {
        snapshots(&self.ds(dataset))
    }

    /// Destroys the pool now, reporting failure (drop does the same
    /// silently except for a warning).
    pub fn destroy(mut self) -> anyhow::Result<()> {
        self.destroy_inner()
    }

    fn destroy_inner(&mut self) -> anyhow::Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        match destroy_pool_locked(&self.name) {
            Ok(()) => {
                dir.close().context("removing the pool's temp dir")?;
                Ok(())
            }
            Err(e) => {
                // Removing the dir could reach into a still-mounted dataset:
                // keep it; the next process's sweep destroys the pool.
                let kept = dir.keep();
                Err(e.context(format!("kept {}", kept.display())))
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Err(e) = self.destroy_inner() {
            eprintln!("zpipe-tests: pool {} not destroyed: {e:#}", self.name);
        }
    }
}

/// Creates dataset `full` and its parents; panics on failure.
pub fn create_dataset(full: &str) {
    zfs_ok(["create", "-p", full]);
}

/// Takes snapshot `full` (`pool/ds@snap`); panics on failure.
pub fn snapshot(full: &str) {
    zfs_ok(["snapshot", full]);
}

/// Exact `(name, property, value)` rows of
/// `zfs get -Hp -o name,property,value <props> -r <name>`.
pub fn get_exact(name: &str, props: &str) -> Vec<(String, String, String)> {
    zfs_ok(["get", "-Hp", "-o", "name,property,value", props, "-r", name])
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, '\t');
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next()?.to_string(),
            ))
        })
        .collect()
}

/// One exact numeric property of exactly `name`; panics when absent.
pub fn numeric_prop(name: &str, prop: &str) -> u64 {
    get_exact(name, prop)
        .into_iter()
        .find(|(n, p, _)| n == name && p == prop)
        .map(|(_, _, v)| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {prop} is not a number: {v}"))
        })
        .unwrap_or_else(|| panic!("no {prop} for {name}"))
}

/// Exact guid of a dataset or snapshot.
pub fn guid(full: &str) -> u64 {
    numeric_prop(full, "guid")
}

/// Exact createtxg of a dataset or snapshot.
pub fn createtxg(full: &str) -> u64 {
    numeric_prop(full, "createtxg")
}

/// Snapshots of `dataset` itself (not of its children) as
/// (full name, guid, createtxg), oldest first.
pub fn snapshots(dataset: &str) -> Vec<(String, u64, u64)> {
    let prefix = format!("{dataset}@");
    let mut by_name: Vec<(String, u64, u64)> = Vec::new();
    for (name, prop, value) in get_exact(dataset, "guid,createtxg") {
        if !name.starts_with(&prefix) {
            continue;
        }
        let v: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{name} {prop} is not a number: {value}"));
        let row = match by_name.iter_mut().find(|r| r.0 == name) {
            Some(row) => row,
            None => {
                by_name.push((name.clone(), 0, 0));
                by_name.last_mut().unwrap()
            }
        };
        match prop.as_str() {
            "guid" => row.1 = v,
            "createtxg" => row.2 = v,
            _ => {}
        }
    }
    by_name.sort_by_key(|r| r.2);
    by_name
}

/// Where `dataset` is mounted; panics unless it is a mounted filesystem.
pub fn mountpoint_of(dataset: &str) -> PathBuf {
    let out = zfs_ok(["get", "-H", "-o", "value", "mountpoint", dataset]);
    let path = PathBuf::from(out.trim_end_matches('\n'));
    assert!(
        path.is_absolute(),
        "{dataset} has no usable mountpoint: {path:?}"
    );
    path
}

/// Writes `bytes` to `relpath` inside mounted `dataset`, making parent
/// directories and syncing the file so a following snapshot holds it.
pub fn write_file(dataset: &str, relpath: &str, bytes: &[u8]) {
    use std::io::Write;
    let path = mountpoint_of(dataset).join(relpath);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    }
    let mut f = File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Reads `relpath` inside mounted `dataset`.
pub fn read_file(dataset: &str, relpath: &str) -> Vec<u8> {
    let path = mountpoint_of(dataset).join(relpath);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
