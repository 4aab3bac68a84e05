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
    parent: Option<Cancel>,
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

    /// A token cancelled by its own `cancel` or by this one's; errors
    /// recorded through it are kept by the root token.
    pub fn child(&self) -> Cancel {
        Cancel {
            inner: Arc::new(Inner {
                parent: Some(self.clone()),
                ..Inner::default()
            }),
        }
    }

    fn root(&self) -> &Cancel {
        match &self.inner.parent {
            Some(p) => p.root(),
            None => self,
        }
    }

    /// Records `err` (in the root token) if it is the first real error,
    /// without cancelling anything; `Cancelled` is never recorded.
    pub fn record(&self, err: anyhow::Error) {
        if err.downcast_ref::<Cancelled>().is_none() {
            let root = self.root();
            let mut first = root.inner.first.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(err);
            }
        }
    }

    /// Records `err` if it is the first real error, then cancels.
    pub fn fail(&self, err: anyhow::Error) {
        self.record(err);
        self.cancel();
    }

    /// True once a real error was recorded.
    pub fn has_error(&self) -> bool {
        let root = self.root();
        let first = root.inner.first.lock().unwrap_or_else(|e| e.into_inner());
        first.is_some()
    }

    /// Takes the first recorded error, if any.
    pub fn take_error(&self) -> Option<anyhow::Error> {
        self.root()
            .inner
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// True once this token or an ancestor was cancelled, or the process
    /// got SIGINT/SIGTERM.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::Relaxed)
            || self.inner.parent.as_ref().is_some_and(Cancel::is_cancelled)
            || signal_received().is_some()
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

/// Sends SIGTERM to every registered child process, and SIGCONT so that
/// a paused (SIGSTOP) child acts on it instead of staying behind.
pub fn terminate_children() {
    let pids = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for pid in pids {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
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
    fn child_tokens_follow_their_parent_and_report_to_the_root() {
        let root = Cancel::new();
        let a = root.child();
        let b = root.child();
        a.cancel();
        assert!(a.is_cancelled() && !b.is_cancelled() && !root.is_cancelled());
        b.record(anyhow::anyhow!("truncated"));
        assert!(root.has_error() && !b.is_cancelled());
        root.cancel();
        assert!(b.is_cancelled());
        assert_eq!(root.take_error().unwrap().to_string(), "truncated");
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
