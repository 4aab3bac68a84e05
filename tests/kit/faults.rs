//! Fault injection for the reliability tests (`tests/tests/faults_*.rs`,
//! docs/RELIABILITY.md) and `cargo xtask soak`:
//!
//! - [`Damage`]: one seeded corruption of a byte stream (a flipped bit, a
//!   cut, a duplicated block), applied to a buffer ([`Damage::apply`]) or
//!   to a stream as it flows ([`Damage::copy`]), so a test can sit between
//!   a sender and a receiver as a damaging link.
//! - [`RecordingZfs`]: a `zfs` wrapper script that runs a real `zfs` (or
//!   the stand-in) and keeps an exact copy of everything each `zfs receive`
//!   read, so a test can prove that no damaged byte reached it.
//! - Processes: [`children`], [`descendants`], [`comm`], [`group_members`],
//!   [`live`], [`signal`], [`wait_timeout`], and [`RssSampler`], which
//!   samples the resident memory of a process tree from /proc while it runs.

use crate::data::{noise, Rng};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One corruption of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Bit `bit` (0–7) of the byte at `offset` is inverted.
    FlipBit {
        /// Stream offset of the damaged byte.
        offset: u64,
        /// Which bit.
        bit: u8,
    },
    /// The stream ends after `at` bytes.
    Cut {
        /// Bytes that get through.
        at: u64,
    },
    /// The `len` bytes at `offset` are sent twice in a row.
    Duplicate {
        /// Start of the repeated block.
        offset: u64,
        /// Its length.
        len: u64,
    },
}

/// Largest block [`Damage::pick`] duplicates.
pub const MAX_DUP: u64 = 256 << 10;

impl Damage {
    /// A damage of a seeded kind at a seeded offset inside a stream of
    /// `len` bytes (`len` > 0); the three kinds come in turn by seed.
    pub fn pick(seed: u64, len: u64) -> Damage {
        let mut rng = Rng::new(seed ^ 0xD1B5_4A32_D192_ED03);
        let offset = rng.below(len);
        match seed % 3 {
            0 => Damage::FlipBit {
                offset,
                bit: rng.below(8) as u8,
            },
            1 => Damage::Cut { at: offset },
            _ => Damage::Duplicate {
                offset,
                len: 1 + rng.below(MAX_DUP.min(len - offset)),
            },
        }
    }

    /// The first stream offset at which the damaged stream differs from
    /// the true one (for a cut: where it ends).
    pub fn first_bad(&self) -> u64 {
        match *self {
            Damage::FlipBit { offset, .. } => offset,
            Damage::Cut { at } => at,
            Damage::Duplicate { offset, len } => offset + len,
        }
    }

    /// `data` with this damage done.
    pub fn apply(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + MAX_DUP as usize);
        self.copy(&mut &data[..], &mut out)
            .expect("copying between buffers");
        out
    }

    /// Copies `from` to `to` with this damage done as the bytes pass;
    /// returns the bytes written. A cut stops reading at the cut.
    pub fn copy(&self, from: &mut dyn Read, to: &mut dyn Write) -> std::io::Result<u64> {
        let mut buf = vec![0u8; 64 << 10];
        let mut pos = 0u64; // input offset
        let mut written = 0u64;
        let mut dup: Vec<u8> = Vec::new();
        loop {
            let want = match *self {
                Damage::Cut { at } => (at - pos).min(buf.len() as u64) as usize,
                _ => buf.len(),
            };
            if want == 0 {
                break;
            }
            let n = match from.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = &mut buf[..n];
            let (start, end) = (pos, pos + n as u64);
            match *self {
                Damage::FlipBit { offset, bit } if (start..end).contains(&offset) => {
                    chunk[(offset - start) as usize] ^= 1 << bit;
                }
                _ => {}
            }
            // Where the repeated block goes in: right after its end.
            let mut split = None;
            if let Damage::Duplicate { offset, len } = *self {
                let (lo, hi) = (offset.max(start), (offset + len).min(end));
                if lo < hi {
                    dup.extend_from_slice(&chunk[(lo - start) as usize..(hi - start) as usize]);
                    if hi == offset + len {
                        split = Some((hi - start) as usize);
                    }
                }
            }
            match split {
                Some(k) => {
                    to.write_all(&chunk[..k])?;
                    to.write_all(&dup)?;
                    to.write_all(&chunk[k..])?;
                    written += dup.len() as u64;
                }
                None => to.write_all(chunk)?,
            }
            written += n as u64;
            pos = end;
        }
        to.flush()?;
        Ok(written)
    }
}

/// A `zfs` program (a shell script in a directory of its own) that runs
/// `real` with the same arguments and, for `receive`/`recv` with a
/// dataset, first copies its whole input to a file of its own, so the test
/// can read exactly what each receive got.
#[derive(Debug)]
pub struct RecordingZfs {
    dir: PathBuf,
}

impl RecordingZfs {
    /// Writes the script into `dir` (created) in front of `real`, a `zfs`
    /// command line (quoted words, e.g. `env ZPIPE_STANDIN_STATE=… zfs-standin`).
    pub fn new(dir: &Path, real: &str) -> RecordingZfs {
        std::fs::create_dir_all(dir.join("records")).expect("creating the record dir");
        let script = dir.join("zfs");
        let records = crate::shell_quote(&dir.join("records").display().to_string());
        let text = format!(
            "#!/bin/sh\n\
             # zpipe-tests RecordingZfs: keeps what each zfs receive reads.\n\
             case \"$1\" in\n\
             receive|recv)\n\
             \x20 if [ \"$#\" -gt 1 ]; then\n\
             \x20   f={records}/recv-$$.bin\n\
             \x20   exec 3>\"$f\"\n\
             \x20   tee /dev/fd/3 | {real} \"$@\"\n\
             \x20   rc=$?\n\
             \x20   exit $rc\n\
             \x20 fi;;\n\
             esac\n\
             exec {real} \"$@\"\n"
        );
        crate::write_script(&script, &text).expect("writing the recording zfs");
        RecordingZfs {
            dir: dir.to_path_buf(),
        }
    }

    /// The script's path (use it as `--zfs`).
    pub fn program(&self) -> PathBuf {
        self.dir.join("zfs")
    }

    /// What each receive read so far, oldest first (by file time, then name).
    pub fn records(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(self.dir.join("records"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            let t = e
                                .metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH);
                            (t, e.path())
                        })
                        .collect()
                })
                .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read(p).unwrap_or_default())
            .collect()
    }

    /// Forgets every record.
    pub fn clear(&self) {
        if let Ok(rd) = std::fs::read_dir(self.dir.join("records")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Direct children of `pid` (all its threads').
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|w| w.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Every descendant of `pid`, parents before their children.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        out.push(p);
        todo.extend(children(p));
    }
    out
}

/// The command name of `pid` (empty when it is gone).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Fields after the command of /proc/PID/stat (state is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The scheduler state letter of `pid` or of a thread id (`R`, `S`, `D`,
/// `Z`, …; empty when it is gone).
pub fn state(pid: u32) -> String {
    stat_fields(pid)
        .and_then(|f| f.into_iter().next())
        .unwrap_or_default()
}

/// Whether `pid` exists and is not a zombie.
pub fn live(pid: u32) -> bool {
    !matches!(state(pid).as_str(), "" | "Z" | "X")
}

/// The numeric entries of `dir` (`/proc`: every process; `/proc/PID/task`:
/// its threads), sorted.
fn numeric_entries(dir: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    v.sort_unstable();
    v
}

/// Every process whose command name is `name` (zombies included), what
/// `pgrep -x NAME` lists.
pub fn pids_named(name: &str) -> Vec<u32> {
    numeric_entries("/proc")
        .into_iter()
        .filter(|&p| comm(p) == name)
        .collect()
}

/// The thread ids of `pid`, sorted (empty when it is gone).
pub fn threads(pid: u32) -> Vec<u32> {
    numeric_entries(&format!("/proc/{pid}/task"))
}

/// Live processes (not zombies) whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    numeric_entries("/proc")
        .into_iter()
        .filter(|&p| {
            stat_fields(p).is_some_and(|f| {
                f.first().is_some_and(|s| s != "Z" && s != "X")
                    && f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
            })
        })
        .collect()
}

/// Sends `sig` (a `rustix` signal) to `pid`; a gone process is no error.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Waits for `child` up to `timeout`; `None` when it still runs.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns
/// whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of `pid` in bytes (VmRSS), 0 when gone.
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib << 10)
}

/// Samples the resident memory of a process (alone, or with all its
/// descendants) on a thread until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Duration, u64)>>>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Samples `pid` every `every`; with `tree`, the sum over `pid` and its
    /// descendants whose command name is one of `names` (all when empty).
    pub fn start(pid: u32, every: Duration, tree: bool, names: &[&str]) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let (s2, v2) = (Arc::clone(&stop), Arc::clone(&samples));
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !s2.load(Ordering::Relaxed) && live(pid) {
                let mut total = rss(pid);
                if tree {
                    total += descendants(pid)
                        .into_iter()
                        .filter(|&p| names.is_empty() || names.contains(&comm(p)))
                        .map(rss)
                        .sum::<u64>();
                }
                if total > 0 {
                    v2.lock().unwrap().push((t0.elapsed(), total));
                }
                std::thread::sleep(every);
            }
        });
        RssSampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns (time since start, bytes) samples.
    pub fn finish(mut self) -> Vec<(Duration, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// A thread that writes seeded noise to a writer until it fails or `limit`
/// bytes went (a fast producer).
pub fn feed(mut to: impl Write + Send + 'static, seed: u64, limit: u64) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let block = noise(seed, 1 << 20);
        let mut sent = 0u64;
        while sent < limit {
            let n = (limit - sent).min(block.len() as u64) as usize;
            if to.write_all(&block[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        sent
    })
}

/// A thread that reads a reader to its end, counting bytes, sleeping
/// `pause` after each read of at most `chunk` bytes (a slow consumer when
/// `pause` is not zero).
pub struct Drain {
    count: Arc<std::sync::atomic::AtomicU64>,
    thread: JoinHandle<u64>,
}

impl Drain {
    /// Starts draining `from`.
    pub fn start(mut from: impl Read + Send + 'static, chunk: usize, pause: Duration) -> Drain {
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c2 = Arc::clone(&count);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; chunk.max(1)];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        c2.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            c2.load(Ordering::Relaxed)
        });
        Drain { count, thread }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` bytes were read, up to `timeout`.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.bytes() >= n)
    }

    /// Waits for the end of input; returns the bytes read.
    pub fn join(self) -> u64 {
        self.thread.join().unwrap_or(0)
    }
}

/// Collects a child's stderr lines on a thread, so a test can watch the
/// meter's progress lines (`bytes=N`) while the child runs.
pub struct StderrLog {
    lines: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl StderrLog {
    /// Starts collecting `from`.
    pub fn start(from: impl Read + Send + 'static) -> StderrLog {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = Arc::clone(&lines);
        let thread = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        StderrLog {
            lines,
            thread: Some(thread),
        }
    }

    /// The largest `bytes=N` of the progress lines so far.
    pub fn bytes(&self) -> u64 {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|w| w.strip_prefix("bytes=")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }

    /// Waits until the progress lines show at least `n` bytes.
    pub fn wait_for_bytes(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.bytes() >= n)
    }

    /// Waits for the end of the stream; returns every line that is not a
    /// progress line.
    pub fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.contains("bytes="))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The parent pid of `pid` (0 when gone).
pub fn parent(pid: u32) -> u32 {
    stat_fields(pid)
        .and_then(|f| f.get(1)?.parse().ok())
        .unwrap_or(0)
}

/// The pid of the kit's sshd listener (every session descends from it).
pub fn sshd_pid(sshd: &crate::Sshd) -> u32 {
    let cfg = sshd.dir().join("sshd_config").display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            comm(*p) == "sshd"
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&cfg))
        })
        .expect("the kit's sshd runs")
}

/// The first descendant of `pid` named `name`, waiting up to `timeout`.
pub fn find_descendant(pid: u32, name: &str, timeout: Duration) -> Option<u32> {
    let mut found = None;
    wait_until(timeout, || {
        found = descendants(pid)
            .into_iter()
            .find(|&p| comm(p) == name && live(p));
        found.is_some()
    });
    found
}

/// Summary of RSS samples: (peak, median of the first half, median of
/// the second half), in bytes.
pub fn rss_summary(samples: &[(Duration, u64)]) -> (u64, u64, u64) {
    fn median(v: &[(Duration, u64)]) -> u64 {
        let mut x: Vec<u64> = v.iter().map(|s| s.1).collect();
        x.sort_unstable();
        x.get(x.len() / 2).copied().unwrap_or(0)
    }
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let half = samples.len() / 2;
    (peak, median(&samples[..half]), median(&samples[half..]))
}

/// The kit sshd's ssh argv without the destination, as one `--ssh` value.
pub fn ssh_option_line(sshd: &crate::Sshd) -> String {
    let mut argv = vec!["ssh".to_string()];
    argv.extend(sshd.ssh_options());
    crate::shell_join(&argv)
}

/// The stand-in zfs with its own state directory, as one `--zfs` value.
pub fn standin_command(state: &Path) -> String {
    crate::shell_join(&[
        "env".to_string(),
        format!("ZPIPE_STANDIN_STATE={}", state.display()),
        format!("ZPIPE_REAL_ZFS={}", crate::zfs::zfs_program().display()),
        crate::bin("zfs-standin").display().to_string(),
    ])
}

/// The receive resume token of `dataset` as the stand-in with `state`
/// reports it (`-` when there is none).
pub fn standin_token(state: &Path, dataset: &str) -> String {
    let out = std::process::Command::new(crate::bin("zfs-standin"))
        .env("ZPIPE_STANDIN_STATE", state)
        .env("ZPIPE_REAL_ZFS", crate::zfs::zfs_program())
        .args(["get", "-H", "-o", "value", "receive_resume_token", dataset])
        .output()
        .expect("running zfs-standin get");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every regular file under `root`, by relative path, sorted.
fn files_under(root: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(&p, root, out);
            } else if ft.is_file() {
                let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
                out.push((rel, p));
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

/// Checks that the trees under `a` and `b` hold the same files with the
/// same bytes; `Err` names the first difference.
pub fn same_tree(a: &Path, b: &Path) -> Result<(), String> {
    let (fa, fb) = (files_under(a), files_under(b));
    let names = |v: &[(String, PathBuf)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    if names(&fa) != names(&fb) {
        return Err(format!(
            "file lists differ: {:?} vs {:?}",
            names(&fa),
            names(&fb)
        ));
    }
    for ((name, pa), (_, pb)) in fa.iter().zip(&fb) {
        let (x, y) = (std::fs::read(pa), std::fs::read(pb));
        match (x, y) {
            (Ok(x), Ok(y)) if x == y => {}
            (Ok(x), Ok(y)) => {
                return Err(format!("{name} differs ({} vs {} bytes)", x.len(), y.len()))
            }
            (x, y) => {
                return Err(format!(
                    "{name}: cannot read: {:?} / {:?}",
                    x.err(),
                    y.err()
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_copy_matches_apply_and_changes_the_stream() {
        let data = noise(7, 300_000);
        for seed in 0..60 {
            let d = Damage::pick(seed, data.len() as u64);
            let whole = d.apply(&data);
            // Streamed through a reader that returns odd-sized pieces.
            struct Dribble<'a>(&'a [u8], usize);
            impl Read for Dribble<'_> {
                fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                    self.1 = self.1 % 7919 + 1;
                    let n = self.1.min(b.len()).min(self.0.len());
                    b[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut streamed = Vec::new();
            d.copy(&mut Dribble(&data, 0), &mut streamed).unwrap();
            assert!(whole == streamed, "{d:?}: streamed and applied differ");
            assert!(whole != data, "{d:?}: nothing changed");
            let bad = d.first_bad() as usize;
            assert!(whole[..bad.min(whole.len())] == data[..bad], "{d:?}");
            if let Damage::Duplicate { offset, len } = d {
                let (o, l) = (offset as usize, len as usize);
                assert!(whole[o + l..o + 2 * l] == data[o..o + l], "{d:?}");
                assert!(whole[o + 2 * l..] == data[o + l..], "{d:?}");
            }
            match d {
                Damage::Cut { at } => assert_eq!(whole.len() as u64, at),
                Damage::Duplicate { len, .. } => {
                    assert_eq!(whole.len() as u64, data.len() as u64 + len)
                }
                Damage::FlipBit { .. } => assert_eq!(whole.len(), data.len()),
            }
        }
    }
}
