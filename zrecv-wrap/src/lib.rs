//! zrecv-wrap: Runs zfs recv with in-process decoding and resume tokens.

pub mod token;

use zpipe_core::Exit;

/// The command-line interface of `zrecv-wrap`.
pub fn command() -> clap::Command {
    clap::Command::new("zrecv-wrap")
        .about("Runs zfs recv with in-process decoding and resume tokens")
        .version(env!("CARGO_PKG_VERSION"))
}

/// Runs `zrecv-wrap` with parsed arguments.
pub fn run(_matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    Err(zpipe_core::exit::usage("not built yet"))
}
