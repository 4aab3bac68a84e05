//! Shutdown: the token a pipeline's threads share, which records the first
//! error and tells every thread to stop; the process-wide record of a
//! SIGINT/SIGTERM; and the registry of child processes that must be stopped
//! when the tool is told to end.
//!
//! Every blocking wait in the core polls with [`POLL_INTERVAL`] and checks
//! its token, so no thread stays blocked on a pipeline that was cancelled.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often blocking waits wake up to look at their token.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    first: Mutex<Option<anyhow::Error>>,
}

/// A cloneable shutdown token that keeps the first error reported to it.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

/// The error a thread returns when it stopped because its token was
/// cancelled; it never wins over the error that caused the cancellation.
#[derive(Debug, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Cancel {
    /// A new token, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token for every clone, without an error.
    pub fn cancel(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
    }

    /// Records `err` if it is the first real error, then cancels.
    pub fn fail(&self, err: anyhow::Error) {
        if err.downcast_ref::<Cancelled>().is_none() {
            let mut first = self.inner.first.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(err);
            }
        }
        self.cancel();
    }

    /// Takes the first recorded error, if any.
    pub fn take_error(&self) -> Option<anyhow::Error> {
        self.inner
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// True once the token was cancelled or the process got SIGINT/SIGTERM.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::Relaxed) || signal_received().is_some()
    }

    /// `Err(Cancelled)` once cancelled, for use with `?` in loops.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Records that a terminating signal arrived (called by the signal watcher).
pub fn note_signal(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// The first SIGINT/SIGTERM received by the process, if any.
pub fn signal_received() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// Registers a child process so that a terminating signal stops it too.
pub fn register_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Removes a child from the registry once it has been reaped.
pub fn unregister_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
}

/// Sends SIGTERM to every registered child process.
pub fn terminate_children() {
    let pids = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for pid in pids {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let a = Cancel::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        a.cancel();
        assert!(b.is_cancelled());
    }

    #[test]
    fn first_real_error_wins() {
        let c = Cancel::new();
        c.fail(Cancelled.into());
        c.fail(anyhow::anyhow!("disk full"));
        c.fail(anyhow::anyhow!("broken pipe"));
        assert_eq!(c.take_error().unwrap().to_string(), "disk full");
        assert!(c.is_cancelled());
    }
}
