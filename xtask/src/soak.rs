//! `cargo xtask soak` (being written: see issue 10).

use std::path::Path;

/// Runs `cargo xtask soak`.
pub fn run(_root: &Path, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask soak: not written yet")
}
