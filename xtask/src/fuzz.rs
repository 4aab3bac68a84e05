//! `cargo xtask fuzz [--seconds N] [--cmin] [--list] [TARGET...]`: runs every
//! cargo-fuzz target of the workspace in turn (or the named ones) and
//! reports, per target, the executions, the corpus size and any finding.
//!
//! The fuzz crates (`<crate>/fuzz/`) are their own workspaces, so CI never
//! builds them. cargo-fuzz needs nightly compiler flags (`-Z sanitizer`,
//! sancov passes); on a stable toolchain `RUSTC_BOOTSTRAP=1` unlocks them,
//! which this command sets unless the compiler is already nightly. Inputs
//! a target finds go to its committed corpus (`<crate>/fuzz/corpus/TARGET`);
//! `--cmin` minimizes each corpus afterwards (keep it small: it is checked
//! in). Crashes land in `<crate>/fuzz/artifacts/TARGET/` and make the
//! command fail; turn each into a regression test before committing.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Seconds each target runs when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 60;
/// Crates that have a `fuzz/` directory, in the order they are run.
pub const FUZZ_CRATES: [&str; 5] = [
    "zpipe-core",
    "zpipe-meter",
    "zpipe-verify",
    "zpipe-compress",
    "zsend-wrap",
];
/// Largest input libFuzzer generates (bytes); decoders see bigger inputs
/// through the committed seeds.
const MAX_LEN: u32 = 65536;
/// Per-input time limit (seconds) before libFuzzer calls it a hang.
const TIMEOUT_SECS: u32 = 10;
/// Memory limit per fuzzer process (MiB): an input that makes a decoder
/// allocate more is a finding ("unbounded allocation").
const RSS_LIMIT_MB: u32 = 2048;

/// Targets whose code under test runs detached threads (the pipeline's
/// parts signal "done" and then exit on their own): LeakSanitizer sees the
/// thread-local storage of a thread still exiting when an input ends and
/// reports a leak of ~100 bytes that is not one. Leak detection is off for
/// them; the RSS and malloc limits still catch unbounded allocation.
const DETACHED_THREAD_TARGETS: [&str; 1] = ["decompress"];

/// One fuzz target: its crate's fuzz directory and its name.
#[derive(Debug, Clone)]
struct Target {
    dir: PathBuf,
    name: String,
}

/// What one run of a target produced.
#[derive(Debug)]
struct Outcome {
    target: String,
    seconds: u64,
    execs: Option<u64>,
    corpus_files: usize,
    corpus_bytes: u64,
    finding: Option<String>,
}

/// The `[[bin]]` names of a fuzz crate's Cargo.toml.
fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if in_bin {
            if let Some(v) = line.strip_prefix("name") {
                let v = v.trim_start().trim_start_matches('=').trim();
                names.push(v.trim_matches('"').to_string());
            }
        }
    }
    names
}

fn all_targets(root: &Path) -> anyhow::Result<Vec<Target>> {
    let mut out = Vec::new();
    for krate in FUZZ_CRATES {
        let dir = root.join(krate).join("fuzz");
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        for name in bin_names(&text) {
            out.push(Target {
                dir: dir.clone(),
                name,
            });
        }
    }
    Ok(out)
}

/// True when `rustc` is a nightly (or dev) compiler.
fn nightly() -> bool {
    Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| {
            let v = String::from_utf8_lossy(&o.stdout);
            v.contains("nightly") || v.contains("-dev")
        })
        .unwrap_or(false)
}

fn dir_size(dir: &Path) -> (usize, u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    rd.flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

/// The number from libFuzzer's `stat::number_of_executed_units: N`.
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The seconds of libFuzzer's `Done N runs in S second(s)` (fuzzing only,
/// without the build).
fn fuzz_seconds(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.starts_with("Done "))?;
    let (_, rest) = line.split_once(" runs in ")?;
    rest.split_whitespace().next()?.parse().ok()
}

fn cargo_fuzz(t: &Target) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(&t.dir).arg("fuzz");
    if !nightly() {
        c.env("RUSTC_BOOTSTRAP", "1");
    }
    c
}

fn run_one(t: &Target, seconds: u64) -> anyhow::Result<Outcome> {
    let corpus = t.dir.join("corpus").join(&t.name);
    std::fs::create_dir_all(&corpus)?;
    let artifacts = t.dir.join("artifacts").join(&t.name);
    std::fs::create_dir_all(&artifacts)?;
    let before: Vec<_> = std::fs::read_dir(&artifacts)?.flatten().collect();
    eprintln!("== fuzz {} for {seconds} s ({})", t.name, t.dir.display());
    let start = Instant::now();
    let out = cargo_fuzz(t)
        .args(["run", &t.name])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        .args(
            DETACHED_THREAD_TARGETS
                .contains(&t.name.as_str())
                .then_some("-detect_leaks=0"),
        )
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .context("running cargo fuzz (install it with `cargo install cargo-fuzz`)")?;
    let log = String::from_utf8_lossy(&out.stderr);
    let new: Vec<String> = std::fs::read_dir(&artifacts)?
        .flatten()
        .filter(|e| !before.iter().any(|b| b.path() == e.path()))
        .map(|e| e.path().display().to_string())
        .collect();
    let finding = if !out.status.success() || !new.is_empty() {
        let why = log
            .lines()
            .find(|l| l.contains("ERROR: libFuzzer") || l.contains("panicked at"))
            .unwrap_or("the fuzzer failed")
            .trim()
            .to_string();
        // Keep the tail of the log next to the artifact for the report.
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!("{}", tail.join("\n"));
        Some(format!("{why} {}", new.join(" ")))
    } else {
        None
    };
    let (corpus_files, corpus_bytes) = dir_size(&corpus);
    Ok(Outcome {
        target: t.name.clone(),
        seconds: fuzz_seconds(&log).unwrap_or_else(|| start.elapsed().as_secs()),
        execs: executions(&log),
        corpus_files,
        corpus_bytes,
        finding,
    })
}

fn cmin(t: &Target) -> anyhow::Result<()> {
    let corpus = t.dir.join("corpus").join(&t.name);
    let status = cargo_fuzz(t)
        .args(["cmin", &t.name])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .stderr(Stdio::null())
        .status()
        .context("running cargo fuzz cmin")?;
    if !status.success() {
        bail!("cargo fuzz cmin {} failed: {status}", t.name);
    }
    Ok(())
}

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--cmin] [--list] [TARGET...]";

/// Runs `cargo xtask fuzz`.
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut minimize = false;
    let mut list = false;
    let mut wanted = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context(USAGE)?;
                seconds = v
                    .parse()
                    .with_context(|| format!("--seconds: '{v}' is not a number"))?;
            }
            "--cmin" => minimize = true,
            "--list" => list = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown option '{s}'\n{USAGE}"),
            s => wanted.push(s.to_string()),
        }
    }
    let mut targets = all_targets(root)?;
    if list {
        for t in &targets {
            println!("{}\t{}", t.name, t.dir.display());
        }
        return Ok(());
    }
    if !wanted.is_empty() {
        for w in &wanted {
            if !targets.iter().any(|t| &t.name == w) {
                bail!("no fuzz target '{w}' (see cargo xtask fuzz --list)");
            }
        }
        targets.retain(|t| wanted.contains(&t.name));
    }
    let mut outcomes = Vec::new();
    for t in &targets {
        let o = run_one(t, seconds)?;
        if minimize && o.finding.is_none() {
            cmin(t)?;
        }
        outcomes.push(o);
    }
    println!("target\tseconds\texecutions\tcorpus files\tcorpus bytes\tresult");
    for o in &outcomes {
        let (files, bytes) = if minimize {
            let t = targets.iter().find(|t| t.name == o.target);
            t.map(|t| dir_size(&t.dir.join("corpus").join(&t.name)))
                .unwrap_or((o.corpus_files, o.corpus_bytes))
        } else {
            (o.corpus_files, o.corpus_bytes)
        };
        println!(
            "{}\t{}\t{}\t{files}\t{bytes}\t{}",
            o.target,
            o.seconds,
            o.execs.map_or("?".to_string(), |n| n.to_string()),
            o.finding.as_deref().unwrap_or("ok")
        );
    }
    let found = outcomes.iter().filter(|o| o.finding.is_some()).count();
    if found > 0 {
        bail!("{found} target(s) found a failing input (see artifacts/ above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bin_names_from_a_fuzz_manifest() {
        let m = "[package]\nname = \"x-fuzz\"\n\n[[bin]]\nname = \"decode\"\npath = \"a.rs\"\n\n[[bin]]\nname=\"zfs_check\"\n[workspace]\nmembers = [\".\"]\n";
        assert_eq!(bin_names(m), ["decode", "zfs_check"]);
    }

    #[test]
    fn reads_executions_from_final_stats() {
        let log = "#1000 DONE cov: 1\nstat::number_of_executed_units: 123456\nstat::average_exec_per_sec: 9\n";
        assert_eq!(executions(log), Some(123456));
        assert_eq!(executions("nothing"), None);
        assert_eq!(
            fuzz_seconds("x\nDone 4091930 runs in 601 second(s)\n"),
            Some(601)
        );
    }
}
