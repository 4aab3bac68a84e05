//! Cancellable reads and writes on raw descriptors, and pipe sizing.
//!
//! Reads wait with poll(2) in [`POLL_INTERVAL`] steps and check their token,
//! so a reader on an idle pipe stops as soon as its pipeline is cancelled.
//! Writes to a pipe are cut to what the pipe can take without blocking
//! (capacity minus FIONREAD), so a writer facing a downstream that stopped
//! reading also wakes up to see the token. Each wait reports its idle time
//! to an optional [`Idle`] hook, which the meter uses for its stall watchdog.

use crate::cancel::{Cancel, Cancelled, POLL_INTERVAL};
use anyhow::Context;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::{AsFd, BorrowedFd};
use std::io;
use std::time::{Duration, Instant};

/// Default pipe capacity we ask for with F_SETPIPE_SZ: 1 MiB.
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;
const PAGE: usize = 4096;

/// Reads `r` to its end, keeping at most `limit` bytes; `Ok(None)` when
/// it holds more. For text that is small by nature (a child's listing, a
/// `--size-file`): what a broken or hostile producer sends can never make
/// us allocate more than `limit`.
pub fn read_at_most(r: impl io::Read, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use io::Read;
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

/// What kind of file a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A pipe or FIFO.
    Pipe,
    /// A regular file.
    File,
    /// A socket.
    Socket,
    /// A character device (terminals, /dev/null, /dev/zero).
    CharDevice,
    /// Anything else.
    Other,
}

/// Which side of a copy is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Waiting for input to arrive.
    Input,
    /// Waiting for the output to accept data.
    Output,
}

/// Called while a read or write waits; an error ends the wait (and the copy).
pub trait Idle {
    /// `waited` is how long this wait has lasted so far.
    fn idle(&mut self, side: Side, waited: Duration) -> anyhow::Result<()>;
}

/// An [`Idle`] hook that does nothing.
pub struct NoIdle;

impl Idle for NoIdle {
    fn idle(&mut self, _: Side, _: Duration) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The kind of file behind `fd`.
pub fn fd_kind(fd: BorrowedFd<'_>) -> FdKind {
    use rustix::fs::FileType;
    match rustix::fs::fstat(fd) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::Fifo => FdKind::Pipe,
            FileType::RegularFile => FdKind::File,
            FileType::Socket => FdKind::Socket,
            FileType::CharacterDevice => FdKind::CharDevice,
            _ => FdKind::Other,
        },
        Err(_) => FdKind::Other,
    }
}

/// The system's limit for F_SETPIPE_SZ (/proc/sys/fs/pipe-max-size).
pub fn pipe_max_size() -> usize {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_PIPE_SIZE)
}

/// Raises a pipe's capacity towards `want` (capped by the system limit) and
/// returns the capacity it has afterwards; a refusal keeps the old size.
/// Returns `None` when `fd` is not a pipe.
pub fn grow_pipe(fd: BorrowedFd<'_>, want: usize) -> Option<usize> {
    if fd_kind(fd) != FdKind::Pipe {
        return None;
    }
    let current = rustix::pipe::fcntl_getpipe_size(fd).ok()?;
    let target = want.min(pipe_max_size());
    if target > current {
        if let Ok(n) = rustix::pipe::fcntl_setpipe_size(fd, target) {
            return Some(n);
        }
    }
    Some(current)
}

/// Waits until `fd` is ready for `flags` or `timeout` passes; true if ready
/// (errors and hang-ups count as ready: the next call reports them).
pub fn wait_ready(fd: BorrowedFd<'_>, flags: PollFlags, timeout: Duration) -> io::Result<bool> {
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut fds = [PollFd::new(&fd, flags)];
    loop {
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits for `fd` to be ready, checking `cancel` and calling `idle` each
/// [`POLL_INTERVAL`].
pub fn wait_cancellable(
    fd: BorrowedFd<'_>,
    side: Side,
    cancel: &Cancel,
    idle: &mut dyn Idle,
) -> anyhow::Result<()> {
    let flags = match side {
        Side::Input => PollFlags::IN,
        Side::Output => PollFlags::OUT,
    };
    let start = Instant::now();
    loop {
        cancel.check()?;
        if wait_ready(fd, flags, POLL_INTERVAL)? {
            return Ok(());
        }
        idle.idle(side, start.elapsed())?;
    }
}

/// Reads once into `buf` once input is available; 0 means end of input.
pub fn read_some(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    cancel: &Cancel,
    idle: &mut dyn Idle,
) -> anyhow::Result<usize> {
    loop {
        wait_cancellable(fd, Side::Input, cancel, idle)?;
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(io::Error::from(e)).context("reading input"),
        }
    }
}

/// Reads once, once input is available, appending to `buf` without letting
/// it grow past `limit` bytes; returns the bytes added (0: end of input, or
/// `buf` already at `limit`). Reads into spare capacity: nothing is
/// zero-filled first, whatever the capacity beyond `limit`.
pub fn read_some_into(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    limit: usize,
    cancel: &Cancel,
    idle: &mut dyn Idle,
) -> anyhow::Result<usize> {
    let len = buf.len();
    if len >= limit {
        return Ok(0);
    }
    buf.reserve_exact(limit - len);
    loop {
        wait_cancellable(fd, Side::Input, cancel, idle)?;
        match read_into_spare(fd, buf, limit - len) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(io::Error::from(e)).context("reading input"),
        }
    }
}

/// One read(2) into the first `max` bytes of `buf`'s spare capacity (which
/// must hold them), appending what it got.
///
/// The one `unsafe` of the data path, because neither std nor rustix can
/// read into *part* of a vector's spare capacity: rustix's
/// `spare_capacity` always offers all of it, and a framed source reads one
/// frame into a block with room for more (the alternatives, zero-filling the
/// window before each read or reading past the frame and copying the
/// excess back, cost a pass over the data).
#[allow(unsafe_code)]
fn read_into_spare(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, max: usize) -> rustix::io::Result<usize> {
    let spare = &mut buf.spare_capacity_mut()[..max];
    let (filled, _) = rustix::io::read(fd, spare)?;
    let got = filled.len();
    // SAFETY: read(2) initialised the `got <= max` bytes that follow the
    // vector's length, which lie within its capacity.
    unsafe { buf.set_len(buf.len() + got) };
    Ok(got)
}

/// Reads until `buf` is full or input ends; returns the bytes read.
pub fn read_full(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    cancel: &Cancel,
    idle: &mut dyn Idle,
) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = read_some(fd, &mut buf[filled..], cancel, idle)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// A descriptor written with cancellable, non-blocking-in-practice writes.
pub struct Writer<'fd> {
    fd: BorrowedFd<'fd>,
    pipe_capacity: Option<usize>,
}

impl<'fd> Writer<'fd> {
    /// Wraps `fd`, noting its pipe capacity if it is a pipe.
    pub fn new(fd: BorrowedFd<'fd>) -> Self {
        let pipe_capacity = match fd_kind(fd) {
            FdKind::Pipe => rustix::pipe::fcntl_getpipe_size(fd).ok(),
            _ => None,
        };
        Writer { fd, pipe_capacity }
    }

    /// Refreshes the pipe capacity after someone resized the pipe.
    pub fn refresh(&mut self) {
        *self = Writer::new(self.fd);
    }

    /// How much can be written now without blocking (at least one page when
    /// poll said the pipe is writable).
    fn room(&self, want: usize) -> usize {
        let Some(cap) = self.pipe_capacity else {
            return want;
        };
        let used = rustix::io::ioctl_fionread(self.fd).unwrap_or(0) as usize;
        // Each occupied pipe slot is a page; allow for one partial slot at
        // each end of the queued data.
        let used_pages = used.div_ceil(PAGE) + 2;
        let free = (cap / PAGE).saturating_sub(used_pages) * PAGE;
        want.min(free.max(PAGE))
    }

    /// Writes all of `data`, waiting as needed.
    pub fn write_all(
        &mut self,
        mut data: &[u8],
        cancel: &Cancel,
        idle: &mut dyn Idle,
    ) -> anyhow::Result<()> {
        while !data.is_empty() {
            wait_cancellable(self.fd, Side::Output, cancel, idle)?;
            let chunk = self.room(data.len());
            match rustix::io::write(self.fd, &data[..chunk]) {
                Ok(0) => {
                    return Err(io::Error::from(io::ErrorKind::WriteZero)).context("writing output")
                }
                Ok(n) => data = &data[n..],
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(e) => return Err(io::Error::from(e)).context("writing output"),
            }
        }
        Ok(())
    }
}

/// Standard input as a borrowed descriptor.
pub fn stdin_fd() -> BorrowedFd<'static> {
    rustix::stdio::stdin()
}

/// Standard output as a borrowed descriptor.
pub fn stdout_fd() -> BorrowedFd<'static> {
    rustix::stdio::stdout()
}

/// True when `err` is the marker of a cancelled wait.
pub fn is_cancelled(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Cancelled>().is_some()
}

/// Borrows any descriptor holder as a `BorrowedFd`.
pub fn borrow<F: AsFd>(f: &F) -> BorrowedFd<'_> {
    f.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_some_into_stops_at_the_limit_with_room_beyond_it() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"0123456789").unwrap();
        drop(w);
        let c = Cancel::new();
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"ab");
        assert_eq!(
            read_some_into(r.as_fd(), &mut buf, 6, &c, &mut NoIdle).unwrap(),
            4
        );
        assert_eq!(buf, b"ab0123");
        assert_eq!(
            read_some_into(r.as_fd(), &mut buf, 6, &c, &mut NoIdle).unwrap(),
            0
        );
        assert_eq!(
            read_some_into(r.as_fd(), &mut buf, 64, &c, &mut NoIdle).unwrap(),
            6
        );
        assert_eq!(buf, b"ab0123456789");
        assert_eq!(
            read_some_into(r.as_fd(), &mut buf, 64, &c, &mut NoIdle).unwrap(),
            0
        );
    }

    #[test]
    fn read_at_most_stops_at_the_limit() {
        assert_eq!(read_at_most(&b"abc"[..], 3).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_at_most(&b"abcd"[..], 3).unwrap(), None);
        let zeros = std::fs::File::open("/dev/zero").unwrap();
        assert_eq!(read_at_most(zeros, 1 << 20).unwrap(), None);
    }

    #[test]
    fn pipe_is_detected_and_grown() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        assert_eq!(fd_kind(r.as_fd()), FdKind::Pipe);
        let n = grow_pipe(w.as_fd(), 256 * 1024).unwrap();
        assert!(n >= 64 * 1024);
        let f = tempfile::tempfile().unwrap();
        assert_eq!(fd_kind(f.as_fd()), FdKind::File);
        assert_eq!(grow_pipe(f.as_fd(), 1 << 20), None);
    }

    #[test]
    fn idle_reader_stops_on_cancel() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            c2.cancel();
        });
        let mut buf = [0u8; 8];
        let err = read_some(r.as_fd(), &mut buf, &cancel, &mut NoIdle).unwrap_err();
        assert!(is_cancelled(&err));
        t.join().unwrap();
    }

    #[test]
    fn writer_to_full_pipe_stops_on_cancel() {
        let (_r, w) = rustix::pipe::pipe().unwrap();
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c2.cancel();
        });
        let data = vec![7u8; 4 << 20];
        let mut wr = Writer::new(w.as_fd());
        let err = wr.write_all(&data, &cancel, &mut NoIdle).unwrap_err();
        assert!(is_cancelled(&err), "{err:#}");
        t.join().unwrap();
    }

    #[test]
    fn broken_pipe_is_an_io_error() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        drop(r);
        let mut wr = Writer::new(w.as_fd());
        let err = wr.write_all(b"x", &Cancel::new(), &mut NoIdle).unwrap_err();
        assert!(crate::exit::is_broken_pipe(&err));
        assert_eq!(crate::exit::classify(&err), crate::Exit::Io);
    }
}
