//! The cases: which rows each one runs (ours and the anchors), with which
//! data, and the targets it judges. Every case's rows run interleaved,
//! round-robin per repetition ([`Ctx::run_rows`]).

use super::corpus::Corpus;
use super::measure::{RowSpec, Runner, Wire};
use super::report::{CaseResult, Machine, Role, RowResult};
use super::stats::{Metric, Op, Target};
use super::Options;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use zpipe_tests::{Netns, Pool, Sshd};

/// Every case, in the order a full run takes them, with a title.
pub const CASES: [(&str, &str); 8] = [
    ("meter", "zpipe-meter in the middle of a pipe"),
    ("meter-limit", "rate-limit accuracy at 50 MiB/s"),
    ("verify", "zpipe-verify framing against SHA-256 tools"),
    ("compress", "zpipe-compress against zstd and pzstd"),
    (
        "transport",
        "zsend-wrap -> ssh -> zrecv-wrap over loopback, no zfs",
    ),
    (
        "zfs",
        "full replication pipelines, real zfs-fuse, loopback sshd",
    ),
    (
        "slow-100mbit",
        "pipelines over a 100 Mbit tbf link between namespaces",
    ),
    (
        "slow-20mbit",
        "pipelines over a 20 Mbit tbf link between namespaces",
    ),
];

/// Cases a `--quick` run takes when none are named.
pub const QUICK_CASES: [&str; 4] = ["meter", "verify", "compress", "transport"];

/// The ssh cipher plain OpenSSH users get by default is chacha20; this is
/// the AES-GCM cipher our wrappers prefer.
const GCM: &str = "aes128-gcm@openssh.com";

/// Everything the cases share.
#[derive(Debug)]
pub struct Ctx {
    /// The options.
    pub opts: Options,
    /// Release binaries.
    pub bin: PathBuf,
    /// The corpus.
    pub corpus: Corpus,
    /// The runner.
    pub runner: Runner,
    /// The command line of this run.
    pub command: String,
    /// Programs found missing (name -> install hint).
    pub missing: Vec<(String, String)>,
}

fn q(p: &Path) -> String {
    zpipe_tests::shell_quote(&p.display().to_string())
}

impl Ctx {
    fn missing_of(&self, row: &RowSpec) -> Option<String> {
        let m: Vec<String> = row
            .needs
            .iter()
            .filter_map(|n| {
                self.missing
                    .iter()
                    .find(|(p, _)| p == n)
                    .map(|(p, hint)| format!("{p} is missing ({hint})"))
            })
            .collect();
        (!m.is_empty()).then(|| m.join("; "))
    }

    /// Sets the case's variables: `$BIN`, `$WORK`, `$MIXED`, `$RAND` and
    /// `extra`; clears the scratch dir.
    fn vars(&mut self, case: &str, extra: &[(&str, String)]) -> anyhow::Result<PathBuf> {
        let work = self.runner.work.join(case);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let env = &mut self.runner.env;
        env.clear();
        env.insert("BIN".into(), self.bin.display().to_string());
        env.insert("WORK".into(), work.display().to_string());
        env.insert("MIXED".into(), self.corpus.mixed.display().to_string());
        env.insert("RAND".into(), self.corpus.random.display().to_string());
        for (k, v) in extra {
            env.insert(k.to_string(), v.clone());
        }
        Ok(work)
    }

    /// Runs `rows` interleaved for `reps` rounds; a row whose program is
    /// missing is skipped, a row that fails stops (with the error kept)
    /// while the others go on.
    pub fn run_rows(&self, case: &str, rows: &[RowSpec], reps: usize) -> Vec<RowResult> {
        let mut out: Vec<RowResult> = rows
            .iter()
            .map(|r| RowResult {
                name: r.name.clone(),
                role: r.role,
                cmd: r.cmd.clone(),
                anchors: r.anchors.clone(),
                samples: Vec::new(),
                summary: None,
                skipped: self.missing_of(r),
            })
            .collect();
        for (r, res) in rows.iter().zip(&out) {
            if let Some(why) = &res.skipped {
                eprintln!("bench: [{case}] SKIP row `{}`: {why}", r.name);
            }
        }
        for rep in 1..=reps {
            for (row, res) in rows.iter().zip(out.iter_mut()) {
                if res.skipped.is_some() {
                    continue;
                }
                match self.runner.run(row) {
                    Ok(s) => {
                        eprintln!(
                            "bench: [{case}] rep {rep}/{reps} {:<28} {:>8.3} s  cpu {:>6.2} s{}",
                            row.name,
                            s.wall_s,
                            s.cpu_all_s.unwrap_or(s.cpu_s),
                            s.wire_bytes
                                .map_or(String::new(), |b| format!("  wire {} MB", b / 1_000_000))
                        );
                        res.samples.push(s);
                    }
                    Err(e) => {
                        eprintln!("bench: [{case}] row `{}` FAILED: {e:#}", row.name);
                        res.skipped = Some(format!("failed: {e:#}"));
                    }
                }
            }
        }
        out
    }

    /// Builds a case result from its rows and targets.
    fn result(
        &self,
        case: &str,
        rows: &[RowSpec],
        results: Vec<RowResult>,
        targets: &[Target],
        params: Vec<(String, String)>,
        machine: Machine,
    ) -> CaseResult {
        let title = CASES
            .iter()
            .find(|c| c.0 == case)
            .map_or(case, |c| c.1)
            .to_string();
        let mut all = params;
        for (k, v) in &self.runner.env {
            all.push((k.clone(), v.clone()));
        }
        all.push(("REPS".into(), self.opts.reps.to_string()));
        let mut c = CaseResult {
            case: case.into(),
            title,
            command: self.command.clone(),
            machine,
            params: all,
            rows: results,
            ratios: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
        };
        c.finish(targets, |name| {
            rows.iter()
                .find(|r| r.name == name)
                .map_or(0, |r| r.bytes_in)
        });
        c
    }
}

fn ours(name: &str, cmd: impl Into<String>, bytes_in: u64) -> RowSpec {
    RowSpec::new(name, Role::Ours, cmd, bytes_in)
}

fn anchor(name: &str, cmd: impl Into<String>, bytes_in: u64) -> RowSpec {
    RowSpec::new(name, Role::Anchor, cmd, bytes_in)
}

fn wall(label: &str, row: &str, per: &str, limit: f64) -> Target {
    Target::ratio(label, row, per, Metric::WallMedian, Op::Le, limit)
}

/// Runs case `name`.
pub fn run_case(ctx: &mut Ctx, name: &str, machine: Machine) -> anyhow::Result<CaseResult> {
    match name {
        "meter" => meter(ctx, machine),
        "meter-limit" => meter_limit(ctx, machine),
        "verify" => verify(ctx, machine),
        "compress" => compress(ctx, machine),
        "transport" => transport(ctx, machine),
        "zfs" => zfs(ctx, machine),
        "slow-100mbit" => {
            let (bytes, sweep) = (ctx.opts.slow100, ctx.opts.sweep.clone());
            slow_link(ctx, machine, "100mbit", bytes, &sweep, true)
        }
        "slow-20mbit" => {
            let (bytes, sweep) = (ctx.opts.slow20, ctx.opts.sweep20.clone());
            slow_link(ctx, machine, "20mbit", bytes, &sweep, false)
        }
        _ => bail!("no case {name}"),
    }
}

/// The meter case runs this many times `--reps` (its runs are short).
pub const METER_REPS_FACTOR: usize = 3;

fn meter(ctx: &mut Ctx, machine: Machine) -> anyhow::Result<CaseResult> {
    ctx.vars("meter", &[])?;
    let n = ctx.corpus.manifest.bytes;
    let mid = |m: &str| format!("cat \"$MIXED\" | $ZB_TOOL {m}");
    let rows = vec![
        ours("meter -q", mid("\"$BIN/zpipe-meter\" -q"), n).vs(&["cat", "pv -q", "mbuffer -m 64M"]),
        anchor("cat", mid("cat"), n),
        anchor("pv -q", mid("pv -q"), n).needs(&["pv"]),
        anchor("mbuffer -m 64M", mid("mbuffer -q -m 64M"), n).needs(&["mbuffer"]),
        ours(
            "meter progress",
            mid("\"$BIN/zpipe-meter\" -i 1s -N bench 2>>\"$WORK/progress.log\""),
            n,
        )
        .vs(&["meter -q"]),
        ours("meter -B 256M", mid("\"$BIN/zpipe-meter\" -q -B 256M"), n).vs(&["mbuffer -m 256M"]),
        anchor("mbuffer -m 256M", mid("mbuffer -q -m 256M"), n).needs(&["mbuffer"]),
    ];
    let targets = [
        wall("meter -q / pv -q", "meter -q", "pv -q", 1.0),
        wall("meter -q / cat", "meter -q", "cat", 0.85),
        Target::absolute(
            "meter -q RSS MiB",
            "meter -q",
            Metric::RssToolMib,
            Op::Le,
            16.0,
        ),
        // A 3% bound is below the run-to-run noise of a 1-second run on a
        // shared machine (±10% here): compare the fastest of many runs,
        // which is what each mode costs when nothing else interferes.
        Target::ratio(
            "meter progress / meter -q (fastest runs)",
            "meter progress",
            "meter -q",
            Metric::WallMin,
            Op::Le,
            1.03,
        ),
        wall(
            "meter -B 256M / mbuffer -m 256M (throughput >= mbuffer)",
            "meter -B 256M",
            "mbuffer -m 256M",
            1.0,
        ),
        Target::absolute(
            "meter -B 256M RSS MiB",
            "meter -B 256M",
            Metric::RssToolMib,
            Op::Le,
            16.0 + 256.0,
        ),
    ];
    // Runs take about a second: three times the repetitions cost little
    // and steady the small differences this case judges.
    let reps = ctx.opts.reps * METER_REPS_FACTOR;
    let results = ctx.run_rows("meter", &rows, reps);
    let mut c = ctx.result("meter", &rows, results, &targets, vec![], machine);
    c.notes.push(format!(
        "{reps} repetitions ({METER_REPS_FACTOR}x --reps); the progress target compares the fastest runs"
    ));
    let log = ctx.runner.work.join("meter/progress.log");
    let lines = std::fs::read_to_string(log).map_or(0, |t| t.lines().count());
    c.notes.push(format!(
        "meter progress wrote {lines} progress lines to a file over all its runs (-i 1s)"
    ));
    Ok(c)
}

fn meter_limit(ctx: &mut Ctx, machine: Machine) -> anyhow::Result<CaseResult> {
    const RATE: u64 = 50 << 20;
    let secs = ctx.opts.limit_secs;
    let bytes = RATE * secs;
    ctx.vars("meter-limit", &[("LIMIT_BYTES", bytes.to_string())])?;
    let src = "head -c \"$LIMIT_BYTES\" /dev/zero | $ZB_TOOL";
    let rows = vec![
        ours(
            "meter -L 50MiB/s",
            format!("{src} \"$BIN/zpipe-meter\" -q -L 50MiB/s"),
            bytes,
        )
        .vs(&["pv -L 50m"]),
        anchor("pv -L 50m", format!("{src} pv -q -L 50m"), bytes).needs(&["pv"]),
    ];
    let results = ctx.run_rows("meter-limit", &rows, ctx.opts.reps);
    let mut c = ctx.result("meter-limit", &rows, results, &[], vec![], machine);
    for row in &c.rows {
        if let Some(s) = &row.summary {
            let rate = bytes as f64 / s.wall_median_s;
            c.notes.push(format!(
                "{}: {:.2} MiB/s achieved over {:.2} s (median), {:+.2} % off 50 MiB/s",
                row.name,
                rate / f64::from(1u32 << 20),
                s.wall_median_s,
                (rate / RATE as f64 - 1.0) * 100.0
            ));
        }
    }
    Ok(c)
}

/// zpipe-verify's throughput target with two threads, GB/s (issue 6).
const VERIFY_GBPS: f64 = 2.5;
/// That target as a share of two cores' openssl SHA-256 rate on the
/// machine it was set on (1.7 GB/s per core there), so it carries over to
/// a CPU whose SHA instructions are slower or faster.
const VERIFY_SHARE_OF_TWO_CORES: f64 = VERIFY_GBPS / (2.0 * 1.7);

fn verify(ctx: &mut Ctx, machine: Machine) -> anyhow::Result<CaseResult> {
    let work = ctx.vars("verify", &[])?;
    let framed = work.join("framed");
    // The framed input of decode, written once (untimed) in 1 MiB writes
    // like the random file, so the page cache holds both alike.
    let out = std::process::Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "{} -T 2 <{} | dd of={} bs=1M iflag=fullblock status=none && cat {} >/dev/null",
                q(&ctx.bin.join("zpipe-verify")),
                q(&ctx.corpus.random),
                q(&framed),
                q(&framed)
            ),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "framing the random file: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    ctx.runner
        .env
        .insert("FRAMED".into(), framed.display().to_string());
    let n = std::fs::metadata(&ctx.corpus.random)?.len();
    let v = "\"$BIN/zpipe-verify\"";
    let rows = vec![
        anchor(
            "openssl dgst -sha256",
            "$ZB_TOOL openssl dgst -sha256 \"$RAND\"",
            n,
        )
        .needs(&["openssl"]),
        anchor("sha256sum", "$ZB_TOOL sha256sum \"$RAND\"", n).needs(&["sha256sum"]),
        ours(
            "encode -T 2",
            format!("$ZB_TOOL {v} -T 2 <\"$RAND\" >/dev/null"),
            n,
        )
        .vs(&["openssl dgst -sha256", "sha256sum"])
        .unmeasured(),
        ours(
            "decode -T 2",
            format!("$ZB_TOOL {v} -d -T 2 <\"$FRAMED\" >/dev/null"),
            n,
        )
        .vs(&["openssl dgst -sha256", "sha256sum"])
        .unmeasured(),
        ours(
            "chain encode | decode",
            format!("{v} -T 2 <\"$RAND\" | {v} -d -T 2 >/dev/null"),
            n,
        )
        .vs(&["sha256sum"])
        .unmeasured(),
    ];
    let cpu = |label: &str, row: &str| {
        Target::ratio(
            label,
            row,
            "openssl dgst -sha256",
            Metric::CpuPerGib,
            Op::Le,
            1.15,
        )
    };
    let targets = [
        cpu("encode CPU/GiB / openssl CPU/GiB", "encode -T 2"),
        cpu("decode CPU/GiB / openssl CPU/GiB", "decode -T 2"),
        Target::absolute(
            "decode -T 2 GB/s (cached file)",
            "decode -T 2",
            Metric::GbPerS,
            Op::Ge,
            VERIFY_GBPS,
        ),
        Target::absolute(
            "encode -T 2 GB/s (cached file)",
            "encode -T 2",
            Metric::GbPerS,
            Op::Ge,
            VERIFY_GBPS,
        ),
        // The same bound scaled to this CPU: the issue's 2.5 GB/s is 0.735
        // of what two cores hash with openssl there (2 x 1.7 GB/s).
        Target::ratio(
            "decode -T 2 GB/s / openssl GB/s (one core), scaled",
            "decode -T 2",
            "openssl dgst -sha256",
            Metric::GbPerS,
            Op::Ge,
            2.0 * VERIFY_SHARE_OF_TWO_CORES,
        ),
        Target::ratio(
            "encode -T 2 GB/s / openssl GB/s (one core), scaled",
            "encode -T 2",
            "openssl dgst -sha256",
            Metric::GbPerS,
            Op::Ge,
            2.0 * VERIFY_SHARE_OF_TWO_CORES,
        ),
        wall(
            "chain / one sha256sum pass",
            "chain encode | decode",
            "sha256sum",
            0.25,
        ),
        Target::absolute(
            "encode RSS MiB",
            "encode -T 2",
            Metric::RssToolMib,
            Op::Le,
            32.0,
        ),
        Target::absolute(
            "decode RSS MiB",
            "decode -T 2",
            Metric::RssToolMib,
            Op::Le,
            32.0,
        ),
    ];
    let results = ctx.run_rows("verify", &rows, ctx.opts.reps);
    let sha_ni = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|t| t.contains(" sha_ni"));
    let mut c = ctx.result("verify", &rows, results, &targets, vec![], machine);
    c.notes.push(format!(
        "input: the random file ({n} bytes) from the page cache; framed size {} bytes; CPU has sha_ni: {sha_ni}",
        std::fs::metadata(&framed).map_or(0, |m| m.len())
    ));
    Ok(c)
}

fn compress(ctx: &mut Ctx, machine: Machine) -> anyhow::Result<CaseResult> {
    ctx.vars("compress", &[])?;
    let work = ctx.runner.work.join("compress");
    let n = ctx.corpus.manifest.bytes;
    let r = std::fs::metadata(&ctx.corpus.random)?.len();
    let zc = "\"$BIN/zpipe-compress\"";
    // Level 9 is slow: its rows read a prefix of the corpus (all three tools
    // the same), so a full run stays well under 40 minutes.
    let nine = ctx.opts.level9.min(n);
    let top = ctx.opts.level19.min(n);
    let slice = work.join("level9-input");
    {
        use std::io::Read;
        let mut input = std::fs::File::open(&ctx.corpus.mixed)?.take(nine);
        std::io::copy(&mut input, &mut std::fs::File::create(&slice)?)?;
    }
    ctx.runner
        .env
        .insert("LEVEL9_INPUT".into(), slice.display().to_string());
    let mut rows = Vec::new();
    for l in [1, 3, 9] {
        let (input, n) = if l == 9 {
            ("$LEVEL9_INPUT", nine)
        } else {
            ("$MIXED", n)
        };
        let (o, z, p) = (
            format!("ours -{l} -T2"),
            format!("zstd -{l} -T2"),
            format!("pzstd -{l} -p2"),
        );
        rows.push(
            ours(
                &o,
                format!("$ZB_TOOL {zc} -{l} -T2 <\"{input}\" >\"$WORK/ours.{l}.zst\""),
                n,
            )
            .vs(&[&z, &p])
            .writes(work.join(format!("ours.{l}.zst"))),
        );
        rows.push(
            anchor(
                &z,
                format!("$ZB_TOOL zstd -{l} -T2 -q -c <\"{input}\" >\"$WORK/zstd.{l}.zst\""),
                n,
            )
            .needs(&["zstd"])
            .writes(work.join(format!("zstd.{l}.zst"))),
        );
        rows.push(
            anchor(
                &p,
                format!("$ZB_TOOL pzstd -{l} -p 2 -q -c <\"{input}\" >\"$WORK/pzstd.{l}.zst\""),
                n,
            )
            .needs(&["pzstd"])
            .writes(work.join(format!("pzstd.{l}.zst"))),
        );
    }
    rows.extend([
        ours(
            "ours -d -T2",
            format!("$ZB_TOOL {zc} -d -T2 <\"$WORK/ours.3.zst\" >/dev/null"),
            n,
        )
        .vs(&["zstd -d", "pzstd -d -p2"])
        .unmeasured(),
        anchor(
            "zstd -d",
            "$ZB_TOOL zstd -d -q -c <\"$WORK/zstd.3.zst\" >/dev/null",
            n,
        )
        .needs(&["zstd"])
        .unmeasured(),
        anchor(
            "pzstd -d -p2",
            "$ZB_TOOL pzstd -d -p 2 -q -c <\"$WORK/pzstd.3.zst\" >/dev/null",
            n,
        )
        .needs(&["pzstd"])
        .unmeasured(),
        // Throughput to /dev/null, as into a pipe: writing 1 GiB into the
        // page cache costs more than storing it, and varies with writeback.
        ours(
            "ours -3 -T2 random",
            format!("$ZB_TOOL {zc} -3 -T2 <\"$RAND\" >/dev/null"),
            r,
        )
        .vs(&["zstd -3 -T2 random"])
        .unmeasured(),
        anchor(
            "zstd -3 -T2 random",
            "$ZB_TOOL zstd -3 -T2 -q -c <\"$RAND\" >/dev/null",
            r,
        )
        .needs(&["zstd"])
        .unmeasured(),
        // The same into a file, for the output size.
        ours(
            "ours -3 -T2 random (file)",
            format!("$ZB_TOOL {zc} -3 -T2 <\"$RAND\" >\"$WORK/ours.rand.zst\""),
            r,
        )
        .writes(work.join("ours.rand.zst")),
        // Memory at the top level, on a slice (reported, not judged).
        ours(
            &format!("ours -19 -T2 ({} MiB)", top >> 20),
            format!("head -c {top} \"$MIXED\" | $ZB_TOOL {zc} -19 -T2 >\"$WORK/ours.19.zst\""),
            top,
        )
        .writes(work.join("ours.19.zst")),
    ]);
    let targets = [
        wall(
            "ours -3 -T2 / zstd -3 -T2 (wall)",
            "ours -3 -T2",
            "zstd -3 -T2",
            0.95,
        ),
        Target::ratio(
            "ours -3 -T2 / zstd -3 -T2 (size)",
            "ours -3 -T2",
            "zstd -3 -T2",
            Metric::BytesOut,
            Op::Le,
            1.01,
        ),
        wall("ours -d / zstd -d (wall)", "ours -d -T2", "zstd -d", 0.6),
        Target::absolute(
            "random at -3: GB/s",
            "ours -3 -T2 random",
            Metric::GbPerS,
            Op::Ge,
            1.5,
        ),
        Target::absolute(
            "random at -3: output / input",
            "ours -3 -T2 random (file)",
            Metric::OutPerIn,
            Op::Le,
            1.001,
        ),
        Target::absolute(
            "ours -3 -T2 RSS MiB",
            "ours -3 -T2",
            Metric::RssToolMib,
            Op::Le,
            64.0,
        ),
    ];
    let results = ctx.run_rows("compress", &rows, ctx.opts.reps);
    let mut c = ctx.result("compress", &rows, results, &targets, vec![], machine);
    c.notes.push(format!(
        "levels 1 and 3 and decompression: the whole mixed corpus ({n} bytes); level 9: its first {nine} bytes"
    ));
    for row in &c.rows {
        if let Some(s) = &row.summary {
            if let Some(o) = s.bytes_out {
                c.notes.push(format!(
                    "{}: output {o} bytes = {:.4} of the input",
                    row.name,
                    o as f64 / s.bytes_in.max(1) as f64
                ));
            }
        }
    }
    // The outputs are large and re-made by every run.
    let _ = std::fs::remove_dir_all(&work);
    Ok(c)
}

/// An `ssh` script in `dir` reaching `sshd` (all options baked in; the
/// client runs in `netns` when given), so commands read `$SSH "$HOST" …`.
fn ssh_script(dir: &Path, sshd: &Sshd, netns: Option<&Netns>) -> anyhow::Result<PathBuf> {
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns.a()].map(String::from));
    }
    argv.push(
        zpipe_tests::find_program("ssh")
            .context("no ssh")?
            .display()
            .to_string(),
    );
    argv.extend(sshd.ssh_options());
    let path = dir.join("ssh");
    zpipe_tests::write_script(
        &path,
        &format!(
            "#!/bin/sh\nexec {} \"$@\"\n",
            zpipe_tests::shell_join(&argv)
        ),
    )?;
    Ok(path)
}

/// Checks the kit's requirements for a case (root, sshd, zfs, netns).
fn need(needs: &[zpipe_tests::Need]) -> anyhow::Result<()> {
    let why: Vec<String> = needs
        .iter()
        .filter_map(|n| zpipe_tests::check(*n).err())
        .collect();
    if why.is_empty() {
        Ok(())
    } else {
        bail!("{}", why.join("; "))
    }
}

fn transport(ctx: &mut Ctx, machine: Machine) -> anyhow::Result<CaseResult> {
    use zpipe_tests::Need;
    need(&[Need::Sshd])?;
    let bytes = ctx.opts.transport.min(ctx.corpus.manifest.bytes);
    let (stream, snap, toguid) = super::corpus::ensure_stream(&ctx.corpus, bytes)?;
    let work = ctx.vars("transport", &[])?;
    let sshd = Sshd::start()?;
    sshd.set_env_path(std::slice::from_ref(&ctx.bin))?;
    let ssh = ssh_script(&work, &sshd, None)?;
    let fake = zpipe_tests::stream::transport_zfs(&work, &stream, toguid, None)?;
    for (k, v) in [
        ("STREAM", stream.display().to_string()),
        ("SNAP", snap),
        ("SSH", ssh.display().to_string()),
        ("HOST", sshd.destination()),
        ("FAKEZFS", fake.display().to_string()),
    ] {
        ctx.runner.env.insert(k.into(), v);
    }
    let n = std::fs::metadata(&stream)?.len();
    let wrap = |extra: &str| {
        format!(
            "$ZB_TOOL \"$BIN/zsend-wrap\" --quiet --zfs \"$FAKEZFS\" \"$SNAP\"{extra} --to \"$HOST:pool/x\" \
             --ssh \"$SSH\" --remote-zrecv \"$BIN/zrecv-wrap\" --recv-arg=--zfs=\"$FAKEZFS\""
        )
    };
    let rows = vec![
        anchor(
            "plain cat | ssh cat",
            "cat \"$STREAM\" | $SSH \"$HOST\" 'cat >/dev/null'",
            n,
        )
        .both_sides(),
        anchor(
            "zstd -3 | ssh zstd -d",
            "zstd -3 -T0 -q -c <\"$STREAM\" | $SSH \"$HOST\" 'zstd -d -q >/dev/null'",
            n,
        )
        .needs(&["zstd"])
        .both_sides(),
        ours("zsend-wrap --to (auto)", wrap(""), n)
            .vs(&[
                "plain cat | ssh cat",
                "zstd -3 | ssh zstd -d",
                "plain aes128-gcm",
            ])
            .both_sides(),
        ours("zsend-wrap --compress off", wrap(" --compress off"), n)
            .vs(&["plain cat | ssh cat", "plain aes128-gcm"])
            .both_sides(),
        // The floor --compress auto adapts down to.
        ours("zsend-wrap --compress 1", wrap(" --compress 1"), n)
            .vs(&["plain cat | ssh cat", "zsend-wrap --compress off"])
            .both_sides(),
        // Plain's cipher: the cipher's share of the difference.
        ours(
            "zsend-wrap (auto) chacha20",
            wrap(" --ssh-cipher chacha20-poly1305@openssh.com"),
            n,
        )
        .vs(&["plain cat | ssh cat"])
        .both_sides(),
        anchor(
            "plain aes128-gcm",
            format!("cat \"$STREAM\" | $SSH -c {GCM} \"$HOST\" 'cat >/dev/null'"),
            n,
        )
        .both_sides(),
    ];
    let rows: Vec<RowSpec> = rows.into_iter().map(|r| r.unmeasured()).collect();
    let targets = [
        wall(
            "zsend-wrap (auto) / plain cat | ssh cat",
            "zsend-wrap --to (auto)",
            "plain cat | ssh cat",
            0.75,
        ),
        // Issue 7's own line: beat plain.
        wall(
            "zsend-wrap (auto) / plain cat | ssh cat (beats plain)",
            "zsend-wrap --to (auto)",
            "plain cat | ssh cat",
            1.0,
        ),
    ];
    // Into the page cache.
    let _ = std::process::Command::new("cat")
        .arg(&stream)
        .stdout(std::process::Stdio::null())
        .status();
    let results = ctx.run_rows("transport", &rows, ctx.opts.reps);
    let mut c = ctx.result("transport", &rows, results, &targets, vec![], machine);
    c.notes.push(format!(
        "stream: a ZFS send stream ({n} bytes) of the first {bytes} bytes of the mixed corpus; `zfs` is a stand-in that cats it and receives to /dev/null; CPU (both sides) counts sshd and the remote commands"
    ));
    drop(sshd);
    Ok(c)
}

fn zfs(ctx: &mut Ctx, machine: Machine) -> anyhow::Result<CaseResult> {
    use zpipe_tests::Need;
    need(&[Need::Zfs, Need::Sshd])?;
    let bytes = ctx.opts.zfs.min(ctx.corpus.manifest.bytes);
    let pool_bytes = bytes + bytes / 3 + (256 << 20);
    eprintln!(
        "bench: [zfs] creating two pools and writing {} MiB into the source ...",
        bytes >> 20
    );
    let src = Pool::create_sized(pool_bytes)?;
    let dst = Pool::create_sized(pool_bytes)?;
    let ds = src.create_dataset("data");
    fill_dataset(&ctx.corpus, &src.mountpoint().join("data"), bytes)?;
    let snap = src.snapshot("data@s1");
    let work = ctx.vars("zfs", &[])?;
    let sshd = Sshd::start()?;
    sshd.set_env_path(std::slice::from_ref(&ctx.bin))?;
    let ssh = ssh_script(&work, &sshd, None)?;
    let zfs = zpipe_tests::zfs::zfs_program().display().to_string();
    let target = format!("{}/r", dst.name());
    for (k, v) in [
        ("SNAPSHOT", snap.clone()),
        ("SRCDS", ds.clone()),
        ("DSTDS", target.clone()),
        ("SSH", ssh.display().to_string()),
        ("HOST", sshd.destination()),
        ("ZFS", zfs),
    ] {
        ctx.runner.env.insert(k.into(), v);
    }
    let stream_bytes = {
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                &format!(
                    "{} send {} | wc -c",
                    q(zpipe_tests::zfs::zfs_program()),
                    zpipe_tests::shell_quote(&snap)
                ),
            ])
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    // zfs-fuse says "busy" for a moment after a receive: retry the destroy.
    let clean = "for i in $(seq 40); do \"$ZFS\" list \"$DSTDS\" >/dev/null 2>&1 || exit 0; \
                 \"$ZFS\" destroy -r -f \"$DSTDS\" >/dev/null 2>&1; sleep 0.25; done; exit 1";
    let row = |r: RowSpec| {
        let mut r = r.setup(clean).both_sides().unmeasured();
        r.daemon = true;
        r
    };
    let classic = "zstd -3 -T0 -q -c | $SSH \"$HOST\" 'zstd -d -q | zfs recv '\"$DSTDS\"";
    let rows = vec![
        row(anchor(
            "plain zfs send | ssh zfs recv",
            "\"$ZFS\" send \"$SNAPSHOT\" | $SSH \"$HOST\" 'zfs recv '\"$DSTDS\"",
            stream_bytes,
        )),
        row(anchor(
            "zstd -3 classic",
            format!("\"$ZFS\" send \"$SNAPSHOT\" | {classic}"),
            stream_bytes,
        )
        .needs(&["zstd"])),
        row(anchor(
            "zstd -3 classic + pv",
            format!("\"$ZFS\" send \"$SNAPSHOT\" | pv -q | {classic}"),
            stream_bytes,
        )
        .needs(&["zstd", "pv"])),
        row(anchor(
            "zstd -3 classic + mbuffer",
            "\"$ZFS\" send \"$SNAPSHOT\" | mbuffer -q -m 128M | zstd -3 -T0 -q -c | \
             $SSH \"$HOST\" 'zstd -d -q | mbuffer -q -m 128M | zfs recv '\"$DSTDS\"",
            stream_bytes,
        )
        .needs(&["zstd", "mbuffer"])),
        row(ours(
            "zsend-wrap --to",
            "$ZB_TOOL \"$BIN/zsend-wrap\" --quiet \"$SNAPSHOT\" --to \"$HOST:$DSTDS\" --ssh \"$SSH\"",
            stream_bytes,
        )
        .vs(&["plain zfs send | ssh zfs recv", "zstd -3 classic", "zstd -3 classic + mbuffer"])),
        row(ours(
            "zrecv-wrap --from (pull)",
            "$ZB_TOOL \"$BIN/zrecv-wrap\" --quiet --ssh \"$SSH\" --from \"$HOST:$SRCDS\" \"$DSTDS\"",
            stream_bytes,
        )
        .vs(&["plain zfs send | ssh zfs recv", "zstd -3 classic"])),
    ];
    let targets = [
        wall(
            "zsend-wrap --to / plain zfs send | ssh zfs recv",
            "zsend-wrap --to",
            "plain zfs send | ssh zfs recv",
            1.0,
        ),
        wall(
            "pull / plain zfs send | ssh zfs recv",
            "zrecv-wrap --from (pull)",
            "plain zfs send | ssh zfs recv",
            1.0,
        ),
    ];
    let results = ctx.run_rows("zfs", &rows, ctx.opts.reps);
    let mut c = ctx.result("zfs", &rows, results, &targets, vec![], machine);
    c.notes.push(format!(
        "dataset: {bytes} bytes of corpus files in {ds} (zfs-fuse), send stream {stream_bytes} bytes; both pools in the same zfs-fuse daemon, whose CPU is its own column"
    ));
    drop(sshd);
    drop(dst);
    drop(src);
    Ok(c)
}

/// Writes the first `bytes` of the mixed corpus into `dir` as files, one
/// per piece of the manifest (named by index and kind).
fn fill_dataset(corpus: &Corpus, dir: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    std::fs::create_dir_all(dir)?;
    let mut input = std::fs::File::open(&corpus.mixed)?;
    let mut buf = vec![0u8; 1 << 20];
    for (i, p) in corpus.manifest.pieces.iter().enumerate() {
        if p.offset >= bytes {
            break;
        }
        let len = p.len.min(bytes - p.offset);
        input.seek(SeekFrom::Start(p.offset))?;
        let mut out =
            std::fs::File::create(dir.join(format!("{i:05}.{:?}", p.kind).to_lowercase()))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            input.read_exact(&mut buf[..n])?;
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    let _ = std::process::Command::new("sync").status();
    Ok(())
}

fn slow_link(
    ctx: &mut Ctx,
    machine: Machine,
    rate: &str,
    bytes: u64,
    sweep: &[u32],
    judged: bool,
) -> anyhow::Result<CaseResult> {
    use zpipe_tests::Need;
    need(&[Need::Sshd, Need::Netns])?;
    let case = format!("slow-{rate}");
    let bytes = bytes.min(ctx.corpus.manifest.bytes);
    let (stream, snap, toguid) = super::corpus::ensure_stream(&ctx.corpus, bytes)?;
    let work = ctx.vars(&case, &[])?;
    let ns = Netns::pair(rate)?;
    let sshd = Sshd::start_in(&ns)?;
    sshd.set_env_path(std::slice::from_ref(&ctx.bin))?;
    let ssh = ssh_script(&work, &sshd, Some(&ns))?;
    let fake = zpipe_tests::stream::transport_zfs(&work, &stream, toguid, None)?;
    for (k, v) in [
        ("STREAM", stream.display().to_string()),
        ("SNAP", snap),
        ("SSH", ssh.display().to_string()),
        ("HOST", sshd.destination()),
        ("FAKEZFS", fake.display().to_string()),
    ] {
        ctx.runner.env.insert(k.into(), v);
    }
    let n = std::fs::metadata(&stream)?.len();
    let wire = Wire {
        netns: ns.a().to_string(),
        dev: "veth-a".into(),
    };
    let row = |r: RowSpec| {
        let mut r = r.both_sides().unmeasured();
        r.wire = Some(wire.clone());
        r
    };
    let wrap = |extra: &str| {
        format!(
            "$ZB_TOOL \"$BIN/zsend-wrap\" --quiet --zfs \"$FAKEZFS\" \"$SNAP\"{extra} --to \"$HOST:pool/x\" \
             --ssh \"$SSH\" --remote-zrecv \"$BIN/zrecv-wrap\" --recv-arg=--zfs=\"$FAKEZFS\""
        )
    };
    let _ = std::process::Command::new("cat")
        .arg(&stream)
        .stdout(std::process::Stdio::null())
        .status();
    // The sweep: each fixed level once, in order, until two levels in a
    // row take more than SWEEP_STOP times the best so far.
    const SWEEP_STOP: f64 = 1.3;
    let mut sweep_rows = Vec::new();
    let mut sweep_results: Vec<RowResult> = Vec::new();
    let mut best: Option<(u32, f64)> = None;
    let mut slow_in_a_row = 0;
    let mut notes = Vec::new();
    for &level in sweep {
        let r = row(ours(
            &format!("sweep --compress {level}"),
            wrap(&format!(" --compress {level}")),
            n,
        ));
        let mut res = ctx.run_rows(&case, std::slice::from_ref(&r), 1);
        let wall = res[0].samples.first().map(|s| s.wall_s);
        sweep_rows.push(r);
        sweep_results.append(&mut res);
        let Some(wall) = wall else { continue };
        match best {
            Some((_, b)) if wall >= b => {
                slow_in_a_row = if wall > b * SWEEP_STOP {
                    slow_in_a_row + 1
                } else {
                    0
                };
            }
            _ => {
                best = Some((level, wall));
                slow_in_a_row = 0;
            }
        }
        if slow_in_a_row >= 2 {
            notes.push(format!(
                "sweep stopped after level {level}: two levels in a row took over {SWEEP_STOP}x the best"
            ));
            break;
        }
    }
    let best_level = best.map(|b| b.0);
    let mut rows = vec![
        row(anchor(
            "plain cat | ssh cat",
            "cat \"$STREAM\" | $SSH \"$HOST\" 'cat >/dev/null'",
            n,
        )),
        row(anchor(
            "zstd -3 | ssh zstd -d",
            "zstd -3 -T0 -q -c <\"$STREAM\" | $SSH \"$HOST\" 'zstd -d -q >/dev/null'",
            n,
        )
        .needs(&["zstd"])),
    ];
    let best_name = best_level.map(|l| format!("zsend-wrap --compress {l} (best fixed)"));
    let mut auto_vs = vec!["plain cat | ssh cat", "zstd -3 | ssh zstd -d"];
    if let Some(name) = &best_name {
        auto_vs.push(name);
    }
    rows.push(row(
        ours("zsend-wrap (no level given)", wrap(""), n).vs(&auto_vs)
    ));
    rows.push(row(ours(
        "zsend-wrap --compress off",
        wrap(" --compress off"),
        n,
    )
    .vs(&["plain cat | ssh cat"])));
    if let (Some(l), Some(name)) = (best_level, &best_name) {
        rows.push(row(
            ours(name, wrap(&format!(" --compress {l}")), n).vs(&["plain cat | ssh cat"])
        ));
    }
    let mut targets = Vec::new();
    if judged {
        match &best_name {
            Some(name) => targets.push(wall(
                "no level given / best fixed level",
                "zsend-wrap (no level given)",
                name,
                1.03,
            )),
            None => notes.push("no sweep level ran: no best fixed level to judge against".into()),
        }
    }
    let results = ctx.run_rows(&case, &rows, ctx.opts.reps);
    let mut all_rows = rows.clone();
    all_rows.extend(sweep_rows);
    let mut all_results = results;
    all_results.extend(sweep_results);
    let mut c = ctx.result(
        &case,
        &all_rows,
        all_results,
        &targets,
        vec![("RATE".into(), rate.into())],
        machine,
    );
    if let Some((l, w)) = best {
        notes.insert(0, format!("best fixed level in the sweep: {l} ({w:.2} s, one run per level; sweep rows are listed last)"));
    }
    notes.push(format!(
        "stream: a ZFS send stream ({n} bytes) of the first {bytes} bytes of the mixed corpus over veth + tbf {rate} both ways; bytes on wire = veth-a tx_bytes"
    ));
    c.notes.extend(notes);
    drop(sshd);
    drop(ns);
    Ok(c)
}
