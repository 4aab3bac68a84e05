//! `cargo xtask soak [--gib N | --mib N] [--release] [--report FILE]`: a
//! long run of the whole push pipeline, not part of CI. With `--corrupt
//! RUNS` it instead does RUNS seeded corruption runs (a flipped bit, a
//! cut, a duplicated block on the wire of `zsend-wrap | zrecv-wrap`, 32 MiB
//! streams unless `--mib` says) and checks that each is detected and that
//! the fake receive got nothing but a prefix of the true stream.
//!
//! `zsend-wrap --compress auto --limit-file F` → ssh (a private loopback
//! sshd from the test kit) → `zrecv-wrap`, with a fake `zfs` on both ends
//! (this same binary, `xtask soak fake-zfs …`): its `send` streams a valid
//! ZFS send stream of the asked size, generated on the fly (records of text
//! and of noise, so compression has work and adapts), and its `receive`
//! reads what arrives. Both ends count the bytes and Fletcher-4 them; the
//! meters of both wrappers report their counts with `--json`.
//!
//! While it runs, the rate limit changes every few seconds (the limit file
//! is rewritten and zsend-wrap gets SIGUSR2), and the resident memory of
//! zsend-wrap and of the remote zrecv-wrap is sampled from /proc every
//! second. At the end it checks that every count and digest matches and
//! that RSS stayed flat (the median of the second half of the run is not
//! above the first half's by more than 25 % + 8 MiB), and prints a
//! Markdown summary (also written to `--report FILE`).
//!
//! Needs root, OpenSSH's sshd and ssh (as the tests do); no ZFS.
//!
//! The fake zfs reads `ZPIPE_FAKE_DIR` (where it writes its `sent` and
//! `received` tallies), `ZPIPE_FAKE_BYTES` (file data in the stream) and
//! `ZPIPE_FAKE_RECV_RATE` (bytes/s its receive reads at most: a slow
//! consumer) and `ZPIPE_FAKE_CHECK` (compare what the receive reads with
//! the true stream; write the `verdict`: whole, prefix N or damaged at N;
//! fail unless whole); tests/tests/faults_load.rs uses it too.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zpipe_core::fletcher4::Fletcher4;

/// Default size pushed through: 20 GiB.
const DEFAULT_GIB: u64 = 20;
/// Bytes of one WRITE record of the fake stream.
const RECORD: usize = zpipe_tests::stream::RECORD;
/// The fake snapshot's guid.
const TOGUID: u64 = 0x50a6_0000_2026_1203;
/// How often the limit changes.
const LIMIT_EVERY: Duration = Duration::from_secs(5);
/// The limits cycled through (limit-file contents).
const LIMITS: [&str; 5] = ["unlimited", "40M", "15M", "unlimited", "25M"];
/// Stream size of each `--corrupt` run unless `--mib`/`--gib` says.
const CORRUPT_BYTES: u64 = 32 << 20;
/// RSS sampling interval.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Runs `cargo xtask soak`, or the fake zfs (`soak fake-zfs ARGS`).
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("fake-zfs") {
        let code = fake_zfs(&args[1..])?;
        std::process::exit(code);
    }
    let mut bytes = DEFAULT_GIB << 30;
    let mut release = false;
    let mut report: Option<PathBuf> = None;
    let mut corrupt: Option<u64> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> anyhow::Result<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{what} needs a number"))
        };
        match a.as_str() {
            "--gib" => bytes = num("--gib")? << 30,
            "--mib" => bytes = num("--mib")? << 20,
            "--release" => release = true,
            "--corrupt" => corrupt = Some(num("--corrupt")?),
            "--report" => report = Some(PathBuf::from(it.next().context("--report needs a file")?)),
            other => bail!(
                "cargo xtask soak: unknown argument {other}; usage: cargo xtask soak \
                 [--gib N | --mib N] [--release] [--report FILE] [--corrupt RUNS]"
            ),
        }
    }
    if let Some(runs) = corrupt {
        let explicit = args.iter().any(|a| a == "--gib" || a == "--mib");
        let size = if explicit { bytes } else { CORRUPT_BYTES };
        return corruption_runs(root, runs, size, release, report.as_deref());
    }
    soak(root, bytes, release, report.as_deref())
}

/// A small xorshift generator for the fake stream's contents.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One record: text-like (compresses about 3x) or noise, by turns of
    /// 64 records, so `--compress auto` sees both.
    fn record(&mut self, i: u64, out: &mut [u8]) {
        if (i >> 6) & 1 == 0 {
            const WORDS: [&[u8]; 8] = [
                b"zfs ",
                b"send ",
                b"stream ",
                b"pool ",
                b"tank/home ",
                b"backup ",
                b"guid ",
                b"2026-12-03\n",
            ];
            let mut pos = 0;
            while pos < out.len() {
                let w = WORDS[(self.next() & 7) as usize];
                let n = w.len().min(out.len() - pos);
                out[pos..pos + n].copy_from_slice(&w[..n]);
                pos += n;
            }
        } else {
            for c in out.chunks_mut(8) {
                let b = self.next().to_le_bytes();
                c.copy_from_slice(&b[..c.len()]);
            }
        }
    }
}

/// Writes `DIR/NAME`: "<bytes> <fletcher4 words>".
fn write_tally(name: &str, bytes: u64, sum: &Fletcher4) -> anyhow::Result<()> {
    let dir = std::env::var_os("ZPIPE_FAKE_DIR").context("ZPIPE_FAKE_DIR is not set")?;
    let s = sum.sums();
    std::fs::write(
        Path::new(&dir).join(name),
        format!(
            "{bytes} {:016x}{:016x}{:016x}{:016x}\n",
            s[0], s[1], s[2], s[3]
        ),
    )?;
    Ok(())
}

/// A writer that counts and checksums what passes.
struct Tally<W: Write> {
    inner: W,
    bytes: u64,
    sum: Fletcher4,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The fake `zfs`: usage texts, `send -nvP`, `send`, `receive`, `get`.
fn fake_zfs(args: &[String]) -> anyhow::Result<i32> {
    let size: u64 = std::env::var("ZPIPE_FAKE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let verb = args.first().map(String::as_str).unwrap_or("");
    match (verb, args.len()) {
        ("send", 1) => {
            eprint!(
                "missing snapshot argument\nusage:\n\tsend [-DLPbcehnpsVvw] [-i|-I snapshot] \
                 <snapshot>\n\tsend [-nVvPe] -t <receive_resume_token>\n"
            );
            Ok(2)
        }
        ("receive" | "recv", 1) => {
            eprint!(
                "missing snapshot argument\nusage:\n\treceive [-FhMnsuv] [-o <property=value>] \
                 ... [-x <property>] ... <filesystem|volume|snapshot>\n\treceive -A \
                 <filesystem|volume>\n"
            );
            Ok(2)
        }
        ("send", _) if args[1] == "-nvP" => {
            let records = size / RECORD as u64;
            let approx = records * (RECORD as u64 + 312) + 3 * 312;
            println!("full\t{}\t{approx}\nsize\t{approx}", args[2]);
            Ok(0)
        }
        ("send", _) => {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let mut tally = Tally {
                inner: out,
                bytes: 0,
                sum: Fletcher4::new(),
            };
            let result = fake_stream(&mut tally, size);
            let _ = tally.flush();
            write_tally("sent", tally.bytes, &tally.sum)?;
            match result {
                Ok(()) => Ok(0),
                Err(e) => {
                    eprintln!("fake zfs send: {e}");
                    Ok(1)
                }
            }
        }
        ("receive" | "recv", _) => {
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; 1 << 20];
            let (mut bytes, mut sum) = (0u64, Fletcher4::new());
            // A slow consumer when asked: at most this many bytes/s.
            let rate: Option<u64> = std::env::var("ZPIPE_FAKE_RECV_RATE")
                .ok()
                .and_then(|v| v.parse().ok());
            // With ZPIPE_FAKE_CHECK set, compare with the true stream as it
            // arrives: what reached "zfs recv" must be a prefix of it.
            let truth = std::env::var_os("ZPIPE_FAKE_CHECK").map(|_| {
                let mut v = Vec::new();
                let _ = fake_stream(&mut v, size);
                v
            });
            let mut diverged: Option<u64> = None;
            let t0 = Instant::now();
            loop {
                if let Some(r) = rate.filter(|&r| r > 0) {
                    let due = Duration::from_secs_f64(bytes as f64 / r as f64);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                if let (Some(t), None) = (&truth, diverged) {
                    let start = bytes as usize;
                    let want = t.get(start..(start + n).min(t.len())).unwrap_or(&[]);
                    if let Some(i) = (0..n).find(|&i| want.get(i) != Some(&buf[i])) {
                        diverged = Some(bytes + i as u64);
                    }
                }
                sum.update(&buf[..n]);
                bytes += n as u64;
            }
            write_tally("received", bytes, &sum)?;
            if let Some(t) = &truth {
                let verdict = match diverged {
                    Some(at) => format!("damaged at {at}\n"),
                    None if bytes == t.len() as u64 => "whole\n".to_string(),
                    None => format!("prefix {bytes}\n"),
                };
                let dir = std::env::var_os("ZPIPE_FAKE_DIR").context("ZPIPE_FAKE_DIR")?;
                std::fs::write(Path::new(&dir).join("verdict"), &verdict)?;
                if verdict != "whole\n" {
                    eprintln!("cannot receive: incomplete stream");
                    return Ok(1);
                }
            }
            Ok(0)
        }
        ("get", _) => {
            if args.iter().any(|a| a == "receive_resume_token") {
                println!("-");
            } else {
                println!("{TOGUID}");
            }
            Ok(0)
        }
        _ => {
            eprintln!("fake zfs: unsupported: {}", args.join(" "));
            Ok(1)
        }
    }
}

/// A full ZFS send stream of about `size` bytes of file data.
fn fake_stream(out: &mut dyn Write, size: u64) -> anyhow::Result<()> {
    let mut gen = Gen(0x9E37_79B9_7F4A_7C15);
    let (mut i, records) = (0u64, size / RECORD as u64);
    zpipe_tests::stream::one_file_stream(out, "soak/data@soak", TOGUID, |rec| {
        if i == records {
            return Ok(0);
        }
        gen.record(i, rec);
        i += 1;
        Ok(rec.len())
    })?;
    Ok(())
}

/// Resident memory of `pid` in bytes (0 when gone).
fn rss(pid: u32) -> u64 {
    zpipe_tests::faults::rss(pid)
}

/// (peak, first-half median, second-half median) of samples, bytes.
fn summary(samples: &[(Duration, u64)]) -> (u64, u64, u64) {
    zpipe_tests::faults::rss_summary(samples)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn json_bytes(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.find("\"bytes\":")? + 8..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Builds the workspace binaries of the profile; returns their directory.
fn built_bins(root: &Path, release: bool) -> anyhow::Result<PathBuf> {
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--quiet", "--workspace", "--bins"])
        .current_dir(root);
    if release {
        build.arg("--release");
    }
    if !build.status().context("running cargo build")?.success() {
        bail!("cargo build failed");
    }
    let self_exe = std::env::current_exe()?;
    let target = self_exe
        .parent()
        .and_then(Path::parent)
        .context("xtask binary has no target dir")?
        .to_path_buf();
    Ok(target.join(if release { "release" } else { "debug" }))
}

/// `--corrupt RUNS`: seeded damage (a flipped bit, a cut, a duplicated
/// block; tests/kit/faults.rs `Damage`) on the wire of `zsend-wrap |
/// zrecv-wrap`, with the fake zfs checking what its receive got against
/// the true stream. Every run must fail, and no damaged byte may reach the
/// receive.
fn corruption_runs(
    root: &Path,
    runs: u64,
    bytes: u64,
    release: bool,
    report: Option<&Path>,
) -> anyhow::Result<()> {
    use zpipe_tests::faults::Damage;
    let bins = built_bins(root, release)?;
    let dir = tempfile::Builder::new().prefix("zpipe-soak-").tempdir()?;
    let d = dir.path();
    let zfs = zpipe_tests::shell_join(&[
        "env".to_string(),
        format!("ZPIPE_FAKE_DIR={}", d.display()),
        format!("ZPIPE_FAKE_BYTES={bytes}"),
        "ZPIPE_FAKE_CHECK=1".to_string(),
        bins.join("xtask").display().to_string(),
        "soak".into(),
        "fake-zfs".into(),
    ]);
    let modes: [&[&str]; 2] = [&["--compress", "off"], &["--compress", "3"]];
    let mut lens = Vec::new();
    for m in modes {
        let o = Command::new(bins.join("zsend-wrap"))
            .args(["--quiet", "--zfs", &zfs])
            .args(m)
            .arg("soak/data@soak")
            .stderr(Stdio::inherit())
            .output()?;
        if !o.status.success() {
            bail!("a clean send failed: {}", o.status);
        }
        lens.push(o.stdout.len() as u64);
    }
    println!(
        "soak --corrupt: {runs} seeded runs, {} stream, wire {} (framed) / {} (zstd) bytes",
        mib(bytes),
        lens[0],
        lens[1]
    );
    // One run: zsend-wrap | damage | zrecv-wrap; (status, stderr, verdict).
    let run_one = |mode: usize, damage: Option<Damage>| -> anyhow::Result<_> {
        let _ = std::fs::remove_file(d.join("verdict"));
        let mut s = Command::new(bins.join("zsend-wrap"))
            .args(["--quiet", "--zfs", &zfs])
            .args(modes[mode])
            .arg("soak/data@soak")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let r = Command::new(bins.join("zrecv-wrap"))
            .args(["--quiet", "--zfs", &zfs, "dst/soak"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut r = r;
        let (mut from, mut to) = (
            s.stdout.take().context("stdout")?,
            r.stdin.take().context("stdin")?,
        );
        let copier = std::thread::spawn(move || {
            let _ = match damage {
                Some(d) => d.copy(&mut from, &mut to),
                None => std::io::copy(&mut from, &mut to),
            };
        });
        let out = r.wait_with_output()?;
        let _ = copier.join();
        let _ = s.wait();
        let verdict = std::fs::read_to_string(d.join("verdict")).unwrap_or_default();
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
            verdict,
        ))
    };
    for mode in 0..modes.len() {
        let (status, err, verdict) = run_one(mode, None)?;
        if !status.success() || verdict != "whole\n" {
            bail!("a clean run failed ({status}, receive {verdict:?}): {err}");
        }
    }
    let start = Instant::now();
    let (mut detected, mut prefixes) = (0u64, 0u64);
    let mut codes = std::collections::BTreeMap::new();
    for seed in 0..runs {
        let mode = (seed / 3 % 2) as usize;
        let damage = Damage::pick(seed, lens[mode]);
        let (status, err, verdict) = run_one(mode, Some(damage))?;
        let code = status.code().unwrap_or(-1);
        *codes.entry(code).or_insert(0u64) += 1;
        if !status.success() {
            detected += 1;
        }
        // No receive ran (the damage was caught before) or it got a prefix.
        if verdict.is_empty() || verdict.starts_with("prefix") {
            prefixes += 1;
        } else {
            println!(
                "seed {seed} {damage:?}: exit {code}, receive verdict {verdict:?}: {}",
                err.trim()
            );
        }
    }
    let text = format!(
        "| figure | value |\n|---|---|\n\
         | seeded runs (flip / cut / duplicate in turn; framed and zstd wire) | {runs} |\n\
         | stream size | {} |\n\
         | detected (zrecv-wrap failed) | {detected} of {runs} |\n\
         | receive got only a true prefix (or nothing) | {prefixes} of {runs} |\n\
         | exit codes | {codes:?} |\n\
         | wall time | {:.1} s |\n",
        mib(bytes),
        start.elapsed().as_secs_f64()
    );
    println!("{text}");
    if let Some(p) = report {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    if detected != runs || prefixes != runs {
        bail!("soak --corrupt: damage got through");
    }
    println!("soak --corrupt: passed");
    Ok(())
}

fn soak(root: &Path, bytes: u64, release: bool, report: Option<&Path>) -> anyhow::Result<()> {
    let bins = built_bins(root, release)?;
    let (zsend, zrecv, fake) = (
        bins.join("zsend-wrap"),
        bins.join("zrecv-wrap"),
        bins.join("xtask"),
    );
    if let Err(why) = zpipe_tests::check(zpipe_tests::Need::Sshd) {
        bail!("the soak needs root, sshd and ssh: {why}");
    }
    let sshd = zpipe_tests::Sshd::start()?;
    sshd.set_env_path(std::slice::from_ref(&bins))?;
    let dir = tempfile::Builder::new().prefix("zpipe-soak-").tempdir()?;
    let d = dir.path();
    let zfs = zpipe_tests::shell_join(&[
        "env".to_string(),
        format!("ZPIPE_FAKE_DIR={}", d.display()),
        format!("ZPIPE_FAKE_BYTES={bytes}"),
        fake.display().to_string(),
        "soak".into(),
        "fake-zfs".into(),
    ]);
    let limit_file = d.join("limit");
    std::fs::write(&limit_file, format!("{}\n", LIMITS[0]))?;
    let (send_json, recv_json) = (d.join("send.json"), d.join("recv.json"));
    let ssh = zpipe_tests::faults::ssh_option_line(&sshd);
    println!(
        "soak: {} through zsend-wrap --compress auto → ssh → zrecv-wrap ({} binaries), limit \
         changing every {LIMIT_EVERY:?} through {LIMITS:?}",
        mib(bytes),
        if release { "release" } else { "debug" },
    );
    let start = Instant::now();
    let mut child = Command::new(&zsend)
        .args(["--zfs", &zfs, "--compress", "auto", "--interval", "10s"])
        .arg("--limit-file")
        .arg(&limit_file)
        .arg("--json")
        .arg(&send_json)
        .args(["--ssh", &ssh])
        .arg("--remote-zrecv")
        .arg(&zrecv)
        .arg(format!("--recv-arg=--zfs={zfs}"))
        .arg("--recv-arg=--quiet")
        .arg(format!("--recv-arg=--json={}", recv_json.display()))
        .arg("soak/data@soak")
        .arg("--to")
        .arg(format!("{}:dst/soak", sshd.destination()))
        .stdin(Stdio::null())
        .spawn()
        .context("spawning zsend-wrap")?;
    let pid = child.id();
    let sshd_pid = zpipe_tests::faults::sshd_pid(&sshd);
    let mut send_samples = Vec::new();
    let mut recv_samples = Vec::new();
    let mut changes = 0usize;
    let mut next_change = Instant::now() + LIMIT_EVERY;
    let mut remote: Option<u32> = None;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        let t = start.elapsed();
        let r = rss(pid);
        if r > 0 {
            send_samples.push((t, r));
        }
        if !remote.is_some_and(zpipe_tests::faults::live) {
            remote = zpipe_tests::faults::descendants(sshd_pid)
                .into_iter()
                .find(|&p| zpipe_tests::faults::comm(p) == "zrecv-wrap");
        }
        if let Some(p) = remote {
            let r = rss(p);
            if r > 0 {
                recv_samples.push((t, r));
            }
        }
        if Instant::now() >= next_change {
            changes += 1;
            let limit = LIMITS[changes % LIMITS.len()];
            std::fs::write(&limit_file, format!("{limit}\n"))?;
            zpipe_tests::faults::signal(pid, rustix::process::Signal::USR2);
            next_change += LIMIT_EVERY;
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    let took = start.elapsed();
    if !status.success() {
        bail!("zsend-wrap failed: {status}");
    }
    let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap_or_default();
    let (sent, received) = (read("sent"), read("received"));
    let sent_bytes: u64 = sent.split_whitespace().next().unwrap_or("0").parse()?;
    let (s_meter, r_meter) = (json_bytes(&send_json), json_bytes(&recv_json));
    let (sp, s1, s2) = summary(&send_samples);
    let (rp, r1, r2) = summary(&recv_samples);
    let flat = |first: u64, second: u64| second <= first + first / 4 + (8 << 20);
    let rate = sent_bytes as f64 / took.as_secs_f64() / (1 << 20) as f64;
    let text = format!(
        "| figure | value |\n|---|---|\n\
         | stream size (ZFS bytes) | {sent_bytes} ({}) |\n\
         | wall time | {:.1} s ({rate:.0} MiB/s average) |\n\
         | limit changes (SIGUSR2) | {changes} |\n\
         | sent = received (bytes, Fletcher-4) | {} |\n\
         | zsend-wrap meter bytes | {} |\n\
         | zrecv-wrap meter bytes | {} |\n\
         | zsend-wrap RSS: peak / median 1st half / 2nd half | {} / {} / {} ({} samples) |\n\
         | zrecv-wrap RSS: peak / median 1st half / 2nd half | {} / {} / {} ({} samples) |\n",
        mib(sent_bytes),
        took.as_secs_f64(),
        if sent == received { "yes" } else { "NO" },
        s_meter.map_or("missing".into(), |b| b.to_string()),
        r_meter.map_or("missing".into(), |b| b.to_string()),
        mib(sp),
        mib(s1),
        mib(s2),
        send_samples.len(),
        mib(rp),
        mib(r1),
        mib(r2),
        recv_samples.len(),
    );
    println!("{text}");
    if let Some(p) = report {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    if sent.is_empty() || sent != received {
        bail!("soak: the received stream differs: sent {sent:?}, received {received:?}");
    }
    if s_meter != Some(sent_bytes) || r_meter != Some(sent_bytes) {
        bail!("soak: meter counts {s_meter:?} / {r_meter:?} differ from {sent_bytes}");
    }
    if !flat(s1, s2) || !flat(r1, r2) {
        bail!("soak: RSS grew over the run");
    }
    println!("soak: passed");
    Ok(())
}
