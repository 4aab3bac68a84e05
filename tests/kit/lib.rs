//! zpipe-tests: the test kit shared by every cross-tool integration test.
//!
//! It owns the real parts the tests run against and their clean-up:
//!
//! - [`zfs`]: a real zfs-fuse daemon (started when none runs) and
//!   file-backed [`Pool`]s with unique names, destroyed on drop, plus helpers
//!   that read exact `guid`/`createtxg` values and files in datasets.
//! - [`sshd`]: a real OpenSSH [`Sshd`] on a free loopback port with keys made
//!   for the run, the `ssh` argv that reaches it, extra authorized keys with
//!   options (forced commands), and the remote `PATH`.
//! - [`netns`]: a pair of network namespaces joined by a veth pair shaped
//!   with `tc … tbf`, for slow-link tests ([`Netns`]).
//! - [`bins`]: the directory of the workspace binaries built by cargo
//!   ([`bin_dir`], [`bin`]), built on demand so a cross-crate test can run
//!   them.
//! - [`data`]: seeded, deterministic test data ([`data::noise`],
//!   [`data::text`]).
//! - [`stream`]: synthetic ZFS send streams and a transport-only stand-in
//!   `zfs` that sends one.
//! - [`faults`]: seeded stream damage, a recording `zfs`, process-tree
//!   listing and RSS sampling for the fault-injection tests.
//! - [`watchdog`]: a time limit per test on the real parts; a hang ends the
//!   run with what every process was doing instead of a silent timeout.
//! - The requirement policy ([`require!`], [`require()`]): a test that needs
//!   root, zfs-fuse, sshd, namespaces or `man` *skips* with a `SKIP <test>:
//!   <why>` line on a developer box where those are missing, and *fails*
//!   with the same reason when `CI` is set, so a green CI run means the real
//!   parts ran.
//!
//! Typical use:
//!
//! ```no_run
//! use zpipe_tests::{require, Pool};
//!
//! #[test]
//! fn snapshot_guid_is_stable() {
//!     require!(zfs);
//!     let pool = Pool::create().unwrap();
//!     let ds = pool.create_dataset("data");
//!     pool.write_file(&ds, "f", b"hello");
//!     let snap = pool.snapshot("data@s1");
//!     assert_ne!(pool.guid(&snap), 0);
//! }
//! ```

pub mod bins;
pub mod data;
pub mod faults;
pub mod need;
pub mod netns;
pub mod sshd;
pub mod stream;
pub mod watchdog;
pub mod zfs;

pub use bins::{bin, bin_dir, ensure_bins_built, path_with};
pub use need::{check, is_ci, require, skip_or_fail, Need};
pub use netns::Netns;
pub use sshd::Sshd;
pub use zfs::Pool;

use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `text` to `path` as an executable script (mode 0755).
pub fn write_script(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// Quotes `word` once for a POSIX shell (the product's own quoting,
/// `zpipe_core::child::quote_word`, so tests quote exactly as the tools do).
pub fn shell_quote(word: &str) -> String {
    zpipe_core::child::quote_word(word)
}

/// Joins `words` into one command line for a POSIX shell, quoting each once.
pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    zpipe_core::child::quote_argv(&words)
}

/// A name unique across the threads of this process and across processes:
/// `<prefix>-<pid>-<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The pid encoded by [`unique_name`] in `name`, when `name` has `prefix`.
pub fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

/// Whether a process with `pid` exists on this machine.
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Finds `program` on `PATH`, then in the sbin directories that a non-login
/// root `PATH` may lack. Returns the absolute path.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    const FALLBACK_DIRS: [&str; 4] = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(std::path::PathBuf::from))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs `cmd`, panicking with the command line, status and stderr unless it
/// succeeds; returns its stdout as text.
pub fn run_ok(mut cmd: impl std::borrow::BorrowMut<std::process::Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_quotes_once() {
        assert_eq!(shell_quote("pool/ds@s"), "pool/ds@s");
        assert_eq!(shell_quote("pool/my ds"), "'pool/my ds'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn shell_join_round_trips_through_shlex() {
        let words = ["zfs", "recv", "p/a b", "x'y", "$(rm)"];
        let line = shell_join(&words);
        assert_eq!(shlex::split(&line).unwrap(), words);
    }

    #[test]
    fn unique_names_carry_the_pid() {
        let a = unique_name("zpipetest");
        let b = unique_name("zpipetest");
        assert_ne!(a, b);
        assert_eq!(owner_pid("zpipetest", &a), Some(std::process::id()));
        assert_eq!(owner_pid("zpipetest", "other-1-2"), None);
        assert_eq!(owner_pid("zpipetest", "zpipetestx-1-2"), None);
    }
}
