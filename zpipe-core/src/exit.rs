//! The exit-code policy (docs/EXIT-CODES.md) and typed failures that carry it.
//!
//! Library code returns `anyhow::Error`s; where the kind of failure matters
//! for the exit code, the error chain holds a [`Failure`]. [`classify`] maps
//! any error to its [`Exit`] code: a `Failure` decides, else an
//! `std::io::Error` means an I/O error (3), else usage (1).

use std::fmt;

/// Exit codes shared by every zpipe tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// Everything arrived and was written.
    Success = 0,
    /// Bad flags, bad values or input that is not what the tool reads.
    Usage = 1,
    /// Integrity failure: checksum mismatch, truncation, sender abort.
    Integrity = 2,
    /// I/O error reading input or writing output (EPIPE included), or a stall.
    Io = 3,
    /// A child process (`zfs`, `ssh`) failed.
    Child = 4,
    /// Ended by SIGINT.
    Interrupted = 130,
    /// Ended by SIGTERM.
    Terminated = 143,
}

impl Exit {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Short name used in logs and JSON reports.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Usage => "usage",
            Exit::Integrity => "integrity",
            Exit::Io => "io",
            Exit::Child => "child",
            Exit::Interrupted => "interrupted",
            Exit::Terminated => "terminated",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// An error that knows its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Which exit code this failure maps to.
    pub exit: Exit,
    /// One-line description.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A failure with the given exit code and message.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

/// A usage error (exit 1) as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Exit::Usage, message).into()
}

/// An integrity error (exit 2) as an `anyhow::Error`.
pub fn integrity(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Exit::Integrity, message).into()
}

/// An I/O error (exit 3) as an `anyhow::Error`.
pub fn io(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Exit::Io, message).into()
}

/// A child-process error (exit 4) as an `anyhow::Error`.
pub fn child(message: impl Into<String>) -> anyhow::Error {
    Failure::new(Exit::Child, message).into()
}

/// The exit code for an error: the outermost [`Failure`] in its chain
/// decides; otherwise an `io::Error` anywhere means [`Exit::Io`]; otherwise
/// [`Exit::Usage`].
pub fn classify(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.exit;
        }
    }
    for cause in err.chain() {
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return Exit::Io;
        }
    }
    Exit::Usage
}

/// True when the error chain holds a broken-pipe I/O error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Renders an error as one line: the message and its causes joined by ": ",
/// with newlines folded so a log line stays a line.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    let mut out = String::with_capacity(text.len());
    for (i, part) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str(" / ");
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn failure_in_chain_decides_the_code() {
        let e = Err::<(), _>(integrity("bad checksum"))
            .context("frame 3")
            .unwrap_err();
        assert_eq!(classify(&e), Exit::Integrity);
        assert_eq!(one_line(&e), "frame 3: bad checksum");
    }

    #[test]
    fn io_error_maps_to_three() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing stdout");
        assert_eq!(classify(&e), Exit::Io);
        assert!(is_broken_pipe(&e));
    }

    #[test]
    fn plain_error_is_usage() {
        assert_eq!(classify(&anyhow::anyhow!("nope")), Exit::Usage);
    }

    #[test]
    fn codes_match_the_documented_table() {
        let table = [
            (Exit::Success, 0),
            (Exit::Usage, 1),
            (Exit::Integrity, 2),
            (Exit::Io, 3),
            (Exit::Child, 4),
            (Exit::Interrupted, 130),
            (Exit::Terminated, 143),
        ];
        for (e, c) in table {
            assert_eq!(e.code(), c, "{e:?}");
        }
    }
}
