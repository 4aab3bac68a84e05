//! `zfs send` for the stand-in: `-n/-v/-P` estimates measured on the real
//! stream, `-w/-c/-L/-e/-h/-b/-V` accepted, `-t TOKEN` resumed streams.

use crate::stream::{self, ty, Begin, Header, Next, RecordReader};
use crate::{exec_real, nicenum, real_zfs, snapshot_guids, zfs_fail, zfs_usage, BUF_SIZE};
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use zpipe_core::fletcher4::Fletcher4;
use zpipe_core::nvlist::{self, NvList, NvValue};
use zrecv_wrap::token::{self, ResumeToken};

/// `BEGINNV_RESUME_OBJECT` in a resumed stream's BEGIN payload.
pub const RESUME_OBJECT: &str = "resume_object";
/// `BEGINNV_RESUME_OFFSET` in a resumed stream's BEGIN payload.
pub const RESUME_OFFSET: &str = "resume_offset";

/// Parsed `zfs send` arguments.
#[derive(Default)]
struct Args {
    dryrun: bool,
    verbose: bool,
    parsable: bool,
    token: Option<String>,
    /// `-i`/`-I` and its argument.
    incremental: Option<(char, String)>,
    replicate: bool,
    /// Flags passed to the real `zfs send` (`-R`, `-D`, `-p`).
    pass: Vec<String>,
    snapshot: Option<String>,
}

impl Args {
    fn real_args(&self) -> Vec<String> {
        let mut v = vec!["send".to_string()];
        v.extend(self.pass.iter().cloned());
        if let Some((c, from)) = &self.incremental {
            v.push(format!("-{c}"));
            v.push(from.clone());
        }
        v.extend(self.snapshot.iter().cloned());
        v
    }
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(long) = arg.strip_prefix("--") {
            match long {
                "raw" | "compressed" | "large-block" | "embed" | "holds" | "backup"
                | "proctitle" => {}
                "dryrun" => a.dryrun = true,
                "verbose" => a.verbose = true,
                "parsable" => a.parsable = true,
                "replicate" => {
                    a.replicate = true;
                    a.pass.push("-R".into());
                }
                "props" => a.pass.push("-p".into()),
                "dedup" => a.pass.push("-D".into()),
                "resume" => {
                    a.token = Some(
                        it.next()
                            .cloned()
                            .ok_or_else(|| zfs_usage("missing argument for '--resume'"))?,
                    )
                }
                other => return Err(zfs_usage(format!("unrecognized option '--{other}'"))),
            }
            continue;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            if a.snapshot.is_some() {
                return Err(zfs_usage("too many arguments"));
            }
            a.snapshot = Some(arg.clone());
            continue;
        };
        let chars: Vec<char> = cluster.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                'n' => a.dryrun = true,
                'v' => a.verbose = true,
                'P' => a.parsable = true,
                // OpenZFS stream options zfs-fuse cannot honour: the
                // stream stays the plain one (docs/STANDIN-ZFS.md).
                'w' | 'c' | 'L' | 'e' | 'h' | 'b' | 'V' | 's' => {}
                'R' => {
                    a.replicate = true;
                    a.pass.push("-R".into());
                }
                'D' | 'p' => a.pass.push(format!("-{c}")),
                'i' | 'I' | 't' => {
                    let rest: String = chars[i + 1..].iter().collect();
                    let val = if rest.is_empty() {
                        it.next().cloned().ok_or_else(|| {
                            zfs_usage(format!("missing argument for '{c}' option"))
                        })?
                    } else {
                        rest
                    };
                    if c == 't' {
                        a.token = Some(val);
                    } else {
                        a.incremental = Some((c, val));
                    }
                    i = chars.len();
                    continue;
                }
                other => return Err(zfs_usage(format!("invalid option '{other}'"))),
            }
            i += 1;
        }
    }
    if a.parsable {
        // OpenZFS: -P implies verbose output.
        a.verbose = true;
    }
    Ok(a)
}

/// Runs `zfs send`.
pub fn main(args: &[String]) -> anyhow::Result<i32> {
    let a = parse(args)?;
    if let Some(t) = a.token.clone() {
        return resume(&a, &t);
    }
    if a.snapshot.is_none() {
        return Err(zfs_usage(format!(
            "missing snapshot argument\n{}",
            crate::SEND_USAGE.trim_end()
        )));
    }
    if !a.verbose && !a.dryrun {
        exec_real(a.real_args());
    }
    if a.verbose {
        let lines = estimate(&a)?;
        print_lines(&lines, a.dryrun, a.parsable)?;
    }
    if a.dryrun {
        return Ok(0);
    }
    exec_real(a.real_args())
}

/// One estimate line: to, from (as printed), size.
struct Line {
    to: String,
    from: Option<String>,
    size: u64,
}

struct Estimate {
    lines: Vec<Line>,
    total: u64,
}

fn print_lines(e: &Estimate, dryrun: bool, parsable: bool) -> io::Result<()> {
    let mut text = String::new();
    for l in &e.lines {
        if parsable {
            match &l.from {
                Some(f) => text.push_str(&format!("incremental\t{f}\t{}\t{}\n", l.to, l.size)),
                None => text.push_str(&format!("full\t{}\t{}\n", l.to, l.size)),
            }
        } else {
            match &l.from {
                Some(f) if !f.contains('@') && !f.contains('#') => {
                    text.push_str(&format!("send from @{f} to {}", l.to))
                }
                Some(f) => text.push_str(&format!("send from {f} to {}", l.to)),
                None => text.push_str(&format!("full send of {}", l.to)),
            }
            if l.size != 0 {
                text.push_str(&format!(" estimated size is {}", nicenum(l.size, true)));
            }
            text.push('\n');
        }
    }
    if parsable {
        text.push_str(&format!("size\t{}\n", e.total));
    } else {
        text.push_str(&format!(
            "total estimated size is {}\n",
            nicenum(e.total, false)
        ));
    }
    if dryrun {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    } else {
        io::stderr().write_all(text.as_bytes())
    }
}

/// Measures the real stream: one line per substream, total = stream length.
fn estimate(a: &Args) -> anyhow::Result<Estimate> {
    let mut child = Command::new(real_zfs())
        .args(a.real_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().map(collect);
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let walked = walk_substreams(out);
    let status = child.wait()?;
    let err_text = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if !status.success() {
        return Err(
            crate::ZfsError(err_text.trim_end().to_string(), status.code().unwrap_or(1)).into(),
        );
    }
    let (subs, total) = walked?;
    let snap = a.snapshot.clone().unwrap_or_default();
    let fs = snap.split('@').next().unwrap_or("").to_string();
    let single_i = matches!(a.incremental, Some(('i', _))) && !a.replicate;
    let names = if subs.iter().any(|s| s.1 != 0) && !single_i {
        guid_names(&fs)
    } else {
        Vec::new()
    };
    let lines = subs
        .into_iter()
        .map(|(to, fromguid, size)| {
            let from = if fromguid == 0 {
                None
            } else if single_i {
                let f = a
                    .incremental
                    .as_ref()
                    .map(|x| x.1.clone())
                    .unwrap_or_default();
                Some(if f.starts_with('@') || f.starts_with('#') {
                    format!("{fs}{f}")
                } else {
                    f
                })
            } else {
                Some(
                    names
                        .iter()
                        .find(|(_, g)| *g == fromguid)
                        .map(|(n, _)| n.split('@').nth(1).unwrap_or(n).to_string())
                        .unwrap_or_else(|| format!("{fromguid:#x}")),
                )
            };
            Line { to, from, size }
        })
        .collect();
    Ok(Estimate { lines, total })
}

/// `(name, guid)` of every snapshot under the pool of `fs`.
fn guid_names(fs: &str) -> Vec<(String, u64)> {
    let pool = fs.split('/').next().unwrap_or(fs);
    crate::run_real(&["get", "-Hp", "-r", "-o", "name,value", "guid", pool])
        .ok()
        .filter(|c| c.ok())
        .map(|c| {
            c.stdout
                .lines()
                .filter_map(|l| {
                    let (n, g) = l.split_once('\t')?;
                    Some((n.to_string(), g.trim().parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Collects a child's stderr on a thread.
pub fn collect<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Substreams `(toname, fromguid, size)` and the total length of a stream.
type Walked = (Vec<(String, u64, u64)>, u64);

fn walk_substreams<R: Read>(r: R) -> anyhow::Result<Walked> {
    let mut r = RecordReader::new(r);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut subs = Vec::new();
    let mut current: Option<(u64, String, u64)> = None;
    let mut features = 0;
    loop {
        let start = r.pos;
        let h = match r.header()? {
            Next::Record(h) => h,
            Next::Eof => break,
            Next::Cut => anyhow::bail!("the real zfs send stream ends inside a record"),
        };
        if h.ty() == ty::BEGIN {
            let b = Begin::parse(&h)?;
            features = b.features();
            if b.hdrtype() != stream::COMPOUND {
                current = Some((start, b.toname, b.fromguid));
            }
        }
        let n = h.payload_len(features)?;
        r.payload(n, &mut buf, &mut |_| Ok(()))?;
        if h.ty() == ty::END {
            if let Some((s, to, from)) = current.take() {
                subs.push((to, from, r.pos - s));
            }
        }
    }
    Ok((subs, r.pos))
}

fn corrupt(reason: String) -> anyhow::Error {
    let reason = reason
        .strip_prefix("not a valid resume token: ")
        .unwrap_or(&reason)
        .to_string();
    zfs_fail(format!(
        "cannot resume send: resume token is corrupt ({reason})"
    ))
}

/// `zfs send -t TOKEN`.
fn resume(a: &Args, token_text: &str) -> anyhow::Result<i32> {
    if a.snapshot.is_some() || a.incremental.is_some() || a.replicate {
        return Err(zfs_usage(
            "invalid arguments: a resume token cannot be combined with a snapshot, -i/-I or -R",
        ));
    }
    let t = token::decode(token_text).map_err(|e| corrupt(format!("{e:#}")))?;
    if a.verbose {
        let text = format!("resume token contents:\n{t}");
        if a.dryrun {
            print!("{text}");
        } else {
            eprint!("{text}");
        }
    }
    let fs = t.toname.split('@').next().unwrap_or("").to_string();
    let snaps = snapshot_guids(&fs).unwrap_or_default();
    let Some((to, _)) = snaps
        .iter()
        .find(|(n, g)| *g == t.toguid && n.contains('@'))
    else {
        return Err(zfs_fail(if crate::dataset_exists(&t.toname) {
            format!(
                "cannot resume send: '{}' is no longer the same snapshot used in the initial send",
                t.toname
            )
        } else {
            format!(
                "cannot resume send: '{}' used in the initial send no longer exists",
                t.toname
            )
        }));
    };
    let from = match t.fromguid {
        None => None,
        Some(g) => Some(
            snaps
                .iter()
                .find(|(n, sg)| *sg == g && n.contains('@'))
                .map(|(n, _)| n.clone())
                .ok_or_else(|| {
                    zfs_fail(format!(
                        "cannot resume send: incremental source {g:#x} no longer exists"
                    ))
                })?,
        ),
    };
    if a.verbose {
        let mut counter = Counter(0);
        resumed_stream(&t, to, from.as_deref(), &mut counter)?;
        let e = Estimate {
            lines: vec![Line {
                to: to.clone(),
                from: from.clone(),
                size: counter.0,
            }],
            total: counter.0,
        };
        print_lines(&e, a.dryrun, a.parsable)?;
    }
    if a.dryrun {
        return Ok(0);
    }
    let mut out = io::BufWriter::with_capacity(BUF_SIZE, io::stdout().lock());
    resumed_stream(&t, to, from.as_deref(), &mut out)?;
    out.flush()?;
    Ok(0)
}

/// Counts bytes written.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the resumed stream for `t`: the original BEGIN marked
/// `DMU_BACKUP_FEATURE_RESUMING` with a `resume_object`/`resume_offset`
/// payload, the original records from byte `t.bytes` on, and an END whose
/// checksum covers the resumed stream.
fn resumed_stream(
    t: &ResumeToken,
    to: &str,
    from: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut args = vec!["send".to_string()];
    if let Some(f) = from {
        args.push("-i".into());
        args.push(f.to_string());
    }
    args.push(to.to_string());
    let mut child = Command::new(real_zfs())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().map(collect);
    let src = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let result = write_resumed(t, src, out);
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let err_text = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if !status.success() && result.is_ok() {
        return Err(
            crate::ZfsError(err_text.trim_end().to_string(), status.code().unwrap_or(1)).into(),
        );
    }
    result
}

fn mismatch(detail: String) -> anyhow::Error {
    zfs_fail(format!(
        "cannot resume send: resume token does not match the stream ({detail}); \
         the stand-in resumes only tokens made by its own recv -s"
    ))
}

fn write_resumed<R: Read>(t: &ResumeToken, src: R, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut r = RecordReader::new(src);
    let mut buf = vec![0u8; BUF_SIZE];
    let Next::Record(begin_h) = r.header()? else {
        anyhow::bail!("the real zfs send stream is empty");
    };
    let begin = Begin::parse(&begin_h)?;
    if begin.hdrtype() == stream::COMPOUND || begin.toguid != t.toguid {
        return Err(mismatch("the stream is not the token's snapshot".into()));
    }
    let features = begin.features();
    let n = begin_h.payload_len(features)?;
    r.payload(n, &mut buf, &mut |_| Ok(()))?;
    let mut last = (0, 0);
    while r.pos < t.bytes {
        let h = match r.header()? {
            Next::Record(h) => h,
            _ => {
                return Err(mismatch(format!(
                    "the stream is shorter than {} bytes",
                    t.bytes
                )))
            }
        };
        if h.ty() == ty::END {
            return Err(mismatch(format!("the stream ends before byte {}", t.bytes)));
        }
        let n = h.payload_len(features)?;
        r.payload(n, &mut buf, &mut |_| Ok(()))?;
        last = h.position();
    }
    if r.pos != t.bytes {
        return Err(mismatch(format!("byte {} is inside a record", t.bytes)));
    }
    if last != (t.object, t.offset) {
        return Err(mismatch(format!(
            "the record before byte {} is at object {} offset {}, the token says {} / {}",
            t.bytes, last.0, last.1, t.object, t.offset
        )));
    }
    let mut payload = NvList::new();
    if t.object != 0 || t.offset != 0 {
        payload.add(RESUME_OBJECT, NvValue::Uint64(t.object));
        payload.add(RESUME_OFFSET, NvValue::Uint64(t.offset));
    }
    let packed = if payload.pairs.is_empty() {
        Vec::new()
    } else {
        nvlist::pack_native(&payload)
    };
    let mut b = begin_h.clone();
    b.set_u64(
        stream::U + 8,
        begin.versioninfo | (stream::F_RESUMING << stream::FEATURE_SHIFT),
    );
    b.set_u32(4, u32::try_from(packed.len())?);
    let mut sum = Fletcher4::new();
    let mut emit = |bytes: &[u8], sum: &mut Fletcher4| -> io::Result<()> {
        sum.update(bytes);
        out.write_all(bytes)
    };
    emit(&b.0, &mut sum)?;
    emit(&packed, &mut sum)?;
    loop {
        let mut h: Header = match r.header()? {
            Next::Record(h) => *h,
            Next::Eof => anyhow::bail!("the real zfs send stream has no END record"),
            Next::Cut => anyhow::bail!("the real zfs send stream ends inside a record"),
        };
        if h.ty() == ty::END {
            for (i, w) in sum.sums().iter().enumerate() {
                h.set_u64(stream::U + 8 * i, *w);
            }
            emit(&h.0, &mut sum)?;
            // Drain anything after END so the sender exits cleanly.
            r.payload(u64::MAX, &mut buf, &mut |_| Ok(()))?;
            return Ok(());
        }
        emit(&h.0, &mut sum)?;
        let n = h.payload_len(features)?;
        r.payload(n, &mut buf, &mut |d| emit(d, &mut sum))?;
    }
}
