//! Project chores: `cargo xtask man`, `cargo xtask completions`, `cargo xtask bench`.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use xtask::{render_man, tools};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, cmd) in tools() {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, render_man(cmd)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn completions(dir: &Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    for (name, mut cmd) in tools() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let path = clap_complete::generate_to(shell, &mut cmd, name, dir)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("man") => man(&root.join("man")),
        Some("completions") => completions(&root.join("completions")),
        Some("bench") => {
            let status = std::process::Command::new("bash")
                .arg(root.join("bench/run.sh"))
                .args(&args[1..])
                .status()
                .context("running bench/run.sh")?;
            if !status.success() {
                bail!("bench/run.sh failed: {status}");
            }
            Ok(())
        }
        _ => bail!("usage: cargo xtask man|completions|bench [BENCH ARGS]"),
    }
}
