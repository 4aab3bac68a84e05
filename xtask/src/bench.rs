//! `cargo xtask bench [CASE...] [--quick] [--reps N] [...]`: the benchmark
//! harness (issue 9; docs/BENCHMARKS.md describes it).
//!
//! It builds the release binaries, makes (once) a deterministic corpus
//! under `<target>/bench-corpus`, says which anchor programs are missing
//! (their rows are skipped, nothing is installed), then runs each case's
//! rows — ours and the anchors — interleaved, round-robin per repetition,
//! and writes `bench/results/<case>.json`, `<case>.svg`, `RESULTS.md` and
//! the README's Benchmarks section. `--quick` uses small sizes and 2
//! repetitions and writes to `<target>/bench-quick` instead.
//!
//! Modules: [`stats`] (min/median, targets), [`report`] (JSON, markdown,
//! SVG, README), [`corpus`] (the data), [`measure`] (running one row,
//! wait4 rusage, cpuacct), [`rusage`] (the one unsafe call), [`cases`]
//! (the rows and targets of each case).

mod cases;
mod corpus;
mod measure;
mod report;
mod rusage;
mod stats;

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Duration;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Programs the anchors need, with what installs them.
const ANCHORS: [(&str, &str); 11] = [
    ("pv", "apt-get install pv"),
    ("mbuffer", "apt-get install mbuffer"),
    ("zstd", "apt-get install zstd"),
    ("pzstd", "apt-get install zstd"),
    ("openssl", "apt-get install openssl"),
    ("sha256sum", "apt-get install coreutils"),
    ("ssh", "apt-get install openssh-client"),
    ("sshd", "apt-get install openssh-server"),
    ("zfs-fuse", "apt-get install zfs-fuse"),
    ("tc", "apt-get install iproute2"),
    ("ip", "apt-get install iproute2"),
];

/// The options of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Cases to run (empty: all, or the quick set).
    pub cases: Vec<String>,
    /// Small sizes, 2 repetitions, results outside bench/results.
    pub quick: bool,
    /// Repetitions per row.
    pub reps: usize,
    /// Size of the mixed corpus.
    pub mixed: u64,
    /// Size of the random file.
    pub random: u64,
    /// Stream size of the transport case.
    pub transport: u64,
    /// Dataset size of the zfs case.
    pub zfs: u64,
    /// Stream size over 100 Mbit.
    pub slow100: u64,
    /// Stream size over 20 Mbit.
    pub slow20: u64,
    /// Seconds of the rate-limit case.
    pub limit_secs: u64,
    /// Fixed levels swept on the 100 Mbit link (the judged oracle).
    pub sweep: Vec<u32>,
    /// Fixed levels swept on the 20 Mbit link (coarser: it is not judged).
    pub sweep20: Vec<u32>,
    /// The level-9 compress rows read this prefix of the mixed corpus.
    pub level9: u64,
    /// The level-19 row (its RSS) reads this prefix.
    pub level19: u64,
    /// A run is killed after this many seconds.
    pub timeout_s: u64,
    /// Build the release binaries first.
    pub build: bool,
}

impl Options {
    /// The defaults of a full run (`quick` false) or a quick one.
    pub fn defaults(quick: bool) -> Options {
        if quick {
            Options {
                cases: Vec::new(),
                quick,
                reps: 2,
                mixed: 64 * MIB,
                random: 32 * MIB,
                transport: 64 * MIB,
                zfs: 64 * MIB,
                slow100: 16 * MIB,
                slow20: 4 * MIB,
                limit_secs: 2,
                sweep: vec![1, 3, 9],
                sweep20: vec![1, 3, 9],
                level9: 64 * MIB,
                level19: 4 * MIB,
                timeout_s: 120,
                build: true,
            }
        } else {
            Options {
                cases: Vec::new(),
                quick,
                reps: 3,
                mixed: 2 * GIB,
                random: GIB,
                transport: 1536 * MIB,
                zfs: GIB,
                slow100: 256 * MIB,
                slow20: 64 * MIB,
                limit_secs: 10,
                sweep: (1..=19).collect(),
                sweep20: vec![1, 3, 5, 7, 9, 12, 15, 19],
                level9: 512 * MIB,
                level19: 16 * MIB,
                timeout_s: 900,
                build: true,
            }
        }
    }

    /// The cases this run takes, in run order.
    pub fn selected(&self) -> Vec<&'static str> {
        let all = cases::CASES.iter().map(|c| c.0);
        if self.cases.is_empty() {
            if self.quick {
                cases::QUICK_CASES.to_vec()
            } else {
                all.collect()
            }
        } else {
            all.filter(|c| {
                self.cases
                    .iter()
                    .any(|w| w == c || (w == "slowlink" && c.starts_with("slow-")))
            })
            .collect()
        }
    }
}

/// Usage text.
const USAGE: &str =
    "usage: cargo xtask bench [CASE...] [--quick] [--reps N] [--corpus SIZE] [--random SIZE]
       [--transport SIZE] [--zfs SIZE] [--slow100 SIZE] [--slow20 SIZE] [--limit-secs N]
       [--sweep 1-19|1,3,9] [--sweep20 LEVELS] [--level9 SIZE] [--timeout SECS] [--no-build] [--list]
cases: meter meter-limit verify compress transport zfs slow-100mbit slow-20mbit (slowlink = both)";

/// Parses `1536M`, `2G`, `64K`, `1048576` (binary multiples).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches("i");
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], KIB),
        Some('M' | 'm') => (&t[..t.len() - 1], MIB),
        Some('G' | 'g') => (&t[..t.len() - 1], GIB),
        _ => (t, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("not a size: {text}"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size too large: {text}"))
}

fn parse_levels(text: &str) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.trim().parse::<u32>()?..=b.trim().parse::<u32>()?),
            None => out.push(part.trim().parse()?),
        }
    }
    if out.is_empty() || out.iter().any(|l| !(1..=19).contains(l)) {
        bail!("--sweep takes levels 1..19: {text}");
    }
    Ok(out)
}

/// Parses the arguments after `bench`.
pub fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options::defaults(quick);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> anyhow::Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--quick" => {}
            "--no-build" => o.build = false,
            "--reps" => {
                o.reps = value(a)?.parse().context("--reps")?;
                if o.reps == 0 {
                    bail!("--reps must be at least 1");
                }
            }
            "--corpus" => o.mixed = parse_size(&value(a)?)?,
            "--random" => o.random = parse_size(&value(a)?)?,
            "--transport" => o.transport = parse_size(&value(a)?)?,
            "--zfs" => o.zfs = parse_size(&value(a)?)?,
            "--slow100" => o.slow100 = parse_size(&value(a)?)?,
            "--slow20" => o.slow20 = parse_size(&value(a)?)?,
            "--limit-secs" => o.limit_secs = value(a)?.parse().context("--limit-secs")?,
            "--sweep" => o.sweep = parse_levels(&value(a)?)?,
            "--sweep20" => o.sweep20 = parse_levels(&value(a)?)?,
            "--level9" => o.level9 = parse_size(&value(a)?)?,
            "--timeout" => o.timeout_s = value(a)?.parse().context("--timeout")?,
            s if s.starts_with('-') => bail!("unknown option {s}\n{USAGE}"),
            s => {
                let known = s == "slowlink" || cases::CASES.iter().any(|c| c.0 == s);
                if !known {
                    bail!("no case {s}\n{USAGE}");
                }
                o.cases.push(s.to_string());
            }
        }
    }
    if o.mixed < 8 * MIB || o.random < MIB {
        bail!("--corpus must be at least 8M and --random at least 1M");
    }
    Ok(o)
}

/// A rough estimate of the seconds `case` takes (the 2-core reference
/// machine; printed before the run so nobody waits blind).
pub fn estimate_secs(o: &Options, case: &str) -> f64 {
    let (m, r, reps) = (o.mixed as f64, o.random as f64, o.reps as f64);
    match case {
        "meter" => reps * cases::METER_REPS_FACTOR as f64 * 7.0 * m / 1.6e9,
        "meter-limit" => reps * 2.0 * o.limit_secs as f64,
        "verify" => reps * 6.0 * r / 1.0e9,
        "compress" => {
            let nine = o.level9.min(o.mixed) as f64;
            let top = o.level19.min(o.mixed) as f64;
            reps * (m * (3.0 / 300e6 + 3.0 / 150e6 + 3.0 / 1e9)
                + nine * 3.0 / 30e6
                + top / 1e6
                + 3.0 * r / 1e9)
        }
        "transport" => reps * 7.0 * o.transport.min(o.mixed) as f64 / 200e6 + 5.0,
        "zfs" => {
            let z = o.zfs.min(o.mixed) as f64;
            30.0 + z / 80e6 + reps * 6.0 * (z / 150e6 + 2.0)
        }
        "slow-100mbit" | "slow-20mbit" => {
            let link = if case == "slow-100mbit" {
                12.5e6
            } else {
                2.5e6
            };
            let n = if case == "slow-100mbit" {
                o.slow100
            } else {
                o.slow20
            }
            .min(o.mixed) as f64;
            let levels = if case == "slow-100mbit" {
                12.0_f64.min(o.sweep.len() as f64)
            } else {
                o.sweep20.len() as f64
            };
            // plain and off at link speed, the compressed rows about 2.5x
            // faster; the 100 Mbit sweep stops after about 12 levels.
            reps * (2.0 * n / link + 3.0 * n / link / 2.5) + levels * n / link / 2.0 + 10.0
        }
        _ => 0.0,
    }
}

/// Shell-quotes and joins words (the product's quoting).
pub fn shell_join(words: &[String]) -> String {
    zpipe_tests::shell_join(words)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

fn build(root: &Path, target: &Path) -> anyhow::Result<()> {
    eprintln!("bench: cargo build --release (the tools' binaries) ...");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "--locked", "--bins"])
        .args([
            "-p",
            "zpipe-meter",
            "-p",
            "zpipe-compress",
            "-p",
            "zpipe-verify",
        ])
        .args(["-p", "zsend-wrap", "-p", "zrecv-wrap"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed: {status}");
    }
    Ok(())
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine(root: &Path) -> report::Machine {
    let cpu = command_output("lscpu", &[])
        .lines()
        .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    report::Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        commit: command_output(
            "git",
            &[
                "-C",
                &root.display().to_string(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
        load: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Writes the JSON and SVG of `case` to `out`.
fn write_case(out: &Path, case: &report::CaseResult) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{}.json", case.case)),
        serde_json::to_string_pretty(case)? + "\n",
    )?;
    std::fs::write(out.join(format!("{}.svg", case.case)), report::svg(case))?;
    Ok(())
}

/// Rewrites RESULTS.md (and, for bench/results, README's section) from
/// every case JSON in `out`.
fn write_summary(root: &Path, out: &Path, readme: bool) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for (name, _) in cases::CASES {
        let p = out.join(format!("{name}.json"));
        if let Ok(text) = std::fs::read_to_string(&p) {
            match serde_json::from_str::<report::CaseResult>(&text) {
                Ok(c) => all.push(c),
                Err(e) => eprintln!("bench: ignoring {}: {e}", p.display()),
            }
        }
    }
    std::fs::write(out.join("RESULTS.md"), report::results_markdown(&all))?;
    if readme {
        let path = root.join("README.md");
        let text = std::fs::read_to_string(&path)?;
        match report::splice_readme(&text, &report::readme_section(&all)) {
            Some(new) => std::fs::write(&path, new)?,
            None => eprintln!(
                "bench: README.md has no `{}` … `{}` markers; its Benchmarks section was not updated",
                report::README_BEGIN,
                report::README_END
            ),
        }
    }
    Ok(())
}

/// Runs `cargo xtask bench` with `args` (see [`USAGE`]).
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("--rusage-wrap") {
        return measure::rusage_wrap(&args[1..]);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--list") {
        for (name, title) in cases::CASES {
            println!("{name:<14} {title}");
        }
        return Ok(());
    }
    let opts = parse_args(args)?;
    let selected = opts.selected();
    let target = target_dir(root);
    if opts.build {
        build(root, &target)?;
    }
    let bin = target.join("release");
    let missing: Vec<(String, String)> = ANCHORS
        .iter()
        .filter(|(p, _)| zpipe_tests::find_program(p).is_none())
        .map(|(p, h)| (p.to_string(), h.to_string()))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "bench: all anchor programs found ({})",
            ANCHORS.map(|a| a.0).join(", ")
        );
    } else {
        for (p, h) in &missing {
            eprintln!(
                "bench: MISSING {p} ({h}): rows needing it are skipped; nothing is installed"
            );
        }
    }
    let total: f64 = selected.iter().map(|c| estimate_secs(&opts, c)).sum();
    eprintln!(
        "bench: cases {} with {} repetitions; estimate ~{:.0} min (plus the corpus the first time)",
        selected.join(", "),
        opts.reps,
        (total / 60.0).ceil()
    );
    let corpus = corpus::ensure(
        &target.join("bench-corpus"),
        &[PathBuf::from("/usr/share"), PathBuf::from("/usr/lib")],
        opts.mixed,
        opts.random,
        corpus::SEED,
    )?;
    // Into the page cache: every case reads from memory.
    for f in [&corpus.mixed, &corpus.random] {
        let _ = std::process::Command::new("cat")
            .arg(f)
            .stdout(std::process::Stdio::null())
            .status();
    }
    let mut runner = measure::Runner::new(
        target.join("bench-work"),
        Duration::from_secs(opts.timeout_s),
    )?;
    // A zfs-fuse daemon started by the zfs case must not land in the CPU
    // group (it is shared, and reported in its own column): start it now.
    if selected.contains(&"zfs") {
        if let Err(e) = zpipe_tests::check(zpipe_tests::Need::Zfs) {
            eprintln!("bench: zfs-fuse is not usable: {e}");
        }
    }
    match measure::CpuGroup::enter() {
        Ok(g) => runner.group = Some(g),
        Err(e) => eprintln!("bench: no CPU figures of the remote side of ssh: {e:#}"),
    }
    let out = if opts.quick {
        target.join("bench-quick")
    } else {
        root.join("bench/results")
    };
    let mut command = String::from("cargo xtask bench");
    for a in args {
        command.push(' ');
        command.push_str(&zpipe_tests::shell_quote(a));
    }
    let mut ctx = cases::Ctx {
        opts,
        bin,
        corpus,
        runner,
        command,
        missing,
    };
    let mut lines = Vec::new();
    let started = std::time::Instant::now();
    for name in &selected {
        eprintln!(
            "bench: === {name} (estimate ~{:.0} s; {:.0} s so far) ===",
            estimate_secs(&ctx.opts, name),
            started.elapsed().as_secs_f64()
        );
        match cases::run_case(&mut ctx, name, machine(root)) {
            Ok(case) => {
                for t in &case.targets {
                    let line = format!("[{name}] {}", report::target_line(t));
                    eprintln!("bench: {line}");
                    lines.push(line);
                }
                for n in &case.notes {
                    eprintln!("bench: [{name}] {n}");
                }
                write_case(&out, &case)?;
            }
            Err(e) => {
                let line = format!("[{name}] SKIP the whole case: {e:#}");
                eprintln!("bench: {line}");
                lines.push(line);
            }
        }
    }
    write_summary(root, &out, !ctx.opts.quick)?;
    println!(
        "bench: results in {} ({:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    for l in &lines {
        println!("{l}");
    }
    let count = |w: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("] {w} ")))
            .count()
    };
    println!(
        "bench: {} PASS, {} FAIL, {} SKIP",
        count("PASS"),
        count("FAIL"),
        count("SKIP")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sizes_parse_with_binary_multiples() {
        assert_eq!(parse_size("1536M").unwrap(), 1536 * MIB);
        assert_eq!(parse_size("2G").unwrap(), 2 * GIB);
        assert_eq!(parse_size("64KiB").unwrap(), 64 * KIB);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn arguments_select_cases_and_sizes() {
        let o = parse_args(&args(&[
            "meter", "slowlink", "--reps", "5", "--corpus", "256M",
        ]))
        .unwrap();
        assert_eq!(o.reps, 5);
        assert_eq!(o.mixed, 256 * MIB);
        assert_eq!(o.selected(), ["meter", "slow-100mbit", "slow-20mbit"]);
        let q = parse_args(&args(&["--quick"])).unwrap();
        assert!(q.quick);
        assert_eq!(q.reps, 2);
        assert_eq!(q.selected(), cases::QUICK_CASES);
        assert_eq!(
            parse_args(&[]).unwrap().selected().len(),
            cases::CASES.len()
        );
        assert_eq!(
            parse_args(&args(&["--sweep", "1-3,9"])).unwrap().sweep,
            [1, 2, 3, 9]
        );
        assert!(parse_args(&args(&["--sweep", "0-3"])).is_err());
        assert!(parse_args(&args(&["nosuchcase"])).is_err());
        assert!(parse_args(&args(&["--reps", "0"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn a_full_run_is_estimated_well_under_forty_minutes() {
        let o = Options::defaults(false);
        let total: f64 = o.selected().iter().map(|c| estimate_secs(&o, c)).sum();
        for c in o.selected() {
            eprintln!("{c}: {:.0} s", estimate_secs(&o, c));
        }
        assert!(total < 30.0 * 60.0, "{total}");
        let q = Options::defaults(true);
        let quick: f64 = q.selected().iter().map(|c| estimate_secs(&q, c)).sum();
        assert!(quick < 90.0, "{quick}");
    }
}
