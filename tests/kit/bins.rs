//! The workspace binaries as the tests see them: where cargo put them and
//! making sure they are built.
//!
//! `env!("CARGO_BIN_EXE_<tool>")` only exists for binaries of the test's own
//! package, and `cargo test` builds another package's binaries only when
//! that package has integration tests of its own. So the kit does not rely
//! on it: the first call to [`bin`] (or [`ensure_bins_built`]) in a process
//! runs `cargo build --workspace --bins` once, with the same cargo, target
//! directory and profile as the running test. That is a no-op when they are
//! current, and right after `cargo test --workspace` it only builds the
//! missing binaries: the whole workspace resolves to the same features, so
//! every library is reused (narrowing it, e.g. `--exclude xtask`, changes
//! the features and rebuilds them). It is safe while `cargo test` runs:
//! cargo holds the build lock only while compiling, not while the test
//! binaries run.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding the built binaries: the running test's
/// `target/<profile>/deps/..`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("test binary has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The workspace root (the directory holding the root Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Builds every binary of the workspace once per process (see the module
/// docs); later calls return the first result.
pub fn ensure_bins_built() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_bins().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_bins() -> anyhow::Result<()> {
    let dir = bin_dir();
    let profile_dir = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("binary directory has no name")?
        .to_string();
    let target_dir = dir.parent().context("binary directory has no parent")?;
    let profile = if profile_dir == "debug" {
        "dev".to_string()
    } else {
        profile_dir
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(&cargo)
        .args(["build", "--workspace", "--bins", "--quiet", "--profile"])
        .arg(&profile)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        bail!(
            "cargo build --workspace --bins --profile {profile} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The absolute path of workspace binary `name`, built if needed. Panics
/// when the build fails or the binary does not exist.
pub fn bin(name: &str) -> PathBuf {
    if let Err(e) = ensure_bins_built() {
        panic!("building the workspace binaries: {e:#}");
    }
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "no binary {} after cargo build",
        path.display()
    );
    path
}

/// `PATH` with `dirs` put first, for running pipelines that name the tools
/// (and any stand-in programs) without paths.
pub fn path_with(dirs: &[PathBuf]) -> OsString {
    let old = std::env::var_os("PATH").unwrap_or_default();
    let all = dirs.iter().cloned().chain(std::env::split_paths(&old));
    std::env::join_paths(all).expect("PATH entries without ':'")
}
