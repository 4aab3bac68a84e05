//! Waiting for a child with its resource usage: `wait4(2)` returns the
//! rusage of the child and of every descendant it waited for, which is how
//! the bench counts the CPU and the peak RSS of a whole `bash -c` pipeline.
//!
//! This module needs `unsafe`: neither std nor rustix wraps `wait4` or
//! `getrusage`, and this is the only way to get a finished process tree's
//! rusage. The unsafe part is one libc call with a pointer to a zeroed
//! `struct rusage` and a status int owned by this function.
#![allow(unsafe_code)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};

/// Resource usage of a waited-for process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User CPU, seconds.
    pub user_s: f64,
    /// System CPU, seconds.
    pub sys_s: f64,
    /// Peak RSS of the largest process of the tree, KiB.
    pub maxrss_kib: u64,
}

fn seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// Waits for `child` (which must not have been waited for) and returns its
/// exit status and the rusage of its tree. Retries on EINTR.
pub fn wait(child: Child) -> std::io::Result<(ExitStatus, Usage)> {
    let pid = child.id() as libc::pid_t;
    // The Child is dropped without waiting (that closes nothing we need:
    // its pipes were taken or inherited); wait4 reaps it.
    drop(child);
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of the plain-data
        // struct, and both pointers are to locals that outlive the call.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            let usage = Usage {
                user_s: seconds(ru.ru_utime),
                sys_s: seconds(ru.ru_stime),
                maxrss_kib: ru.ru_maxrss.max(0) as u64,
            };
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_counted_with_its_largest_process() {
        // A subshell that spins a little and a child allocating ~40 MiB.
        let child = std::process::Command::new("bash")
            .args([
                "-c",
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; \
                 x=$(head -c 40000000 /dev/zero | tr '\\0' a); echo ${#x} >/dev/null; exit 3",
            ])
            .spawn()
            .unwrap();
        let (status, usage) = wait(child).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(usage.user_s + usage.sys_s > 0.0, "{usage:?}");
        assert!(usage.maxrss_kib > 30_000, "{usage:?}");
    }
}
