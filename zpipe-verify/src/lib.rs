//! zpipe-verify: End-to-end framing with SHA-256 per frame, and a strict ZFS send stream checker.

pub mod zfs;

use zpipe_core::Exit;

/// The command-line interface of `zpipe-verify`.
pub fn command() -> clap::Command {
    clap::Command::new("zpipe-verify")
        .about("End-to-end framing with SHA-256 per frame, and a strict ZFS send stream checker")
        .version(env!("CARGO_PKG_VERSION"))
}

/// Runs `zpipe-verify` with parsed arguments.
pub fn run(_matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    Err(zpipe_core::exit::usage("not built yet"))
}
