//! Real ZFS for tests: the zfs-fuse daemon, file-backed pools with unique
//! names, and helpers over the real `zfs`/`zpool` programs.
//!
//! - The daemon is shared by the whole machine. [`ensure_daemon`] starts
//!   `zfs-fuse --no-daemon` (detached in its own process group, log in
//!   [`DAEMON_LOG`]) only when no `zfs-fuse` process runs, and waits until
//!   `zpool list` answers. It is replaced only when it has aged and no
//!   pool at all is imported ([`renew_aged_daemon`]): zfs-fuse stops
//!   answering new mounts after some hundreds of pools.
//! - A [`Pool`] lives on a preallocated file in its own temp dir and is mounted
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
    !crate::faults::pids_named("zfs-fuse").is_empty()
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
        return spawn_daemon();
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

/// Starts `zfs-fuse --no-daemon` and waits until it answers; the caller
/// holds the [`MachineLock`].
fn spawn_daemon() -> anyhow::Result<()> {
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
            bail!(
                "zfs-fuse started but `zpool list` did not answer within {DAEMON_START_TIMEOUT:?}"
            );
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Threads above which an idle daemon is replaced (see [`renew_aged_daemon`]).
pub const DAEMON_MAX_THREADS: usize = 250;

/// Live (not zombie) `zfs-fuse` processes.
pub fn daemon_pids() -> Vec<u32> {
    let mut pids = crate::faults::pids_named("zfs-fuse");
    pids.retain(|&p| crate::faults::live(p));
    pids
}

/// Replaces an aged zfs-fuse daemon that nobody uses; returns whether it did.
///
/// zfs-fuse 0.7 runs some 57 threads for each imported pool. With pools
/// piling up (left-overs it refused to destroy, "pool is busy", whose test
/// processes are gone) it has been seen here to stop answering new mounts:
/// a `zfs create` then waits in the kernel for a FUSE reply forever (at
/// 570 threads; likely what hung a CI run). So before the first pool of a
/// test process, when it has more than [`DAEMON_MAX_THREADS`] threads and
/// no live process uses it, the daemon is stopped (SIGTERM, then SIGKILL), its leftover
/// FUSE mounts are detached, and a fresh daemon is started. Pools left by
/// dead kit processes do not count as use: they come back with the new
/// daemon and are swept then.
pub fn renew_aged_daemon() -> anyhow::Result<bool> {
    renew_daemon_above(DAEMON_MAX_THREADS)
}

/// [`renew_aged_daemon`] with its thread limit given.
pub fn renew_daemon_above(max_threads: usize) -> anyhow::Result<bool> {
    let renewed = {
        let _lock = MachineLock::take()?;
        let pids = daemon_pids();
        let aged = pids
            .iter()
            .any(|&p| crate::faults::threads(p).len() > max_threads);
        // Only left-overs of dead kit processes may be imported: those
        // come back with the new daemon and are swept then.
        let in_use = pools()
            .iter()
            .any(|p| crate::owner_pid(POOL_PREFIX, p).is_none_or(crate::pid_alive));
        if aged && !in_use {
            replace_daemon(&pids)?;
        }
        aged && !in_use
    };
    if renewed {
        sweep_stale_pools();
    }
    Ok(renewed)
}

/// Stops the daemons `pids`, detaches their mounts, starts a fresh one;
/// the caller holds the [`MachineLock`].
fn replace_daemon(pids: &[u32]) -> anyhow::Result<()> {
    for (signal, wait) in [
        (rustix::process::Signal::TERM, Duration::from_secs(10)),
        (rustix::process::Signal::KILL, Duration::from_secs(5)),
    ] {
        for &p in pids {
            crate::faults::signal(p, signal);
        }
        if crate::faults::wait_until(wait, || pids.iter().all(|&p| !crate::faults::live(p))) {
            break;
        }
    }
    if pids.iter().any(|&p| crate::faults::live(p)) {
        bail!("the aged zfs-fuse daemon (pids {pids:?}) does not stop");
    }
    for m in leftover_fuse_mounts() {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&m)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    spawn_daemon()
}

/// Mount points of zfs-fuse's file systems (and its kstat mount).
pub fn leftover_fuse_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, point, kind) = (w.next()?, w.next()?, w.next()?);
            let point = unescape_mount(point);
            (kind == "fuse.zfs" || (kind == "fuse" && point == Path::new("/zfs-kstat")))
                .then_some(point)
        })
        .collect()
}

/// Undoes /proc/mounts' octal escapes (`\040` for a space).
pub fn unescape_mount(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
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

/// Creates `image` with `bytes` allocated on disk; a failure says how much
/// space the disk has left.
pub fn reserve_image(image: &Path, bytes: u64) -> anyhow::Result<()> {
    use rustix::fs::{fallocate, statvfs, FallocateFlags};
    let file = File::create(image).with_context(|| format!("creating {}", image.display()))?;
    match fallocate(&file, FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) => {
            let free = statvfs(image).map_or(0, |s| s.f_bavail * s.f_frsize);
            bail!(
                "not enough disk for a {} MiB test pool at {}: {} MiB free (free some space)",
                bytes >> 20,
                image.display(),
                free >> 20
            )
        }
        // A file system without fallocate: a sparse image, as before.
        Err(rustix::io::Errno::OPNOTSUPP) => file
            .set_len(bytes)
            .with_context(|| format!("creating {}", image.display())),
        Err(e) => Err(e).with_context(|| format!("allocating {}", image.display())),
    }
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

    /// Creates a pool on a file of `bytes` (zfs-fuse wants ≥ 64 MiB). The
    /// file's blocks are reserved up front (fallocate): a disk too full
    /// for the pool fails here, with the free space named, instead of
    /// suspending the pool mid-test (a zfs-fuse pool whose image cannot
    /// grow blocks every writer forever).
    pub fn create_sized(bytes: u64) -> anyhow::Result<Pool> {
        static SWEPT: OnceLock<()> = OnceLock::new();
        ensure_daemon()?;
        SWEPT.get_or_init(|| {
            sweep_stale_pools();
            if let Err(e) = renew_aged_daemon() {
                eprintln!("zpipe-tests: {e:#}");
            }
        });
        let dir = tempfile::Builder::new()
            .prefix("zpipetest-pool-")
            .tempdir()
            .context("creating the pool's temp dir")?;
        let image = dir.path().join("pool.img");
        let mountpoint = dir.path().join("mnt");
        reserve_image(&image, bytes)?;
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
