//! Child processes (`zfs`, `ssh`): spawned from argv vectors, never through
//! a shell; registered so SIGINT/SIGTERM stop them; their stderr captured
//! (and optionally forwarded) so their own error text can be reported.

use crate::cancel;
use crate::exit;
use anyhow::Context;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How long [`Child::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How much of a child's stderr is kept for error messages.
pub const STDERR_TAIL: usize = 8192;

/// A running child process with captured stderr.
pub struct Child {
    inner: std::process::Child,
    name: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// How to set up a child's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Inherit ours.
    Inherit,
    /// A pipe the caller takes with `take_stdin`/`take_stdout`.
    Pipe,
    /// /dev/null.
    Null,
}

fn stdio(io: Io) -> Stdio {
    match io {
        Io::Inherit => Stdio::inherit(),
        Io::Pipe => Stdio::piped(),
        Io::Null => Stdio::null(),
    }
}

/// Quotes an argv for display (and for a POSIX shell): each word in single
/// quotes unless it is plainly safe.
pub fn quote_argv<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote_word(&a.as_ref().to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes one word for a POSIX shell, exactly once.
pub fn quote_word(w: &str) -> String {
    let safe = !w.is_empty()
        && w.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | '@' | ':' | '=' | '%' | '+' | ',')
        });
    if safe {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

impl Child {
    /// Spawns `argv[0]` with `argv[1..]`. When `forward_stderr` is true the
    /// child's stderr is copied to ours line by line as well as captured.
    pub fn spawn<S: AsRef<OsStr>>(
        argv: &[S],
        stdin: Io,
        stdout: Io,
        forward_stderr: bool,
    ) -> anyhow::Result<Child> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| exit::usage("empty command"))?;
        let name = quote_argv(argv);
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(stdio(stdin))
            .stdout(stdio(stdout))
            .stderr(Stdio::piped());
        let mut inner = cmd.spawn().map_err(|e| {
            exit::child(format!(
                "cannot run {}: {e}",
                prog.as_ref().to_string_lossy()
            ))
        })?;
        cancel::register_child(inner.id());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = inner.stderr.take().context("child stderr")?;
        let keep = Arc::clone(&stderr);
        let stderr_thread = std::thread::Builder::new()
            .name("child-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if forward_stderr {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                    k.extend_from_slice(&buf[..n]);
                    if k.len() > 2 * STDERR_TAIL {
                        let cut = k.len() - STDERR_TAIL;
                        k.drain(..cut);
                    }
                }
            })
            .ok();
        Ok(Child {
            inner,
            name,
            stderr,
            stderr_thread,
            status: None,
        })
    }

    /// The command line, quoted, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Takes the write end of the child's stdin pipe.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.inner.stdin.take()
    }

    /// Takes the read end of the child's stdout pipe.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.inner.stdout.take()
    }

    /// Waits for the child to exit (once; later calls return the same status).
    pub fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        drop(self.inner.stdin.take());
        let s = self
            .inner
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        cancel::unregister_child(self.inner.id());
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        self.status = Some(s);
        Ok(s)
    }

    /// The child's stderr so far, trimmed, on one line.
    pub fn stderr_text(&self) -> String {
        let k = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&k);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines.join(" / ")
    }

    /// The child's stderr so far, as received (lines kept).
    pub fn stderr_raw(&self) -> String {
        let k = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&k).into_owned()
    }

    /// Waits and turns a failure into a child error (exit 4) that carries
    /// the child's own error text.
    pub fn check(&mut self) -> anyhow::Result<()> {
        let status = self.wait()?;
        if status.success() {
            return Ok(());
        }
        Err(exit::child(failure_text(
            &self.name,
            status,
            &self.stderr_text(),
        )))
    }

    /// Stops the child with SIGTERM (if still running) and reaps it. A
    /// paused child (SIGSTOP) is continued so the SIGTERM takes effect, and
    /// one still running after [`STOP_GRACE`] is killed (SIGKILL), so that
    /// stopping never hangs on a child that does not end.
    pub fn stop(&mut self) {
        use rustix::process::{kill_process, Pid, Signal};
        if self.status.is_some() {
            return;
        }
        let Some(pid) = Pid::from_raw(self.inner.id() as i32) else {
            return;
        };
        let _ = kill_process(pid, Signal::TERM);
        let _ = kill_process(pid, Signal::CONT);
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if matches!(self.inner.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if matches!(self.inner.try_wait(), Ok(None)) {
            let _ = kill_process(pid, Signal::KILL);
        }
        let _ = self.wait();
    }
}

/// "`cmd` failed (exit N): text" / "(killed by signal N)".
pub fn failure_text(name: &str, status: ExitStatus, stderr: &str) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".to_string(),
    };
    if stderr.is_empty() {
        format!("{name} failed ({how})")
    } else {
        format!("{name} failed ({how}): {stderr}")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a command to completion and returns its stdout; a failure is a
/// child error with the command's stderr.
pub fn output<S: AsRef<OsStr>>(argv: &[S]) -> anyhow::Result<Vec<u8>> {
    let mut child = Child::spawn(argv, Io::Null, Io::Pipe, false)?;
    let mut out = Vec::new();
    if let Some(so) = child.take_stdout() {
        out = read_output(so, child.name())?;
    }
    child.check()?;
    Ok(out)
}

/// Most bytes of a child's stdout kept in memory as text (snapshot
/// listings, estimates, usage): far above any real listing, and a bound on
/// what a broken or hostile (remote) command can make us allocate.
pub const MAX_OUTPUT: u64 = 64 << 20;

/// Reads a child's stdout to its end, at most [`MAX_OUTPUT`] bytes; more
/// is a child error (exit 4) naming `name`. The caller drops (and so
/// stops) the child on error.
pub fn read_output(stdout: impl Read, name: &str) -> anyhow::Result<Vec<u8>> {
    crate::fdio::read_at_most(stdout, MAX_OUTPUT)
        .with_context(|| format!("reading output of {name}"))?
        .ok_or_else(|| {
            exit::child(format!(
                "{name} printed more than {} MiB; refusing to read more",
                MAX_OUTPUT >> 20
            ))
        })
}

/// Converts string-ish words into an argv vector.
pub fn argv<I, S>(words: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    words.into_iter().map(Into::into).collect()
}

/// A pipeline [`Source`](crate::pipeline::Source) reading a child's stdout.
/// At end of output it reaps the child; when the child failed it hands the
/// child's error text to `on_failure` (zsend-wrap turns it into an ABORT
/// trailer) before reporting end of input.
pub struct ChildSource {
    inner: crate::pipeline::FdSource,
    child: Arc<Mutex<Child>>,
    on_failure: Option<Box<dyn FnOnce(String) + Send>>,
}

impl ChildSource {
    /// Reads `stdout` (taken from `child`) until it ends.
    pub fn new(
        stdout: std::process::ChildStdout,
        child: Arc<Mutex<Child>>,
        on_failure: Box<dyn FnOnce(String) + Send>,
    ) -> Self {
        ChildSource {
            inner: crate::pipeline::FdSource::new(rustix::fd::OwnedFd::from(stdout)),
            child,
            on_failure: Some(on_failure),
        }
    }
}

impl crate::pipeline::Source for ChildSource {
    fn next_block(
        &mut self,
        pool: &crate::pool::BlockPool,
        cancel: &crate::cancel::Cancel,
    ) -> anyhow::Result<Option<crate::pool::Block>> {
        if let Some(b) = self.inner.next_block(pool, cancel)? {
            return Ok(Some(b));
        }
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let status = c.wait()?;
        if !status.success() {
            let text = failure_text(c.name(), status, &c.stderr_text());
            if let Some(f) = self.on_failure.take() {
                f(text);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_exactly_once() {
        assert_eq!(quote_word("tank/home@snap-1"), "tank/home@snap-1");
        assert_eq!(quote_word("a b"), "'a b'");
        assert_eq!(quote_word("a$(touch x)b"), "'a$(touch x)b'");
        assert_eq!(quote_word("it's"), r"'it'\''s'");
        assert_eq!(quote_word(""), "''");
        assert_eq!(quote_word("a;b"), "'a;b'");
    }

    #[test]
    fn failing_child_reports_its_stderr() {
        let mut c = Child::spawn(
            &["sh", "-c", "echo boom >&2; exit 3"],
            Io::Null,
            Io::Null,
            false,
        )
        .unwrap();
        let err = c.check().unwrap_err();
        assert_eq!(exit::classify(&err), exit::Exit::Child);
        assert!(err.to_string().contains("exit 3"), "{err}");
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn output_returns_stdout() {
        assert_eq!(output(&["printf", "a\tb"]).unwrap(), b"a\tb");
        assert!(output(&["/nonexistent/prog"]).is_err());
    }
}
