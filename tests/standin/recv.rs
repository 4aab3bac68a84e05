//! `zfs receive` for the stand-in: `-s` keeps the prefix of a cut stream as
//! partial state and publishes a resume token; a resumed stream (from the
//! stand-in's `send -t`) is completed from that state; `-A` discards it;
//! a new stream onto a dataset with partial state is refused.

use crate::send::{collect, RESUME_OBJECT, RESUME_OFFSET};
use crate::state::{self, Kind, Partial};
use crate::stream::{self, ty, Begin, Header, Next, RecordReader, RECORD_SIZE};
use crate::{dataset_exists, real_zfs, run_real, zfs_fail, zfs_usage, BUF_SIZE};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use zpipe_core::fletcher4::Fletcher4;
use zpipe_core::nvlist;

/// Parsed `zfs receive` arguments.
#[derive(Default)]
struct Args {
    /// Flags passed to the real `zfs receive`.
    pass: Vec<String>,
    resumable: bool,
    abort: bool,
    force: bool,
    prefix: bool,
    tail: bool,
    dryrun: bool,
    target: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            if a.target.is_some() {
                return Err(zfs_usage("too many arguments"));
            }
            a.target = Some(arg.clone());
            continue;
        };
        let chars: Vec<char> = cluster.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            match c {
                's' => a.resumable = true,
                // Skip holds / skip mount-time checks: nothing for zfs-fuse
                // streams (they carry no holds), so accepted and dropped.
                'h' | 'M' => {}
                'A' => a.abort = true,
                'o' | 'x' => {
                    let rest: String = chars[i + 1..].iter().collect();
                    let val = if rest.is_empty() {
                        it.next().cloned().ok_or_else(|| {
                            zfs_usage(format!("missing argument for '{c}' option"))
                        })?
                    } else {
                        rest
                    };
                    a.pass.push(format!("-{c}"));
                    a.pass.push(val);
                    break;
                }
                other => {
                    match other {
                        'F' => a.force = true,
                        'd' => a.prefix = true,
                        'e' => a.tail = true,
                        'n' => a.dryrun = true,
                        _ => {}
                    }
                    a.pass.push(format!("-{other}"));
                }
            }
        }
    }
    Ok(a)
}

/// Runs `zfs receive`.
pub fn main(args: &[String]) -> anyhow::Result<i32> {
    let a = parse(args)?;
    let Some(target_arg) = a.target.clone() else {
        return Err(zfs_usage(format!(
            "missing snapshot argument\n{}",
            crate::RECV_USAGE.trim_end()
        )));
    };
    if a.abort {
        return abort(&target_arg);
    }
    let mut r = RecordReader::new(io::stdin().lock());
    let h = match r.header()? {
        Next::Record(h) => h,
        _ => return Err(zfs_fail("cannot receive: failed to read from stream")),
    };
    let Ok(begin) = Begin::parse(&h) else {
        return pipe_all(&a, &target_arg, &h, &mut r);
    };
    if begin.hdrtype() == stream::COMPOUND {
        return pipe_all(&a, &target_arg, &h, &mut r);
    }
    let target = target_fs(&a, &target_arg, &begin);
    let resuming = begin.features() & stream::F_RESUMING != 0;
    match (state::lookup(&target), resuming) {
        (Some(p), true) => resume_receive(&a, &target_arg, &target, p, &h, &mut r),
        (Some(_), false) => Err(zfs_fail(format!(
            "{}: destination {target} contains partially-complete state from \"zfs receive -s\".",
            errbuf(&begin)
        ))),
        (None, true) => Err(zfs_fail(if dataset_exists(&target) {
            "cannot receive resume stream: invalid backup stream".to_string()
        } else {
            format!("cannot receive resume stream: destination '{target}' does not exist")
        })),
        (None, false) => normal_receive(&a, &target_arg, &target, &h, &begin, &mut r),
    }
}

/// libzfs's action text for a stream.
fn errbuf(b: &Begin) -> &'static str {
    if b.features() & stream::F_RESUMING != 0 {
        "cannot receive resume stream"
    } else if b.wants_new_fs() {
        "cannot receive new filesystem stream"
    } else {
        "cannot receive incremental stream"
    }
}

/// The filesystem a stream lands in (libzfs `zfs_receive_one` naming).
fn target_fs(a: &Args, arg: &str, b: &Begin) -> String {
    if let Some((fs, _)) = arg.split_once('@') {
        return fs.to_string();
    }
    let sent_fs = b.toname.split('@').next().unwrap_or("");
    if a.prefix {
        match sent_fs.split_once('/') {
            Some((_, rest)) => format!("{arg}/{rest}"),
            None => arg.to_string(),
        }
    } else if a.tail {
        let last = sent_fs.rsplit('/').next().unwrap_or(sent_fs);
        format!("{arg}/{last}")
    } else {
        arg.to_string()
    }
}

/// `zfs receive -A`.
fn abort(target: &str) -> anyhow::Result<i32> {
    if !dataset_exists(target) {
        return Err(zfs_fail(format!(
            "cannot open '{target}': dataset does not exist"
        )));
    }
    let Some(p) = state::lookup(target) else {
        return Err(zfs_fail(format!(
            "'{target}' does not have any resumable receive state to abort"
        )));
    };
    if p.kind == Kind::Full {
        destroy_placeholder(target)?;
    } else {
        state::clear(target)?;
    }
    let _ = std::fs::remove_file(&p.path);
    Ok(0)
}

/// Attempts at destroying a placeholder that zfs-fuse reports busy.
const DESTROY_ATTEMPTS: u32 = 20;
/// Pause between those attempts.
const DESTROY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// Destroys the empty filesystem the stand-in created for an interrupted
/// full receive (zfs-fuse's FUSE mount is often briefly busy).
fn destroy_placeholder(target: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    for _ in 0..DESTROY_ATTEMPTS {
        let c = run_real(&["destroy", "-f", target])?;
        if c.ok() {
            return Ok(());
        }
        last = c.stderr.trim_end().to_string();
        std::thread::sleep(DESTROY_PAUSE);
    }
    Err(zfs_fail(last))
}

/// Re-creates the placeholder of a full receive and records `p` on it.
fn restore_placeholder(target: &str, p: &Partial) -> anyhow::Result<()> {
    if !dataset_exists(target) {
        let c = run_real(&["create", target])?;
        if !c.ok() {
            return Err(zfs_fail(c.stderr.trim_end().to_string()));
        }
    }
    state::save(target, p)
}

fn spawn_recv(a: &Args, add_force: bool, target_arg: &str, capture: bool) -> io::Result<Child> {
    let mut args = vec!["receive".to_string()];
    args.extend(a.pass.iter().cloned());
    if add_force && !a.force {
        args.push("-F".into());
    }
    args.push(target_arg.to_string());
    Command::new(real_zfs())
        .args(&args)
        .stdin(Stdio::piped())
        .stderr(if capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
}

/// Streams that the stand-in does not manage: everything to the real zfs.
fn pipe_all<R: Read>(
    a: &Args,
    target_arg: &str,
    h: &Header,
    r: &mut RecordReader<R>,
) -> anyhow::Result<i32> {
    let mut child = spawn_recv(a, false, target_arg, false)?;
    if let Some(stdin) = child.stdin.take() {
        let mut w = BufWriter::with_capacity(BUF_SIZE, stdin);
        let mut buf = vec![0u8; BUF_SIZE];
        let _ = w
            .write_all(&h.0)
            .and_then(|_| r.payload(u64::MAX, &mut buf, &mut |d| w.write_all(d)))
            .and_then(|_| w.flush());
    }
    Ok(child.wait()?.code().unwrap_or(1))
}

/// Where the received bytes go, with the bookkeeping for partial state.
struct Sink {
    child: Option<BufWriter<ChildStdin>>,
    /// The real receive, watched between writes (see [`Sink::put`]).
    child_pid: Option<u32>,
    spool: Option<BufWriter<File>>,
    sum: Option<Fletcher4>,
    written: u64,
    boundary: u64,
    last: (u64, u64),
}

impl Sink {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        // zfs-fuse's daemon, not the `zfs receive` client, reads the
        // stream: killing the client does not stop it. So the stand-in
        // stops writing once the client is gone, and the daemon's receive
        // ends on a cut stream, as OpenZFS's does when `zfs recv` dies.
        if self.child_pid.is_some_and(exited) {
            return Err(io::Error::other("the real zfs receive ended"));
        }
        if let Some(s) = &mut self.sum {
            s.update(b);
        }
        if let Some(f) = &mut self.spool {
            f.write_all(b)?;
        }
        if let Some(c) = &mut self.child {
            c.write_all(b)?;
        }
        self.written += b.len() as u64;
        Ok(())
    }
}

enum Outcome {
    /// The stream ended after its END record.
    Complete,
    /// The input ended early.
    Cut,
    /// Writing failed (the real receive quit) or the stream is malformed.
    Failed(io::Error),
}

fn pump<R: Read>(
    r: &mut RecordReader<R>,
    features: u64,
    sink: &mut Sink,
    rewrite_end: bool,
) -> Outcome {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut ended = false;
    loop {
        let mut h = match r.header() {
            Ok(Next::Record(h)) => h,
            Ok(Next::Eof) => {
                return if ended {
                    Outcome::Complete
                } else {
                    Outcome::Cut
                }
            }
            Ok(Next::Cut) | Err(_) => return Outcome::Cut,
        };
        if h.ty() == ty::END && rewrite_end {
            if let Some(s) = &sink.sum {
                for (i, w) in s.sums().iter().enumerate() {
                    h.set_u64(stream::U + 8 * i, *w);
                }
            }
        }
        let n = match h.payload_len(features) {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(e),
        };
        if let Err(e) = sink.put(&h.0) {
            return Outcome::Failed(e);
        }
        match r.payload(n, &mut buf, &mut |d| sink.put(d)) {
            Ok(got) if got < n => return Outcome::Cut,
            Ok(_) => {}
            Err(e) => return Outcome::Failed(e),
        }
        sink.boundary = sink.written;
        if h.ty() != ty::END && h.ty() != ty::BEGIN {
            sink.last = h.position();
        }
        ended = h.ty() == ty::END;
    }
}

/// True when child `pid` has exited (it stays waitable).
fn exited(pid: u32) -> bool {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return false;
    };
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    matches!(waitid(WaitId::Pid(pid), opts), Ok(Some(_)))
}

/// Closes the child's input, waits, and returns (exit code, the signal
/// that killed it, its stderr).
fn finish(mut child: Child, sink: &mut Sink) -> io::Result<(i32, Option<i32>, String)> {
    let stderr = child.stderr.take().map(collect);
    if let Some(mut c) = sink.child.take() {
        let _ = c.flush();
    }
    let status = child.wait()?;
    let text = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    Ok((status.code().unwrap_or(1), status.signal(), text))
}

fn close_spool(sink: &mut Sink) -> io::Result<()> {
    if let Some(mut f) = sink.spool.take() {
        f.flush()?;
        f.get_ref().set_len(sink.boundary)?;
    }
    Ok(())
}

fn print_saved(action: &str, token: &str) {
    eprintln!(
        "{action}: checksum mismatch or incomplete stream.\n\
         Partially received snapshot is saved.\n\
         A resuming stream can be generated on the sending system by running:\n    \
         zfs send -t {token}"
    );
}

fn normal_receive<R: Read>(
    a: &Args,
    target_arg: &str,
    target: &str,
    h: &Header,
    begin: &Begin,
    r: &mut RecordReader<R>,
) -> anyhow::Result<i32> {
    let keep = a.resumable && !a.dryrun && begin.flags & stream::FLAG_CLONE == 0;
    let spool_path = if keep {
        Some(state::new_spool_path(target)?)
    } else {
        None
    };
    let existed = !keep || !begin.wants_new_fs() || dataset_exists(target);
    let mut child = spawn_recv(a, false, target_arg, true)?;
    let child_pid = keep.then(|| child.id());
    let mut sink = Sink {
        child_pid,
        child: child
            .stdin
            .take()
            .map(|s| BufWriter::with_capacity(BUF_SIZE, s)),
        spool: match &spool_path {
            Some(p) => Some(BufWriter::with_capacity(BUF_SIZE, File::create(p)?)),
            None => None,
        },
        sum: None,
        written: 0,
        boundary: 0,
        last: (0, 0),
    };
    let features = begin.features();
    let outcome = begin_then_pump(h, features, r, &mut sink, false);
    let (code, killed, text) = finish(child, &mut sink)?;
    // OpenZFS keeps a `zfs recv -s` killed mid-stream as partial state in
    // the kernel. Here the real receive under the stand-in is what a test
    // kills; the stand-in then keeps the prefix as the kernel would, and
    // dies by the same signal, as the killed `zfs recv` would have.
    let killed_mid_stream = killed.filter(|_| matches!(outcome, Outcome::Failed(_)));
    let cut_and_failed =
        (matches!(outcome, Outcome::Cut) && code != 0) || killed_mid_stream.is_some();
    let (true, Some(path)) = (cut_and_failed, spool_path.clone()) else {
        sink.spool = None;
        if let Some(p) = &spool_path {
            let _ = std::fs::remove_file(p);
        }
        eprint!("{text}");
        if let (Outcome::Failed(e), 0) = (&outcome, code) {
            return Err(zfs_fail(format!("cannot receive: {e}")));
        }
        return Ok(code);
    };
    close_spool(&mut sink)?;
    if sink.boundary < RECORD_SIZE as u64 {
        let _ = std::fs::remove_file(&path);
        eprint!("{text}");
        return Ok(code);
    }
    let kind = if !begin.wants_new_fs() {
        Kind::Incremental
    } else if existed {
        Kind::Overwrite
    } else {
        if killed_mid_stream.is_some() {
            // The daemon's receive only now meets the cut stream; wait for
            // it to roll back the new dataset before holding its place.
            zpipe_tests::faults::wait_until(std::time::Duration::from_secs(20), || {
                !dataset_exists(target)
            });
        }
        let c = run_real(&["create", target])?;
        if !c.ok() {
            let _ = std::fs::remove_file(&path);
            eprint!("{text}");
            return Err(zfs_fail(c.stderr.trim_end().to_string()));
        }
        Kind::Full
    };
    let p = Partial { kind, path };
    state::save(target, &p)?;
    if let Some(sig) = killed_mid_stream {
        die_by(sig);
    }
    print_saved(errbuf(begin), &state::token_string(&p)?);
    Ok(1)
}

/// Ends this process with signal `sig` (SIGKILL when it has no name).
fn die_by(sig: i32) -> ! {
    use rustix::process::{getpid, kill_process, Signal};
    let signal = Signal::from_named_raw(sig).unwrap_or(Signal::KILL);
    let _ = kill_process(getpid(), signal);
    // A caught or ignored signal: SIGKILL cannot be.
    let _ = kill_process(getpid(), Signal::KILL);
    std::process::abort()
}

/// Writes the BEGIN record and its payload, then the rest of the stream.
fn begin_then_pump<R: Read>(
    h: &Header,
    features: u64,
    r: &mut RecordReader<R>,
    sink: &mut Sink,
    rewrite_end: bool,
) -> Outcome {
    if let Err(e) = sink.put(&h.0) {
        return Outcome::Failed(e);
    }
    let n = match h.payload_len(features) {
        Ok(n) => n,
        Err(e) => return Outcome::Failed(e),
    };
    let mut buf = vec![0u8; BUF_SIZE.min(n as usize + 1)];
    match r.payload(n, &mut buf, &mut |d| sink.put(d)) {
        Ok(got) if got < n => return Outcome::Cut,
        Ok(_) => {}
        Err(e) => return Outcome::Failed(e),
    }
    sink.boundary = sink.written;
    pump(r, features, sink, rewrite_end)
}

fn resume_receive<R: Read>(
    a: &Args,
    target_arg: &str,
    target: &str,
    p: Partial,
    h: &Header,
    r: &mut RecordReader<R>,
) -> anyhow::Result<i32> {
    let begin = Begin::parse(h)?;
    let features = begin.features();
    let n = h.payload_len(features)?;
    let mut payload = Vec::new();
    let mut buf = vec![0u8; BUF_SIZE];
    if r.payload(n, &mut buf, &mut |d| {
        payload.extend_from_slice(d);
        Ok(())
    })? < n
    {
        return Err(zfs_fail(
            "cannot receive resume stream: failed to read from stream",
        ));
    }
    let (object, offset) = if payload.is_empty() {
        (0, 0)
    } else {
        let nv = nvlist::unpack_native(&payload)
            .map_err(|e| zfs_fail(format!("cannot receive resume stream: invalid backup stream\n(stand-in: BEGIN payload: {e})")))?;
        (
            nv.uint64(RESUME_OBJECT).unwrap_or(0),
            nv.uint64(RESUME_OFFSET).unwrap_or(0),
        )
    };
    let info = state::scan_prefix(&p.path)
        .map_err(|e| zfs_fail(format!("cannot receive resume stream: {e:#}")))?;
    if info.begin.toguid != begin.toguid || info.last != (object, offset) {
        return Err(zfs_fail(format!(
            "cannot receive resume stream: invalid backup stream\n\
             (stand-in: the partial state is for guid {:#x} up to object {} offset {}, \
             the stream resumes guid {:#x} at object {object} offset {offset})",
            info.begin.toguid, info.last.0, info.last.1, begin.toguid
        )));
    }
    let new_path = state::new_spool_path(target)?;
    // A resumed full receive lands where the interrupted one would have:
    // the placeholder goes first, so the real receive is a plain new-fs
    // receive: zfs-fuse's `recv -F` of a full stream onto a freshly created
    // filesystem fails with "I/O error" now and then under concurrency.
    if p.kind == Kind::Full {
        destroy_placeholder(target)?;
    }
    let child = spawn_recv(a, p.kind == Kind::Overwrite, target_arg, true);
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            if p.kind == Kind::Full {
                restore_placeholder(target, &p)?;
            }
            return Err(e.into());
        }
    };
    let mut sink = Sink {
        child_pid: None,
        child: child
            .stdin
            .take()
            .map(|s| BufWriter::with_capacity(BUF_SIZE, s)),
        spool: Some(BufWriter::with_capacity(BUF_SIZE, File::create(&new_path)?)),
        sum: Some(Fletcher4::new()),
        written: 0,
        boundary: 0,
        last: info.last,
    };
    // The saved prefix first, then the resumed records.
    let mut prefix = File::open(&p.path)?;
    let mut prefix_result = Ok(());
    loop {
        let got = match prefix.read(&mut buf) {
            Ok(0) => break,
            Ok(g) => g,
            Err(e) => {
                prefix_result = Err(e);
                break;
            }
        };
        if let Err(e) = sink.put(&buf[..got]) {
            prefix_result = Err(e);
            break;
        }
    }
    sink.boundary = sink.written;
    let outcome = match prefix_result {
        Ok(()) => pump(r, features, &mut sink, true),
        Err(e) => Outcome::Failed(e),
    };
    let (code, _, text) = finish(child, &mut sink)?;
    match outcome {
        Outcome::Cut if code != 0 => {
            close_spool(&mut sink)?;
            let np = Partial {
                kind: p.kind,
                path: new_path,
            };
            if p.kind == Kind::Full {
                restore_placeholder(target, &np)?;
            } else {
                state::save(target, &np)?;
            }
            let _ = std::fs::remove_file(&p.path);
            print_saved("cannot receive resume stream", &state::token_string(&np)?);
            Ok(1)
        }
        _ => {
            sink.spool = None;
            let _ = std::fs::remove_file(&new_path);
            eprint!("{text}");
            if code == 0 {
                if p.kind != Kind::Full {
                    state::clear(target)?;
                }
                let _ = std::fs::remove_file(&p.path);
            } else if p.kind == Kind::Full {
                restore_placeholder(target, &p)?;
            }
            Ok(code)
        }
    }
}
