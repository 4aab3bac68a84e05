//! zpipe-compress: Parallel zstd compression and decompression that stays standard zstd.

use zpipe_core::Exit;

/// The command-line interface of `zpipe-compress`.
pub fn command() -> clap::Command {
    clap::Command::new("zpipe-compress")
        .about("Parallel zstd compression and decompression that stays standard zstd")
        .version(env!("CARGO_PKG_VERSION"))
}

/// Runs `zpipe-compress` with parsed arguments.
pub fn run(_matches: clap::ArgMatches) -> anyhow::Result<Exit> {
    Err(zpipe_core::exit::usage("not built yet"))
}
