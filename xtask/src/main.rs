//! Project chores: `cargo xtask man`, `cargo xtask completions`,
//! `cargo xtask bench`, `cargo xtask fuzz`, `cargo xtask soak`.

mod bench;
mod fuzz;
mod soak;

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
        Some("bench") => bench::run(&root, &args[1..]),
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("soak") => soak::run(&root, &args[1..]),
        _ => bail!("usage: cargo xtask man|completions|bench|fuzz|soak [ARGS]"),
    }
}
