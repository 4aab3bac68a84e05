//! `cargo xtask bench`: runs bench/run.sh (the benchmark harness).

use anyhow::{bail, Context};
use std::path::Path;

/// Runs the benchmarks named in `args` (all by default).
pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let status = std::process::Command::new("bash")
        .arg(root.join("bench/run.sh"))
        .args(args)
        .status()
        .context("running bench/run.sh")?;
    if !status.success() {
        bail!("bench/run.sh failed: {status}");
    }
    Ok(())
}
