//! zsend-wrap: runs `zfs send` and composes the zpipe filters in-process.

pub mod remote;
pub mod zfs;

use zpipe_core::Exit;

/// The command-line interface of `zsend-wrap`.
pub fn command() -> clap::Command {
    clap::Command::new("zsend-wrap")
        .about("Runs zfs send and composes the zpipe filters in-process")
        .version(env!("CARGO_PKG_VERSION"))
}

/// Runs `zsend-wrap` with parsed arguments.
pub fn run(_matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    Err(zpipe_core::exit::usage("not built yet"))
}
