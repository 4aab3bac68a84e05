//! The man pages in man/ are current (equal to what `cargo xtask man`
//! renders from each tool's clap command), render with `man -l` without
//! warnings, and every tool binary answers --help and --version.
//!
//! The binaries are located with `zpipe_tests::bin`, which builds the
//! workspace's binaries once (a cross-crate test has no CARGO_BIN_EXE_*).

use std::collections::BTreeSet;
use std::process::Command;
use zpipe_tests::bins::workspace_root;
use zpipe_tests::{bin, require};

#[test]
fn man_pages_are_current() {
    let dir = workspace_root().join("man");
    let mut problems = Vec::new();
    for (name, cmd) in xtask::tools() {
        let want = xtask::render_man(cmd).unwrap();
        let have = std::fs::read(dir.join(format!("{name}.1"))).unwrap_or_default();
        if have != want {
            problems.push(format!("man/{name}.1 is stale: run cargo xtask man"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn man_dir_holds_exactly_the_tools() {
    let tools: BTreeSet<String> = xtask::tools()
        .into_iter()
        .map(|(name, _)| format!("{name}.1"))
        .collect();
    let pages: BTreeSet<String> = std::fs::read_dir(workspace_root().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    assert_eq!(pages, tools, "man/ has pages of no tool, or lacks some");
}

#[test]
fn man_pages_render_without_warnings() {
    require!(man);
    let dir = workspace_root().join("man");
    for (name, _) in xtask::tools() {
        let page = dir.join(format!("{name}.1"));
        let out = Command::new("man")
            .arg("--warnings")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80")
            .env("LANG", "C.UTF-8")
            .env_remove("LC_ALL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "man -l man/{name}.1 failed ({}): {stderr}",
            out.status
        );
        assert!(
            stderr.trim().is_empty(),
            "man -l man/{name}.1 warns: {stderr}"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.contains(name),
            "man -l man/{name}.1 rendered no NAME section: {text}"
        );
    }
}

#[test]
fn every_binary_answers_help_and_version() {
    for (name, _) in xtask::tools() {
        let exe = bin(name);
        let help = Command::new(&exe).arg("--help").output().unwrap();
        assert_eq!(help.status.code(), Some(0), "{name} --help");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("Usage:"), "{name} --help: {text}");

        let version = Command::new(&exe).arg("--version").output().unwrap();
        assert_eq!(version.status.code(), Some(0), "{name} --version");
        let text = String::from_utf8_lossy(&version.stdout);
        assert!(
            text.contains(name) && text.contains(env!("CARGO_PKG_VERSION")),
            "{name} --version: {text}"
        );
    }
}
