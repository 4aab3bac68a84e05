//! The requirement policy: what a test needs from the machine, how that is
//! checked (once per process), and what happens when it is missing — a
//! `SKIP <test>: <why>` line on a developer box, a panic with the same
//! reason under CI (`CI=true`), so CI can never pass with the real parts
//! skipped.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// One thing a test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// Running as root (uid 0).
    Root,
    /// Root, /dev/fuse, the zfs-fuse tools, and a running daemon (started
    /// by the kit when none runs).
    Zfs,
    /// Root, OpenSSH's sshd, ssh and ssh-keygen, and /run/sshd.
    Sshd,
    /// Root, `ip` and `tc` from iproute2, and network namespaces that can
    /// really be created.
    Netns,
    /// The `man` program (man-db).
    Man,
}

/// Whether this run is CI: `CI` is set to anything but empty, `0` or `false`.
pub fn is_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"),
        Err(_) => false,
    }
}

/// Checks one need; `Err` carries the reason it is not met. Results are
/// cached for the process, and checking [`Need::Zfs`] starts the daemon.
pub fn check(need: Need) -> Result<(), String> {
    static ROOT: OnceLock<Result<(), String>> = OnceLock::new();
    static ZFS: OnceLock<Result<(), String>> = OnceLock::new();
    static SSHD: OnceLock<Result<(), String>> = OnceLock::new();
    static NETNS: OnceLock<Result<(), String>> = OnceLock::new();
    static MAN: OnceLock<Result<(), String>> = OnceLock::new();
    match need {
        Need::Root => ROOT.get_or_init(check_root).clone(),
        Need::Zfs => ZFS.get_or_init(check_zfs).clone(),
        Need::Sshd => SSHD.get_or_init(check_sshd).clone(),
        Need::Netns => NETNS.get_or_init(check_netns).clone(),
        Need::Man => MAN.get_or_init(check_man).clone(),
    }
}

fn check_root() -> Result<(), String> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err("needs root (uid 0)".into())
    }
}

fn need_programs(programs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| crate::find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing program(s): {}", missing.join(", ")))
    }
}

fn check_zfs() -> Result<(), String> {
    check(Need::Root)?;
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse (try `modprobe fuse`)".into());
    }
    need_programs(&["zfs-fuse", "zpool", "zfs"])
        .map_err(|e| format!("{e} (apt-get install zfs-fuse)"))?;
    crate::zfs::ensure_daemon().map_err(|e| format!("zfs-fuse daemon: {e:#}"))
}

fn check_sshd() -> Result<(), String> {
    check(Need::Root)?;
    need_programs(&["sshd", "ssh", "ssh-keygen"])
        .map_err(|e| format!("{e} (apt-get install openssh-server openssh-client)"))?;
    crate::sshd::ensure_privsep_dir().map_err(|e| format!("{e:#}"))
}

fn check_netns() -> Result<(), String> {
    check(Need::Root)?;
    need_programs(&["ip", "tc"]).map_err(|e| format!("{e} (apt-get install iproute2)"))?;
    crate::netns::probe().map_err(|e| format!("cannot create network namespaces: {e:#}"))
}

fn check_man() -> Result<(), String> {
    need_programs(&["man"]).map_err(|e| format!("{e} (apt-get install man-db)"))
}

/// The name of the running test: libtest names each test's thread after it.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("<test>")
        .to_string()
}

/// Reports a missing requirement for `test`: under CI it panics with
/// `why`; elsewhere it writes `SKIP <test>: <why>` straight to stderr (not
/// through the captured `eprintln!`, so it shows in a passing run).
pub fn skip_or_fail(test: &str, why: &str) {
    if is_ci() {
        panic!("{test}: required part missing under CI: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// Checks every need; returns `true` when the test can go on, `false` after
/// reporting a skip (see [`skip_or_fail`]; under CI it panics instead).
pub fn require(needs: &[Need]) -> bool {
    let reasons: Vec<String> = needs.iter().filter_map(|n| check(*n).err()).collect();
    if reasons.is_empty() {
        return true;
    }
    skip_or_fail(&current_test(), &reasons.join("; "));
    false
}

/// Returns early from the calling test unless every named need is met:
/// `require!(zfs)`, `require!(zfs, sshd)`, `require!(netns)`, `require!(man)`,
/// `require!(root)`. See [`require()`] for the skip/fail policy. It also
/// arms a [`Watchdog`](crate::watchdog::Watchdog) for the rest of the
/// test, so a test on the real parts that hangs fails with a process dump.
#[macro_export]
macro_rules! require {
    ($($need:ident),+ $(,)?) => {
        let _watchdog = $crate::watchdog::Watchdog::arm(&$crate::need::current_test());
        if !$crate::require(&[$($crate::__need!($need)),+]) {
            return;
        }
    };
}

/// Maps the words of [`require!`] to [`Need`] values at compile time.
#[doc(hidden)]
#[macro_export]
macro_rules! __need {
    (root) => {
        $crate::Need::Root
    };
    (zfs) => {
        $crate::Need::Zfs
    };
    (sshd) => {
        $crate::Need::Sshd
    };
    (netns) => {
        $crate::Need::Netns
    };
    (man) => {
        $crate::Need::Man
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_threads_are_named_after_the_test() {
        assert!(current_test().ends_with("test_threads_are_named_after_the_test"));
    }
}
