//! A time limit for each test that uses the real parts: a hang (a
//! deadlocked pipeline, a stuck zfs-fuse, a peer nobody reaps) fails the
//! run within minutes, with a picture of what every process was doing,
//! instead of eating CI's whole time budget in silence.
//!
//! [`require!`](crate::require!) arms one for its test. When the test
//! outlives the limit ([`DEFAULT_LIMIT`], or `ZPIPE_TEST_TIMEOUT` seconds),
//! the watchdog writes, straight to stderr: every process this test binary
//! started (with its threads' names, states, wait channels and kernel
//! stacks) and the zfs-fuse daemon's threads; then it kills those
//! processes and ends the test binary with exit status 101 (what a failed
//! libtest run returns).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The limit when `ZPIPE_TEST_TIMEOUT` is not set: several times the
/// slowest test's time on the 2-core CI machine.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(360);

/// Env var overriding [`DEFAULT_LIMIT`], in whole seconds (0 disables).
pub const LIMIT_ENV: &str = "ZPIPE_TEST_TIMEOUT";

/// Exit status of the test binary when a watchdog fires.
pub const EXIT_TIMEOUT: i32 = 101;

/// Ends the test binary if it is not dropped within its limit (see the
/// module docs).
pub struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Watchdog {
    /// Arms a watchdog for `test` with the configured limit.
    pub fn arm(test: &str) -> Watchdog {
        Watchdog::arm_for(test, limit())
    }

    /// Arms a watchdog for `test` that fires after `limit` (never when zero).
    pub fn arm_for(test: &str, limit: Duration) -> Watchdog {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        if !limit.is_zero() {
            let d = Arc::clone(&done);
            let test = test.to_string();
            let _ = std::thread::Builder::new()
                .name(format!("watchdog {test}"))
                .spawn(move || watch(&d, &test, limit));
        }
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// The configured limit: `ZPIPE_TEST_TIMEOUT` seconds, else [`DEFAULT_LIMIT`].
pub fn limit() -> Duration {
    std::env::var(LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_LIMIT, Duration::from_secs)
}

fn watch(done: &(Mutex<bool>, Condvar), test: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let (lock, cv) = done;
    let mut finished = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !*finished {
        let now = Instant::now();
        if now >= deadline {
            drop(finished);
            fire(test, limit);
        }
        finished = cv
            .wait_timeout(finished, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn fire(test: &str, limit: Duration) -> ! {
    let me = std::process::id();
    let procs = crate::faults::descendants(me);
    let mut text = format!(
        "\nWATCHDOG {test}: still running after {} s ({LIMIT_ENV} to change); \
         what its processes are doing:\n",
        limit.as_secs()
    );
    text.push_str(&describe(me, true));
    for &p in &procs {
        text.push_str(&describe(p, true));
    }
    for p in crate::faults::pids_named("zfs-fuse") {
        text.push_str(&summarize(p));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
    for &p in procs.iter().rev() {
        crate::faults::signal(p, rustix::process::Signal::KILL);
    }
    std::process::exit(EXIT_TIMEOUT);
}

/// One process: its command line, then one line per thread (name, state,
/// wait channel) with the kernel stack when `stacks` is set.
pub fn describe(pid: u32, stacks: bool) -> String {
    let args = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let mut s = format!(
        "  pid {pid} (parent {}): {args}\n",
        crate::faults::parent(pid)
    );
    for tid in crate::faults::threads(pid) {
        let (state, wchan) = thread_wait(tid);
        let _ = writeln!(
            s,
            "    tid {tid} {:?} state {state} wchan {wchan}",
            crate::faults::comm(tid)
        );
        if stacks {
            let stack = std::fs::read_to_string(format!("/proc/{tid}/stack")).unwrap_or_default();
            for line in stack.lines().take(8) {
                let _ = writeln!(s, "      {line}");
            }
        }
    }
    s
}

/// A thread's scheduler state and the kernel function it waits in.
fn thread_wait(tid: u32) -> (String, String) {
    let wchan = std::fs::read_to_string(format!("/proc/{tid}/wchan")).unwrap_or_default();
    (crate::faults::state(tid), wchan.trim().to_string())
}

/// A many-threaded daemon in one line: its threads counted by state and
/// wait channel.
pub fn summarize(pid: u32) -> String {
    let mut counts = std::collections::BTreeMap::<(String, String), usize>::new();
    for tid in crate::faults::threads(pid) {
        *counts.entry(thread_wait(tid)).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|((state, wchan), n)| format!("{n}x {state} wchan {wchan}"))
        .collect();
    format!(
        "  pid {pid} ({}): threads {}\n",
        crate::faults::comm(pid),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_watchdog_never_fires() {
        let w = Watchdog::arm_for("quick", Duration::from_millis(200));
        drop(w);
        std::thread::sleep(Duration::from_millis(400));
    }

    #[test]
    fn description_names_threads_and_states() {
        let text = describe(std::process::id(), false);
        assert!(text.contains("state "), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }
}
