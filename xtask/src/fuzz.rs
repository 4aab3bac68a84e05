//! `cargo xtask fuzz` (being written: see issue 10).

use std::path::Path;

/// Runs `cargo xtask fuzz`.
pub fn run(_root: &Path, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask fuzz: not written yet")
}
