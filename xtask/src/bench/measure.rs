//! Running one row once and measuring it.
//!
//! A row is a bash command line. It runs as `bash -o pipefail -c CMD` in
//! its own process group, and the bench waits for it with `wait4` (see
//! [`super::rusage`]): user + system CPU of the whole local tree, and the
//! peak RSS of its largest process. Wall time is taken around it. Commands
//! wrap the measured tool itself in `$ZB_TOOL` (this program in
//! `--rusage-wrap` mode: it runs the tool, waits for it with `wait4` and
//! appends the tool's own RSS and CPU to a file), so the tool's RSS is
//! reported on its own, not the pipeline's largest process.
//!
//! Rows crossing ssh also get the CPU of *both* sides: the bench moves
//! itself into a cgroup-v1 `cpuacct` group ([`CpuGroup`]) before it starts
//! any sshd, so the sshd sessions and the remote commands, all its
//! descendants, are counted; a row's figure is the group's usage delta.
//! zfs rows add the zfs-fuse daemon's CPU (from /proc) separately, and
//! slow-link rows the bytes sent on the shaped veth (`ip -s -j link`).

use super::stats::Sample;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where a row's output goes and how its size is known.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// The command's stdout, read and counted by the bench (the consumer
    /// at the end of the pipe, like `cat >/dev/null`).
    Counted,
    /// The command writes this file; its size is the output.
    File(PathBuf),
    /// The output is not measured.
    Unmeasured,
}

/// The network namespace and device whose tx_bytes a row reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Wire {
    /// Namespace name.
    pub netns: String,
    /// Device.
    pub dev: String,
}

/// One row of a case.
#[derive(Clone, Debug)]
pub struct RowSpec {
    /// Short name.
    pub name: String,
    /// Ours or an anchor.
    pub role: super::report::Role,
    /// The bash command (may use the runner's variables).
    pub cmd: String,
    /// Rows this one is compared to.
    pub anchors: Vec<String>,
    /// Its output.
    pub output: Output,
    /// Programs it needs (anchors missing -> the row is skipped).
    pub needs: Vec<String>,
    /// An untimed bash command run before each repetition (clean-up).
    pub setup: Option<String>,
    /// Input bytes (for throughput and CPU per GiB).
    pub bytes_in: u64,
    /// Whether to report the CPU of both sides (cpuacct).
    pub both_sides: bool,
    /// Whether to add the zfs-fuse daemon's CPU.
    pub daemon: bool,
    /// Report the bytes sent on this link.
    pub wire: Option<Wire>,
}

impl RowSpec {
    /// A row with the defaults: counted output, no needs, no setup.
    pub fn new(
        name: &str,
        role: super::report::Role,
        cmd: impl Into<String>,
        bytes_in: u64,
    ) -> Self {
        RowSpec {
            name: name.into(),
            role,
            cmd: cmd.into(),
            anchors: Vec::new(),
            output: Output::Counted,
            needs: Vec::new(),
            setup: None,
            bytes_in,
            both_sides: false,
            daemon: false,
            wire: None,
        }
    }

    /// Compared to these rows.
    pub fn vs(mut self, anchors: &[&str]) -> Self {
        self.anchors = anchors.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Needs these programs.
    pub fn needs(mut self, programs: &[&str]) -> Self {
        self.needs = programs.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Writes this file.
    pub fn writes(mut self, path: PathBuf) -> Self {
        self.output = Output::File(path);
        self
    }

    /// Output not measured.
    pub fn unmeasured(mut self) -> Self {
        self.output = Output::Unmeasured;
        self
    }

    /// Runs `setup` before each repetition.
    pub fn setup(mut self, setup: impl Into<String>) -> Self {
        self.setup = Some(setup.into());
        self
    }

    /// Reports the CPU of both sides of ssh.
    pub fn both_sides(mut self) -> Self {
        self.both_sides = true;
        self
    }
}

/// A cgroup-v1 cpuacct group holding this process and everything it
/// starts from now on; left and removed on drop.
#[derive(Debug)]
pub struct CpuGroup {
    path: PathBuf,
}

/// Root of the cpuacct hierarchy.
const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";
/// Prefix of the bench's groups.
const GROUP_PREFIX: &str = "zpipe-bench-";

impl CpuGroup {
    /// Creates `zpipe-bench-<pid>` and moves this process into it; `Err`
    /// when cgroup v1 cpuacct is not writable here.
    pub fn enter() -> anyhow::Result<CpuGroup> {
        let root = Path::new(CPUACCT);
        if !root.join("cgroup.procs").exists() {
            bail!("no cgroup-v1 cpuacct hierarchy at {CPUACCT}");
        }
        // Groups of bench runs that died are empty: remove them.
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(GROUP_PREFIX) {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
        }
        let path = root.join(format!("{GROUP_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(path.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining {}", path.display()))?;
        Ok(CpuGroup { path })
    }

    /// CPU nanoseconds used in the group so far.
    pub fn usage_ns(&self) -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(self.path.join("cpuacct.usage"))?;
        Ok(text.trim().parse()?)
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Path::new(CPUACCT).join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// CPU seconds of the zfs-fuse daemon so far (`None` when none runs).
pub fn daemon_cpu_s() -> Option<f64> {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == "zfs-fuse")
        {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            return Some((ut + st) / ticks);
        }
    }
    None
}

/// Bytes sent by `dev` in namespace `netns` so far.
pub fn tx_bytes(wire: &Wire) -> anyhow::Result<u64> {
    let out = Command::new("ip")
        .args([
            "-n",
            &wire.netns,
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &wire.dev,
        ])
        .output()
        .context("running ip -s -j link")?;
    if !out.status.success() {
        bail!(
            "ip -s link: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v[0]["stats64"]["tx"]["bytes"]
        .as_u64()
        .context("ip -s -j link: no stats64.tx.bytes")
}

/// Runs rows and measures them.
#[derive(Debug)]
pub struct Runner {
    /// Scratch directory (logs, tool-usage files).
    pub work: PathBuf,
    /// Variables of the commands (`$BIN`, `$MIXED`, …).
    pub env: BTreeMap<String, String>,
    /// The cpuacct group, when available.
    pub group: Option<CpuGroup>,
    /// A run is killed after this long.
    pub timeout: Duration,
    exe: PathBuf,
}

/// What the wrapped tools of one run used (one line per wrapped process).
fn read_tool_usage(path: &Path) -> Option<(u64, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut rss = None;
    let mut cpu = 0.0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [r, u, s] = f[..] {
            let r: u64 = r.parse().ok()?;
            rss = Some(rss.map_or(r, |x: u64| x.max(r)));
            cpu += u.parse::<f64>().ok()? + s.parse::<f64>().ok()?;
        }
    }
    rss.map(|r| (r, cpu))
}

impl Runner {
    /// A runner with scratch dir `work`.
    pub fn new(work: PathBuf, timeout: Duration) -> anyhow::Result<Runner> {
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        std::fs::create_dir_all(&work)?;
        Ok(Runner {
            work,
            env: BTreeMap::new(),
            group: None,
            timeout,
            exe,
        })
    }

    fn tool_file(&self) -> PathBuf {
        self.work.join("tool-usage")
    }

    /// The value of `$ZB_TOOL`: this program in `--rusage-wrap` mode.
    pub fn tool_wrapper(&self) -> String {
        crate::bench::shell_join(&[
            self.exe.display().to_string(),
            "bench".into(),
            "--rusage-wrap".into(),
            self.tool_file().display().to_string(),
            "--".into(),
        ])
    }

    fn log_path(&self, row: &RowSpec) -> PathBuf {
        let safe: String = row
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.work.join(format!("log.{safe}"))
    }

    fn bash(&self, cmd: &str) -> Command {
        let mut c = Command::new("bash");
        c.args(["-o", "pipefail", "-c", cmd])
            .envs(&self.env)
            .env("ZB_TOOL", self.tool_wrapper())
            .stdin(Stdio::null());
        c
    }

    /// Runs `row` once and measures it.
    pub fn run(&self, row: &RowSpec) -> anyhow::Result<Sample> {
        let log = self.log_path(row);
        if let Some(setup) = &row.setup {
            let out = self.bash(setup).output()?;
            if !out.status.success() {
                bail!(
                    "setup of {} failed: {}",
                    row.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let _ = std::fs::remove_file(self.tool_file());
        if let Output::File(p) = &row.output {
            let _ = std::fs::remove_file(p);
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = self.bash(&row.cmd);
        cmd.stderr(log_file).process_group(0);
        match row.output {
            Output::Counted => cmd.stdout(Stdio::piped()),
            _ => cmd.stdout(Stdio::null()),
        };
        let wire0 = row.wire.as_ref().map(tx_bytes).transpose()?;
        let daemon0 = if row.daemon { daemon_cpu_s() } else { None };
        let group0 = match (&self.group, row.both_sides) {
            (Some(g), true) => Some(g.usage_ns()?),
            _ => None,
        };
        let start = Instant::now();
        let mut child = cmd.spawn().context("spawning bash")?;
        let pgid = child.id();
        let reader = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0u64;
                loop {
                    match out.read(&mut buf) {
                        Ok(0) => return Ok(n),
                        Ok(k) => n += k as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            })
        });
        // The watchdog kills the run's process group after the timeout.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let timeout = self.timeout;
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                if let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                return true;
            }
            false
        });
        let waited = super::rusage::wait(child);
        let wall_s = start.elapsed().as_secs_f64();
        let _ = done_tx.send(());
        let timed_out = watchdog.join().unwrap_or(false);
        let (status, usage) = waited.context("waiting for the run")?;
        let counted = match reader {
            Some(r) => Some(
                r.join()
                    .map_err(|_| anyhow::anyhow!("reader panicked"))?
                    .context("reading the run's output")?,
            ),
            None => None,
        };
        let cpu_all_s = match (&self.group, group0) {
            (Some(g), Some(u0)) => Some(g.usage_ns()?.saturating_sub(u0) as f64 / 1e9),
            _ => None,
        };
        let daemon_cpu_s = daemon0.and_then(|d0| daemon_cpu_s().map(|d1| d1 - d0));
        let wire_bytes = match (&row.wire, wire0) {
            (Some(w), Some(b0)) => Some(tx_bytes(w)?.saturating_sub(b0)),
            _ => None,
        };
        if timed_out {
            bail!(
                "{} killed after {:?} (log: {})",
                row.name,
                self.timeout,
                log.display()
            );
        }
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{} failed ({status}): {}", row.name, tail.join(" / "));
        }
        let bytes_out = match &row.output {
            Output::Counted => counted,
            Output::File(p) => Some(std::fs::metadata(p)?.len()),
            Output::Unmeasured => None,
        };
        let tool = read_tool_usage(&self.tool_file());
        Ok(Sample {
            wall_s,
            cpu_s: usage.user_s + usage.sys_s,
            cpu_all_s,
            daemon_cpu_s,
            rss_tree_kib: usage.maxrss_kib,
            rss_tool_kib: tool.map(|t| t.0),
            bytes_out,
            wire_bytes,
        })
    }
}

/// `--rusage-wrap FILE -- PROGRAM ARGS…`: runs the program with this
/// process's stdio, waits for it with `wait4`, appends `maxrss_kib user_s
/// sys_s` to FILE and exits with the program's status (128 + signal when
/// killed).
pub fn rusage_wrap(args: &[String]) -> anyhow::Result<()> {
    let (file, rest) = match args {
        [file, dashdash, rest @ ..] if dashdash == "--" && !rest.is_empty() => (file, rest),
        _ => bail!("usage: xtask bench --rusage-wrap FILE -- PROGRAM [ARGS...]"),
    };
    let child = Command::new(&rest[0])
        .args(&rest[1..])
        .spawn()
        .with_context(|| format!("running {}", rest[0]))?;
    let (status, usage) = super::rusage::wait(child)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(
        f,
        "{} {:.4} {:.4}",
        usage.maxrss_kib, usage.user_s, usage.sys_s
    )?;
    drop(f);
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_usage_lines_give_the_largest_rss_and_the_cpu_sum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u");
        std::fs::write(&p, "100 0.5 0.25\n300 1.0 0.0\n").unwrap();
        assert_eq!(read_tool_usage(&p), Some((300, 1.75)));
        assert_eq!(read_tool_usage(&dir.path().join("none")), None);
    }
}
